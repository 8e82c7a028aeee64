"""The retry schedule, pushed for real to a loopback receiver, with the clock injected."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from ccpush.clock import ManualClock
from ccpush.models import DeliveryState, ErrorKind
from ccpush.service import Service
from tests.conftest import minimal_record
from tests.helpers import make_service, new_record
from tests.receiver import Receiver, always, fail_first


async def push_one(service: Service, receiver: Receiver, session_id: str = "s1") -> str:
    app = await service.store.create_app(name="a", push_url=receiver.url, now=service.clock.now())
    await service.store.ingest(
        app.id, [new_record(minimal_record(session_id))], now=service.clock.now()
    )
    return app.id


async def step_until(service: Service, clock: ManualClock, end: timedelta) -> list[timedelta]:
    """Move the clock minute by minute up to ``end``; the offsets at which attempts were made."""
    start, made = clock.now(), []
    while clock.now() - start <= end:
        if await service.dispatcher.run_until_idle():
            made.append(clock.now() - start)
        clock.advance(timedelta(minutes=1))
    return made


async def test_a_receiver_that_always_fails_gets_exactly_four_attempts(
    service: Service, receiver: Receiver, clock: ManualClock
) -> None:
    receiver.responder = always(500)
    app_id = await push_one(service, receiver)
    made = await step_until(service, clock, timedelta(hours=6))
    assert made == [timedelta(minutes=m) for m in (0, 30, 60, 90)]
    assert len(receiver.pushes) == 4
    [delivery] = await service.store.deliveries_of(app_id, "s1")
    assert delivery.state is DeliveryState.FAILED
    assert [a.number for a in delivery.attempt_log] == [1, 2, 3, 4]
    assert [a.status_code for a in delivery.attempt_log] == [500] * 4
    assert {a.error_kind for a in delivery.attempt_log} == {ErrorKind.HTTP_STATUS}


async def test_the_schedule_is_exact_to_the_second(
    service: Service, receiver: Receiver, clock: ManualClock
) -> None:
    receiver.responder = always(503)
    await push_one(service, receiver)
    start = clock.now()
    assert await service.dispatcher.run_until_idle() == 1
    for minutes in (30, 60, 90):
        clock.set(start + timedelta(minutes=minutes) - timedelta(seconds=1))
        assert await service.dispatcher.run_until_idle() == 0
        clock.set(start + timedelta(minutes=minutes))
        assert await service.dispatcher.run_until_idle() == 1
    clock.set(start + timedelta(days=30))
    assert await service.dispatcher.run_until_idle() == 0


async def test_fails_twice_then_delivered_in_three_attempts(
    service: Service, receiver: Receiver, clock: ManualClock
) -> None:
    receiver.responder = fail_first(2)
    app_id = await push_one(service, receiver)
    made = await step_until(service, clock, timedelta(hours=6))
    assert made == [timedelta(minutes=0), timedelta(minutes=30), timedelta(minutes=60)]
    [delivery] = await service.store.deliveries_of(app_id, "s1")
    assert delivery.state is DeliveryState.DELIVERED
    assert [a.status_code for a in delivery.attempt_log] == [503, 503, 200]
    assert [p.headers["ccpush-attempt"] for p in receiver.pushes] == ["1", "2", "3"]
    assert len({p.headers["webhook-id"] for p in receiver.pushes}) == 1


async def test_a_custom_schedule_is_followed(
    tmp_path: Path, db_url: str, clock: ManualClock, receiver: Receiver
) -> None:
    receiver.responder = always(500)
    service = make_service(tmp_path, db_url, clock, retry_schedule="1m,5m")
    await service.start(dispatch=False)
    try:
        await push_one(service, receiver)
        made = await step_until(service, clock, timedelta(hours=1))
    finally:
        await service.stop()
    assert made == [timedelta(minutes=0), timedelta(minutes=1), timedelta(minutes=6)]
