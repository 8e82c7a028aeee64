"""Retention and automatic pausing, with the clock injected, on every backend."""

from __future__ import annotations

from datetime import timedelta

from ccpush.clock import ManualClock
from ccpush.models import DeliveryState
from ccpush.service import Service
from ccpush.upkeep import Upkeep, UpkeepSettings, resume
from tests.conftest import minimal_record
from tests.helpers import new_record
from tests.receiver import Receiver, always


async def ingest(service: Service, app_id: str, *sids: str) -> None:
    records = [new_record(minimal_record(sid)) for sid in sids]
    await service.store.ingest(app_id, records, now=service.clock.now())


async def live_through(service: Service, clock: ManualClock, hours: range, app_id: str) -> None:
    """Hour by hour: a call arrives (``h<hour>``) and whatever is due is pushed."""
    for hour in hours:
        await ingest(service, app_id, f"h{hour}")
        await service.dispatcher.run_until_idle()
        clock.advance(timedelta(hours=1))


async def test_an_app_failing_for_three_days_is_paused_and_resumes_with_a_replay(
    service: Service, clock: ManualClock, receiver: Receiver
) -> None:
    receiver.responder = always(503)
    app = await service.store.create_app(name="down", push_url=receiver.url, now=clock.now())
    upkeep = Upkeep(service.store, clock, UpkeepSettings())
    started = clock.now()
    await live_through(service, clock, range(71), app.id)
    assert (await upkeep.run_once()).paused == []  # 71 hours: not yet three days
    await live_through(service, clock, range(71, 73), app.id)
    report = await upkeep.run_once()
    assert report.paused == [app.id]
    paused = await service.store.get_app(app.id)
    assert paused.paused
    assert paused.failing_since == started
    assert paused.paused_reason is not None
    assert "failed since" in paused.paused_reason
    await ingest(service, app.id, "while-paused")
    assert await service.dispatcher.run_until_idle() == 0

    receiver.responder = always(200)
    resumed, job = await resume(service.store, clock, app.id, None)
    assert (resumed.paused, resumed.paused_reason, resumed.failing_since) == (False, None, None)
    assert job is not None
    assert job.total > 0
    await service.replays.run_until_idle()
    await service.dispatcher.run_until_idle()
    counts = await service.store.count_by_state(app.id)
    assert counts[DeliveryState.PENDING] == counts[DeliveryState.HELD] == 0
    answered = {p.session_id for p in receiver.pushes[-74:]}
    assert answered == {f"h{h}" for h in range(73)} | {"while-paused"}


async def test_one_success_restarts_the_streak(
    service: Service, clock: ManualClock, receiver: Receiver
) -> None:
    receiver.responder = always(500)
    app = await service.store.create_app(name="flaky", push_url=receiver.url, now=clock.now())
    await live_through(service, clock, range(40), app.id)
    receiver.responder = always(200)
    await live_through(service, clock, range(40, 41), app.id)
    assert (await service.store.get_app(app.id)).failing_since is None
    receiver.responder = always(500)
    await live_through(service, clock, range(41, 81), app.id)
    upkeep = Upkeep(service.store, clock, UpkeepSettings())
    assert (await upkeep.run_once()).paused == []


async def test_a_new_address_forgets_the_streak(
    service: Service, clock: ManualClock, receiver: Receiver
) -> None:
    receiver.responder = always(500)
    app = await service.store.create_app(name="moved", push_url=receiver.url, now=clock.now())
    await live_through(service, clock, range(2), app.id)
    assert (await service.store.get_app(app.id)).failing_since is not None
    changed = await service.store.update_app(
        app.id, now=clock.now(), push_url=receiver.url + "?v=2"
    )
    assert changed.failing_since is None


async def test_retention_purges_old_finished_records_in_batches(
    service: Service, clock: ManualClock, receiver: Receiver
) -> None:
    app = await service.store.create_app(name="old", push_url=receiver.url, now=clock.now())
    await ingest(service, app.id, *(f"old{i}" for i in range(7)))
    await service.dispatcher.run_until_idle()
    held = await service.store.create_app(name="held", push_url=None, now=clock.now())
    await ingest(service, held.id, "never-pushed")
    clock.advance(timedelta(days=31))
    await ingest(service, app.id, "recent")
    upkeep = Upkeep(
        service.store, clock, UpkeepSettings(retention=timedelta(days=30), purge_batch=3)
    )
    report = await upkeep.run_once()
    assert report.purged == 7
    assert await service.store.deliveries_of(app.id, "old0") == []
    assert await service.store.deliveries_of(app.id, "recent") != []
    assert await service.store.deliveries_of(held.id, "never-pushed") != []
    assert (await upkeep.run_once()).purged == 0
