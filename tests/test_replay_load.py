"""A replay of 10,000 records, followed through the API while it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ccpush.models import DeliveryState
from tests.api_client import Api, ok
from tests.conftest import minimal_record
from tests.helpers import eventually, make_service, new_record
from tests.receiver import Receiver

pytestmark = pytest.mark.slow
COUNT = 10_000


async def test_a_replay_of_ten_thousand_records(
    tmp_path: Path, db_url: str, receiver: Receiver
) -> None:
    service = make_service(tmp_path, db_url, concurrency=64, batch_size=256)
    await service.start()
    try:
        now = service.clock.now()
        app = await service.store.create_app(name="big", push_url=receiver.url, now=now)
        for start in range(0, COUNT, 1000):
            records = [new_record(minimal_record(f"r{i}")) for i in range(start, start + 1000)]
            await service.store.ingest(app.id, records, now=now)
        service.dispatcher.wake()
        await receiver.wait_for(lambda r: len(r.pushes) == COUNT, timeout=120)
        await eventually(lambda: _all_delivered(service, COUNT), timeout=30)

        async with Api(service).client() as admin:
            ask = {"from": "2023-11-17 00:00:00", "to": "2023-11-18 00:00:00"}
            job = await ok(await admin.post(f"/v1/apps/{app.id}/replays", json=ask), 202)
            assert job["total"] == COUNT
            seen: list[dict[str, Any]] = []

            async def finished() -> bool:
                url = f"/v1/apps/{app.id}/replays/{job['id']}"
                seen.append(await ok(await admin.get(url)))
                last = seen[-1]
                return bool(last["state"] == "done" and last["deliveries"]["delivered"] == COUNT)

            await eventually(finished, timeout=180)
    finally:
        await service.stop()
    assert len(receiver.pushes) == 2 * COUNT
    assert set(receiver.seen.values()) == {2}
    in_between = [s for s in seen if 0 < s["deliveries"]["delivered"] < COUNT]
    assert in_between, "progress was never seen part-way"
    delivered = [s["deliveries"]["delivered"] for s in seen]
    assert delivered == sorted(delivered)


async def _all_delivered(service: Any, count: int) -> bool:
    return bool((await service.store.count_by_state())[DeliveryState.DELIVERED] == count)
