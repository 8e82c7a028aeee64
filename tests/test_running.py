"""The dispatcher's own loop, running as in ``ccpush serve``, against real receivers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from ccpush.models import Claimed, Completion, DeliveryState
from ccpush.service import Service
from tests.conftest import minimal_record
from tests.helpers import eventually, make_service, new_record
from tests.receiver import Receiver, Reply, fail_first


@pytest.fixture(
    params=[(0, "aiohttp"), (0, "reqwest"), (1, "aiohttp")],
    ids=["in-process", "in-process-reqwest", "push-process"],
)
async def service(
    tmp_path: Path, db_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[Service]:
    """A running service; its pushes made in its own process (by aiohttp or reqwest) or in
    a push process."""
    processes, client = request.param
    service = make_service(
        tmp_path,
        db_url,
        retry_schedule="300ms,300ms,300ms",
        concurrency=32,
        batch_size=50,
        push_processes=processes,
        http_client=client,
    )
    await service.start()
    yield service
    await service.stop()


async def ingest(service: Service, push_url: str, count: int, prefix: str = "s") -> str:
    store, now = service.store, service.clock.now()
    app = await store.create_app(name=prefix, push_url=push_url, now=now)
    records = [new_record(minimal_record(f"{prefix}{i}")) for i in range(count)]
    await store.ingest(app.id, records, now=now)
    service.dispatcher.wake()
    return app.id


async def all_in(service: Service, state: DeliveryState, count: int) -> bool:
    return (await service.store.count_by_state())[state] == count


async def test_every_record_is_pushed_once(service: Service, receiver: Receiver) -> None:
    await ingest(service, receiver.url, 1000)
    await receiver.wait_for(lambda r: len(r.pushes) >= 1000, timeout=30)
    await eventually(lambda: all_in(service, DeliveryState.DELIVERED, 1000), timeout=10)
    assert len(receiver.pushes) == 1000
    assert receiver.sessions() == {f"s{i}" for i in range(1000)}


async def test_retries_run_on_schedule_in_the_loop(service: Service, receiver: Receiver) -> None:
    receiver.responder = fail_first(2, status=500)  # a 503 would also hold the host
    await ingest(service, receiver.url, 20)
    await eventually(lambda: all_in(service, DeliveryState.DELIVERED, 20), timeout=15)
    assert len(receiver.pushes) == 60
    assert set(receiver.seen.values()) == {3}


async def test_a_slow_app_does_not_hold_up_the_others(service: Service, receiver: Receiver) -> None:
    slow = await Receiver(lambda push, seen: Reply(delay=60)).start()
    try:
        await ingest(service, slow.url, 10, prefix="slow")
        await slow.wait_for(lambda r: len(r.pushes) == 4)  # a new host's first limit
        await ingest(service, receiver.url, 200, prefix="fast")
        await receiver.wait_for(lambda r: len(r.pushes) == 200, timeout=10)
    finally:
        await slow.stop()


async def test_a_running_worker_picks_up_records_as_they_arrive(
    service: Service, receiver: Receiver
) -> None:
    for batch in range(5):
        await ingest(service, receiver.url, 10, prefix=f"b{batch}-")
        await receiver.wait_for(lambda r, n=batch: len(r.pushes) == 10 * (n + 1))


async def test_claims_and_outcomes_reach_the_store_in_batches(
    service: Service, receiver: Receiver
) -> None:
    store = service.store
    claimed: list[int] = []
    written: list[int] = []
    claim_due, complete = store.claim_due, store.complete

    async def counted_claim(**kwargs: Any) -> list[Claimed]:
        found = await claim_due(**kwargs)
        if found:
            claimed.append(len(found))
        return found

    async def counted_complete(completions: Sequence[Completion], *, owner: str) -> None:
        written.append(len(completions))
        await complete(completions, owner=owner)

    store.claim_due = counted_claim  # type: ignore[method-assign]
    store.complete = counted_complete  # type: ignore[method-assign]
    await ingest(service, receiver.url, 1000)
    await eventually(lambda: all_in(service, DeliveryState.DELIVERED, 1000), timeout=30)
    assert sum(claimed) == sum(written) == 1000
    # One statement per delivery would be 1,000 of each; batches of 50 at most here.
    assert len(claimed) <= 200, claimed
    assert len(written) <= 200, written
    assert max(written) > 1


@pytest.mark.parametrize("backend", ["postgres"])
async def test_workers_on_one_postgres_store_share_the_work(
    tmp_path: Path, db_url: str, receiver: Receiver
) -> None:
    """How ccpush scales out (``ccpush worker`` run twice): each worker pushes what it
    claims, and every record is pushed once."""
    workers, written = [], [0, 0]

    def counting(n: int) -> Callable[[Completion], None]:
        def count(_: Completion) -> None:
            written[n] += 1

        return count

    for n in range(2):
        (tmp_path / f"worker-{n}").mkdir()
        worker = make_service(tmp_path / f"worker-{n}", db_url, concurrency=16, batch_size=20)
        worker.dispatcher.listeners.append(counting(n))
        workers.append(worker)
    for worker in workers:
        await worker.start()
    try:
        await ingest(workers[0], receiver.url, 1000)
        workers[1].dispatcher.wake()
        await receiver.wait_for(lambda r: len(r.pushes) >= 1000, timeout=30)
        await eventually(lambda: all_in(workers[0], DeliveryState.DELIVERED, 1000), timeout=10)
    finally:
        for worker in workers:
            await worker.stop()
    assert len(receiver.pushes) == 1000
    assert receiver.sessions() == {f"s{i}" for i in range(1000)}
    assert sum(written) == 1000
    assert min(written) > 0, written
