"""A receiver's ``Retry-After`` on a 429 or 503: read by both HTTP clients (and carried back
from push processes), it holds the host's other pushes and delays the record's retry within
the schedule (never past ``RETRY_AFTER_CAP``, never adding an attempt)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from ccpush.clock import ManualClock
from ccpush.dispatcher import host_of
from ccpush.models import DeliveryState
from ccpush.pacing import RETRY_AFTER_CAP
from ccpush.senders import SENDERS, ProcessSender, Pushes, SenderLimits
from ccpush.service import Service
from ccpush.store.base import DeliveryFilter
from tests.fakedns import FakeDNS
from tests.helpers import eventually, make_service
from tests.receiver import Receiver, Reply
from tests.test_fairness import add_app
from tests.test_sender import BODY, LOOPBACK


@pytest.fixture(
    params=[
        ("in-process", "aiohttp"),
        ("in-process", "reqwest"),
        ("push-process", "aiohttp"),
        ("push-process", "reqwest"),
    ],
    ids="-".join,
)
async def sender(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[Pushes]:
    limits = SenderLimits(timeout=2.0, connect_timeout=1.0, per_host=4)
    where, client = request.param
    made: Pushes
    if where == "in-process":
        made = SENDERS[client](clock, limits, policy=LOOPBACK, resolver=FakeDNS({}))
    else:
        made = ProcessSender(clock, limits, policy=LOOPBACK, processes=1, sender=SENDERS[client])
    await made.start()
    yield made
    await made.close()


@pytest.mark.parametrize(
    ("status", "header", "seconds"),
    [
        (429, "120", 120.0),
        (503, "7", 7.0),
        (429, "86400", RETRY_AFTER_CAP),  # capped
        (429, None, None),
        (429, "soon", None),  # unreadable
        (500, "120", None),  # only 429 and 503 ask to back off
        (200, "120", None),
    ],
)
async def test_both_clients_read_retry_after(
    sender: Pushes, receiver: Receiver, status: int, header: str | None, seconds: float | None
) -> None:
    headers = {} if header is None else {"Retry-After": header}
    receiver.responder = lambda push, seen: Reply(status=status, headers=headers)
    outcome = await sender.send(receiver.url, BODY, {})
    assert outcome.status_code == status
    assert outcome.retry_after == seconds


@pytest.mark.parametrize("client", ["aiohttp", "reqwest"])
async def test_an_http_date_is_read_on_the_injected_clock(
    clock: ManualClock, receiver: Receiver, client: str
) -> None:
    when = format_datetime(clock.now() + timedelta(seconds=90), usegmt=True)
    receiver.responder = lambda push, seen: Reply(status=503, headers={"Retry-After": when})
    async with SENDERS[client](clock, SenderLimits(), policy=LOOPBACK) as sender:
        outcome = await sender.send(receiver.url, BODY, {})
    assert outcome.retry_after == 90.0


async def _one_attempt(service: Service, receiver: Receiver) -> tuple[str, float]:
    """Push one record to ``receiver`` once: its app, and the seconds from the attempt to
    the retry it scheduled."""
    app_id = await add_app(service, receiver.url, "r", 1)
    assert await service.dispatcher.run_until_idle() == 1
    [delivery] = await service.store.list_deliveries(app_id, DeliveryFilter())
    assert delivery.state is DeliveryState.PENDING
    assert delivery.next_attempt_at is not None
    return app_id, (delivery.next_attempt_at - service.clock.now()).total_seconds()


@pytest.mark.parametrize("client", ["aiohttp", "reqwest"])
async def test_a_retry_waits_for_retry_after_beyond_a_short_schedule(
    tmp_path: Path, db_url: str, clock: ManualClock, client: str
) -> None:
    receiver = await Receiver(lambda p, s: Reply(429, headers={"Retry-After": "120"})).start()
    service = make_service(tmp_path, db_url, clock, retry_schedule="10s,10s", http_client=client)
    await service.start(dispatch=False)
    try:
        _, wait = await _one_attempt(service, receiver)
        assert wait == 120.0
    finally:
        await service.stop()
        await receiver.stop()


async def test_retry_after_never_brings_the_contracts_schedule_forward(
    service: Service, receiver: Receiver
) -> None:
    receiver.responder = lambda push, seen: Reply(503, headers={"Retry-After": "5"})
    _, wait = await _one_attempt(service, receiver)
    assert wait == 30 * 60


async def test_retry_after_holds_the_hosts_other_pushes(
    tmp_path: Path, db_url: str, clock: ManualClock, receiver: Receiver
) -> None:
    receiver.responder = lambda push, seen: Reply(429, headers={"Retry-After": "120"})
    service = make_service(tmp_path, db_url, clock, concurrency=1)
    await service.start()
    try:
        app_id = await add_app(service, receiver.url, "held", 3)
        # The first answer holds the host: the app's next record waits here, not pushed...
        await eventually(lambda: service.dispatcher.held_back == {app_id})
        assert len(receiver.pushes) == 1
        host = host_of(receiver.url)
        assert service.dispatcher.host_limits.held_until(host, time.monotonic()) is not None
        # ...and the hold is what /metrics counts.
        text = (await service.metrics.render(service.store, clock)).decode()
        assert 'ccpush_hosts_held{reason="back_off"} 1.0' in text
    finally:
        await service.stop()
