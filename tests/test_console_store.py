"""What the console asks of the store, on every backend: the apps' activity over a window
(records delivered and failed, attempts, what waits now) and the console sessions signed
out, which upkeep forgets once no cookie could name them."""

from __future__ import annotations

from datetime import timedelta

from ccpush.clock import ManualClock
from ccpush.service import Service
from ccpush.store.base import AppActivity
from ccpush.upkeep import CONSOLE_SESSION_LIFE, Upkeep, UpkeepSettings
from tests.conftest import minimal_record
from tests.helpers import new_record
from tests.receiver import Receiver, always


async def ingest(service: Service, app_id: str, *session_ids: str) -> None:
    records = [new_record(minimal_record(sid)) for sid in session_ids]
    await service.store.ingest(app_id, records, now=service.clock.now())


async def test_activity_counts_records_by_outcome_and_attempts_apart(
    service: Service, clock: ManualClock, receiver: Receiver
) -> None:
    store = service.store
    acme = await store.create_account(name="Acme", now=clock.now())
    globex = await store.create_account(name="Globex", now=clock.now())
    pushing = await store.create_app(
        name="pushing", push_url=receiver.url, now=clock.now(), account_id=acme.id
    )
    held = await store.create_app(name="held", push_url=None, now=clock.now(), account_id=acme.id)
    other = await store.create_app(
        name="other", push_url=receiver.url, now=clock.now(), account_id=globex.id
    )
    await ingest(service, pushing.id, "old")
    await service.dispatcher.run_until_idle()
    clock.advance(timedelta(days=2))
    start = clock.now()

    receiver.responder = lambda push, seen: always(
        200 if push.session_id == "ok" or seen >= 1 else 503
    )(push, seen)
    await ingest(service, pushing.id, "ok", "retried", "lost")
    await service.dispatcher.run_until_idle()  # ok delivered; retried and lost refused once
    clock.advance(timedelta(minutes=30))
    receiver.responder = lambda push, seen: always(503 if push.session_id == "lost" else 200)(
        push, seen
    )
    for _ in range(3):
        await service.dispatcher.run_until_idle()
        clock.advance(timedelta(minutes=30))
    kept_at = clock.now()
    await ingest(service, held.id, "kept1", "kept2")
    receiver.responder = always(503)
    again_at = clock.now()
    await ingest(service, other.id, "again")
    await service.dispatcher.run_until_idle()  # refused: pending, due again in 30 minutes
    await ingest(service, other.id, "due")
    due_at = clock.now()
    clock.advance(timedelta(minutes=5))

    activity = await store.app_activity(since=start, account_id=acme.id)
    assert set(activity) == {pushing.id, held.id}
    assert activity[pushing.id] == AppActivity(app_id=pushing.id, delivered=2, failed=1, retried=4)
    assert activity[pushing.id].attempts == 7
    assert activity[held.id] == AppActivity(app_id=held.id, held=2, oldest_waiting=kept_at)
    everyone = await store.app_activity(since=start)
    assert everyone[other.id] == AppActivity(
        app_id=other.id, retried=1, pending=2, oldest_due=due_at, oldest_waiting=again_at
    )
    assert everyone[other.id].lag(clock.now()) == timedelta(minutes=5)
    before = await store.app_activity(since=start - timedelta(days=3), account_id=acme.id)
    assert before[pushing.id].delivered == 3  # the record pushed two days earlier too
    assert await store.app_activity(since=clock.now(), account_id=globex.id) == {
        other.id: AppActivity(
            app_id=other.id, pending=2, oldest_due=due_at, oldest_waiting=again_at
        )
    }


async def test_a_session_signed_out_stays_ended_until_upkeep_forgets_it(
    service: Service, clock: ManualClock
) -> None:
    store = service.store
    assert not await store.console_session_ended("sid-1")
    await store.end_console_session("sid-1", now=clock.now())
    await store.end_console_session("sid-1", now=clock.now())  # twice: no harm
    clock.advance(timedelta(hours=1))
    await store.end_console_session("sid-2", now=clock.now())
    assert await store.console_session_ended("sid-1")
    assert not await store.console_session_ended("sid-3")

    upkeep = Upkeep(store, clock, UpkeepSettings(auto_pause_after=None))
    clock.advance(CONSOLE_SESSION_LIFE - timedelta(hours=1))  # sid-1's life exactly
    assert (await upkeep.run_once()).console_sessions == 0
    clock.advance(timedelta(seconds=1))
    assert (await upkeep.run_once()).console_sessions == 1
    assert not await store.console_session_ended("sid-1")
    assert await store.console_session_ended("sid-2")
