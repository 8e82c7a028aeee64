"""Stopping does not wait for hanging hosts: after the grace period, the pushes still in
flight are abandoned and their deliveries given back at once, for another worker to push
(a repeat at most, never a loss)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

from ccpush.dispatcher import Dispatcher, DispatchSettings
from ccpush.models import DeliveryState
from tests.conftest import minimal_record
from tests.helpers import make_service, new_record
from tests.receiver import Receiver, Reply

GRACE = 0.5


async def test_stopping_gives_back_the_pushes_a_hanging_host_holds(
    tmp_path: Path, db_url: str, receiver: Receiver
) -> None:
    service = make_service(tmp_path, db_url, push_timeout=30.0, lease=timedelta(seconds=60))
    settings = DispatchSettings(
        schedule=service.settings.retry_schedule,
        lease=timedelta(seconds=60),
        concurrency=8,
        batch_size=20,
        shutdown_grace=GRACE,
    )
    dispatcher = Dispatcher(service.store, service.sender, service.clock, settings)
    hanging = await Receiver(lambda push, seen: Reply(delay=60)).start()
    store, now = service.store, service.clock.now()
    await store.open()
    await service.sender.start()
    try:
        stuck = await store.create_app(name="stuck", push_url=hanging.url, now=now)
        healthy = await store.create_app(name="healthy", push_url=receiver.url, now=now)
        await store.ingest(
            stuck.id, [new_record(minimal_record(f"s{n}")) for n in range(10)], now=now
        )
        await store.ingest(healthy.id, [new_record(minimal_record("h0"))], now=now)
        stop = asyncio.Event()
        running = asyncio.create_task(dispatcher.run(stop))
        await hanging.wait_for(lambda r: len(r.pushes) == 4)  # a new host's first limit
        await receiver.wait_for(lambda r: len(r.pushes) == 1)
        began = time.perf_counter()
        stop.set()
        await asyncio.wait_for(running, timeout=10)
        took = time.perf_counter() - began
        assert GRACE <= took < GRACE + 1.5  # not the push timeout's 30 s
        counts = await store.count_by_state(stuck.id)
        assert (counts[DeliveryState.SENDING], counts[DeliveryState.PENDING]) == (0, 10)
        assert (await store.count_by_state(healthy.id))[DeliveryState.DELIVERED] == 1
        later = service.clock.now()
        again = await store.claim_due(
            now=later, limit=100, lease_until=later + timedelta(seconds=60), owner="next"
        )
        # Given back as they were: due now, their first attempt still to be made.
        assert sorted(item.call_session_id for item in again) == sorted(f"s{n}" for n in range(10))
        assert {item.attempt for item in again} == {1}
    finally:
        await hanging.stop()
        await service.sender.close()
        await store.close()
