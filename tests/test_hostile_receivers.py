"""Receivers that answer with NUL and other control bytes (in the body, the reason phrase,
the headers) are one more failing receiver: their answers are stored as harmless text, and
the other tenants' records go on being delivered, once each, the service ready throughout.

And should the store refuse an outcome all the same, that outcome alone is written
without the receiver's answer: it holds back no other."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import unicodedata
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from ccpush.answers import UNSTORABLE_ANSWER
from ccpush.errors import StoreRefusedValue
from ccpush.models import Completion, DeliveryState, ErrorKind, Outcome
from ccpush.service import Service
from ccpush.store import Store
from tests.api_client import Api
from tests.conftest import minimal_record
from tests.helpers import eventually, make_service, new_record
from tests.raw_receiver import RawReceiver, Then, head
from tests.receiver import Receiver

HOSTILE_BODY = b"a\x00b\x01\x7f\xff\x1b[2J\tc\r\n"
HOSTILE_EXCERPT = "a\\x00b\\x01\\x7f\ufffd\\x1b[2J\tc\r\n"

# What each hostile receiver answers, how, and what its attempts are: status, error kind.
HOSTILE: dict[str, tuple[bytes, Then, int | None, ErrorKind | None]] = {
    "body-2xx": (head(b"HTTP/1.1 200 OK", body=HOSTILE_BODY), "keep", 200, None),
    "body-5xx": (
        head(b"HTTP/1.1 500 \xff\xfe", body=HOSTILE_BODY),
        "keep",
        500,
        ErrorKind.HTTP_STATUS,
    ),
    "reason": (head(b"HTTP/1.1 500 A\x00B"), "close", None, ErrorKind.PROTOCOL),
    "location-nul": (
        head(b"HTTP/1.1 302 Found", b"Location: /a\x00b"),
        "close",
        None,
        ErrorKind.PROTOCOL,
    ),
    "location-bytes": (
        head(b"HTTP/1.1 302 Found", b"Location: /caf\xc3\xa9\xff\xfe"),
        "keep",
        302,
        ErrorKind.HTTP_STATUS,
    ),
    "header": (head(b"HTTP/1.1 200 OK", b"X-Note: \x1b[2J"), "close", None, ErrorKind.PROTOCOL),
}
HOSTILE_RECORDS = 5
TENANTS = 4
TENANT_RECORDS = 250


@pytest.fixture(params=["aiohttp", "reqwest"])
async def running(
    tmp_path: Path, db_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[Service]:
    """A running service pushing with aiohttp or reqwest."""
    service = make_service(
        tmp_path,
        db_url,
        retry_schedule="200ms,200ms",
        concurrency=32,
        batch_size=50,
        http_client=request.param,
    )
    await service.start()
    yield service
    await service.stop()


async def test_hostile_answers_hold_back_no_other_tenant(
    running: Service, receiver: Receiver
) -> None:
    service, store = running, running.store
    hostile = {
        name: await RawReceiver(answer, then).start()
        for name, (answer, then, *_) in HOSTILE.items()
    }
    done = asyncio.Event()
    watching = asyncio.create_task(watch_readiness(service, done))
    try:
        hostile_apps = {
            name: await ingest(service, raw.url, name, HOSTILE_RECORDS)
            for name, raw in hostile.items()
        }
        tenants = [
            await ingest(service, receiver.url, f"tenant{n}-", TENANT_RECORDS)
            for n in range(TENANTS)
        ]
        await receiver.wait_for(lambda r: len(r.pushes) >= TENANTS * TENANT_RECORDS, timeout=60)
        await eventually(lambda: nothing_waiting(store), timeout=30)
    finally:
        done.set()
        readiness = await watching
        for raw in hostile.values():
            await raw.stop()
    assert len(readiness) > 10
    assert [(status, text) for status, text in readiness if status != 200] == []
    assert len(receiver.pushes) == TENANTS * TENANT_RECORDS  # each record once
    assert receiver.sessions() == {
        f"tenant{n}-{i}" for n in range(TENANTS) for i in range(TENANT_RECORDS)
    }
    for app_id in tenants:
        assert (await store.count_by_state(app_id))[DeliveryState.DELIVERED] == TENANT_RECORDS
    for name, app_id in hostile_apps.items():
        await check_hostile_attempts(store, name, app_id)
    assert b"ccpush_unstorable_answers_total 0.0" in await service.metrics.render(
        store, service.clock
    )


async def watch_readiness(service: Service, done: asyncio.Event) -> list[tuple[int, str]]:
    """``/readyz``'s answers, asked again and again until ``done``."""
    answers = []
    async with Api(service).client() as client:
        while not done.is_set():
            answer = await client.get("/readyz")
            answers.append((answer.status_code, answer.text))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.02)
    return answers


async def ingest(service: Service, push_url: str, prefix: str, count: int) -> str:
    store, now = service.store, service.clock.now()
    app = await store.create_app(name=prefix, push_url=push_url, now=now)
    records = [new_record(minimal_record(f"{prefix}{i}")) for i in range(count)]
    await store.ingest(app.id, records, now=now)
    service.dispatcher.wake()
    return app.id


async def nothing_waiting(store: Store) -> bool:
    """Every delivery delivered or failed: none pending a retry, none left sending."""
    states = await store.count_by_state()
    return states[DeliveryState.PENDING] == states[DeliveryState.SENDING] == 0


def _as_judged(found: ErrorKind | None, expected: ErrorKind | None) -> ErrorKind | None:
    """The kind of a failed attempt, as the table expects it. A receiver that answers a bad
    head and closes can race aiohttp's writing of the body, which then reports the closed
    connection (``connect``) before the bad head (``protocol``): both are the receiver's
    fault and both fail the attempt."""
    if expected is ErrorKind.PROTOCOL and found is ErrorKind.CONNECT:
        return expected
    return found


async def check_hostile_attempts(store: Store, name: str, app_id: str) -> None:
    _, _, status, kind = HOSTILE[name]
    for i in range(HOSTILE_RECORDS):
        [delivery] = await store.deliveries_of(app_id, f"{name}{i}")
        assert delivery.state is (DeliveryState.FAILED if kind else DeliveryState.DELIVERED)
        assert len(delivery.attempt_log) == (3 if kind else 1)  # all tries, none lost
        for attempt in delivery.attempt_log:
            assert (attempt.status_code, _as_judged(attempt.error_kind, kind)) == (status, kind)
            assert storable(attempt.error or "", keeps=""), attempt.error
            assert storable(attempt.response_excerpt or "", keeps="\t\r\n")
            if status is not None:  # the answer's head was read: its body is excerpted
                assert attempt.response_excerpt == (HOSTILE_EXCERPT if "body" in name else None)


def storable(text: str, keeps: str) -> bool:
    """No control character but those ``keeps``, no lone surrogate."""
    text.encode("utf-8")  # raises on a lone surrogate
    return all(unicodedata.category(char) != "Cc" or char in keeps for char in text)


# The store refuses what it cannot hold; the dispatcher writes everything else.


async def claim_one(store: Store, now: datetime) -> Completion:
    app = await store.create_app(name="a", push_url="http://127.0.0.1:9/cdr", now=now)
    await store.ingest(app.id, [new_record(minimal_record("s1"))], now=now)
    [claimed] = await store.claim_due(
        now=now, limit=1, lease_until=now + timedelta(seconds=60), owner="w"
    )
    outcome = Outcome(now, 1.0, 500, ErrorKind.HTTP_STATUS, "HTTP 500 A\x00B", "a\x00b")
    return Completion(claimed, outcome, DeliveryState.PENDING, now + timedelta(minutes=30))


async def test_a_nul_in_an_outcome_is_refused_by_postgresql_and_cut_at_by_sqlite(
    store: Store, backend: str
) -> None:
    """Why the senders escape NUL: PostgreSQL refuses the text (which the writer can tell
    from an outage), SQLite keeps it but gives back only what comes before the NUL."""
    now = datetime.fromisoformat("2026-03-01T08:00:00+00:00")
    done = await claim_one(store, now)
    if backend == "postgres":
        with pytest.raises(StoreRefusedValue):
            await store.complete([done], owner="w")
        assert (await store.count_by_state())[DeliveryState.SENDING] == 1  # nothing written
        return
    await store.complete([done], owner="w")
    [delivery] = await store.deliveries_of(done.claimed.app_id, "s1")
    [attempt] = delivery.attempt_log
    assert (attempt.error, attempt.response_excerpt) == ("HTTP 500 A", "a")


def refusing(*positions: int) -> Callable[[int], bool]:
    return lambda n: n in positions


@pytest.mark.parametrize("backend", ["postgres"])  # SQLite holds a NUL
@pytest.mark.parametrize(
    "refused",
    [refusing(5), refusing(0, 7), refusing(*range(8))],
    ids=["one", "first-and-last", "all"],
)
async def test_an_outcome_the_store_refuses_holds_back_no_other(
    service: Service, refused: Callable[[int], bool], caplog: pytest.LogCaptureFixture
) -> None:
    """Outcomes made here with a NUL, as no sender makes them: the writer writes each
    refused one alone, without the receiver's answer, and every other as it is."""
    store, dispatcher, now = service.store, service.dispatcher, service.clock.now()
    app = await store.create_app(name="a", push_url="http://127.0.0.1:9/cdr", now=now)
    await store.ingest(app.id, [new_record(minimal_record(f"s{n}")) for n in range(8)], now=now)
    claimed = await store.claim_due(
        now=now, limit=8, lease_until=now + timedelta(seconds=60), owner=dispatcher.owner
    )
    by_session = {item.call_session_id: item for item in claimed}
    for n in range(8):
        excerpt = "a\x00b" if refused(n) else "ok"
        outcome = Outcome(now, 1.0, 200, None, None, excerpt)
        dispatcher._done.append(dispatcher.decide(by_session[f"s{n}"], outcome))
    with caplog.at_level(logging.ERROR, logger="ccpush.dispatcher"):
        assert await dispatcher._write_pending()
    assert not dispatcher.store_failing
    assert dispatcher._done == []
    assert (await store.count_by_state(app.id))[DeliveryState.DELIVERED] == 8
    logged = set()
    for n in range(8):
        [delivery] = await store.deliveries_of(app.id, f"s{n}")
        [attempt] = delivery.attempt_log
        if refused(n):
            assert (attempt.error, attempt.response_excerpt) == (UNSTORABLE_ANSWER, None)
            logged.add((app.id, delivery.id))
        else:
            assert (attempt.error, attempt.response_excerpt) == (None, "ok")
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert {(record.app_id, record.delivery_id) for record in errors} == logged
    count = len(logged)
    metrics = await service.metrics.render(store, service.clock)
    assert f"ccpush_unstorable_answers_total {count}.0".encode() in metrics
