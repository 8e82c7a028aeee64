"""Fair claiming and dispatching: apps take turns, retries have their own lane, a slow app
holds only its share of the pushers, and what a stopping worker claimed but did not push is
given back at once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from ccpush.clock import ManualClock
from ccpush.dispatcher import KEPT_PER_CACHE, host_of, store_retry_delay
from ccpush.errors import StoreError
from ccpush.models import Claimed, Completion, DeliveryState, ErrorKind, Outcome
from ccpush.service import Service
from ccpush.store import Store
from ccpush.store.sqlite import SqliteStore
from ccpush.store.sqlite.queries import CLAIM_DUE
from tests.conftest import minimal_record
from tests.helpers import eventually, make_service, new_record
from tests.receiver import Push, Receiver, Reply
from tests.test_store import new_records

PUSH_URL = "http://127.0.0.1:9/x"
T = TypeVar("T")


async def ingest(store: Store, clock: ManualClock, app_id: str, prefix: str, count: int) -> None:
    await store.ingest(
        app_id, new_records(*(f"{prefix}{n}" for n in range(count))), now=clock.now()
    )


async def apps_with_records(
    store: Store, clock: ManualClock, count: int, *, each: int
) -> list[str]:
    """``count`` apps (``a0``...), each with ``each`` due records (``a0-0``...): their ids."""
    apps = []
    for n in range(count):
        app = await store.create_app(name=f"a{n}", push_url=PUSH_URL, now=clock.now())
        await ingest(store, clock, app.id, f"a{n}-", each)
        apps.append(app.id)
    return apps


async def claim(
    store: Store,
    clock: ManualClock,
    limit: int,
    owner: str = "w1",
    skip: tuple[str, ...] = (),
    limits: dict[str, int] | None = None,
) -> list[Claimed]:
    now = clock.now()
    return await store.claim_due(
        now=now,
        limit=limit,
        lease_until=now + timedelta(seconds=60),
        owner=owner,
        skip_apps=skip,
        app_limits=limits,
    )


def failed(item: Claimed, clock: ManualClock) -> Completion:
    outcome = Outcome(
        started_at=clock.now(),
        duration_ms=1.0,
        status_code=503,
        error_kind=ErrorKind.HTTP_STATUS,
        error="HTTP 503",
        response_excerpt=None,
    )
    return Completion(
        claimed=item,
        outcome=outcome,
        next_state=DeliveryState.PENDING,
        next_attempt_at=clock.now() + timedelta(minutes=30),
    )


class TestFairClaims:
    async def test_an_app_with_a_backlog_does_not_hold_up_another(
        self, store: Store, clock: ManualClock
    ) -> None:
        big = await store.create_app(name="big", push_url=PUSH_URL, now=clock.now())
        small = await store.create_app(name="small", push_url=PUSH_URL, now=clock.now())
        await ingest(store, clock, big.id, "big", 300)
        clock.advance(timedelta(seconds=1))
        await ingest(store, clock, small.id, "small", 5)
        claimed = await claim(store, clock, limit=20)
        per_app = Counter(item.app_id for item in claimed)
        # The small app's newer records come in the first claim, not after 300 older ones:
        # each app with due work gets an equal share of the batch (at most).
        assert per_app == {small.id: 5, big.id: 10}
        big_ones = [item.call_session_id for item in claimed if item.app_id == big.id]
        assert big_ones == [f"big{n}" for n in range(10)]  # each app oldest first
        again = await claim(store, clock, limit=20)
        assert [item.call_session_id for item in again] == [f"big{n}" for n in range(10, 30)]

    async def test_apps_take_turns_in_a_claim(self, store: Store, clock: ManualClock) -> None:
        apps = await apps_with_records(store, clock, 4, each=50)
        claimed = await claim(store, clock, limit=40)
        assert Counter(item.app_id for item in claimed) == dict.fromkeys(apps, 10)

    async def test_a_wave_of_retries_does_not_starve_first_attempts(
        self, store: Store, clock: ManualClock
    ) -> None:
        app = await store.create_app(name="a", push_url=PUSH_URL, now=clock.now())
        await ingest(store, clock, app.id, "old", 200)
        first = await claim(store, clock, limit=200)
        await store.complete([failed(item, clock) for item in first], owner="w1")
        clock.advance(timedelta(minutes=30))  # 200 retries due
        await ingest(store, clock, app.id, "new", 200)  # and 200 first attempts
        claimed = await claim(store, clock, limit=40)
        lanes = Counter("retry" if item.attempt > 1 else "first" for item in claimed)
        # First attempts take three places in four while both lanes have work; the older
        # retries still get theirs.
        assert lanes == {"first": 30, "retry": 10}
        assert all(item.call_session_id.startswith("new") for item in claimed if item.attempt == 1)

    async def test_retries_use_the_whole_claim_when_alone(
        self, store: Store, clock: ManualClock
    ) -> None:
        app = await store.create_app(name="a", push_url=PUSH_URL, now=clock.now())
        await ingest(store, clock, app.id, "old", 30)
        first = await claim(store, clock, limit=30)
        await store.complete([failed(item, clock) for item in first], owner="w1")
        clock.advance(timedelta(minutes=30))
        claimed = await claim(store, clock, limit=40)
        assert len(claimed) == 30
        assert {item.attempt for item in claimed} == {2}

    async def test_skipped_and_limited_apps(self, store: Store, clock: ManualClock) -> None:
        apps = await apps_with_records(store, clock, 3, each=20)
        claimed = await claim(store, clock, limit=30, skip=(apps[0],), limits={apps[1]: 3})
        assert Counter(item.app_id for item in claimed) == {apps[1]: 3, apps[2]: 15}

    async def test_released_claims_are_due_again_as_they_were(
        self, store: Store, clock: ManualClock
    ) -> None:
        app = await store.create_app(name="a", push_url=PUSH_URL, now=clock.now())
        await ingest(store, clock, app.id, "s", 3)
        claimed = await claim(store, clock, limit=3)
        ids = [item.delivery_id for item in claimed]
        assert await store.release(ids, owner="someone else", now=clock.now()) == 0
        assert await store.release(ids, owner="w1", now=clock.now()) == 3
        counts = await store.count_by_state(app.id)
        assert (counts[DeliveryState.PENDING], counts[DeliveryState.SENDING]) == (3, 0)
        again = await claim(store, clock, limit=3, owner="w2")
        assert [(c.call_session_id, c.attempt) for c in again] == [
            (c.call_session_id, 1) for c in claimed
        ]
        assert await store.release([], owner="w2", now=clock.now()) == 0

    async def test_counts_by_state_per_app_and_for_all(
        self, store: Store, clock: ManualClock
    ) -> None:
        app = await store.create_app(name="a", push_url=PUSH_URL, now=clock.now())
        other = await store.create_app(name="b", push_url=None, now=clock.now())
        await ingest(store, clock, app.id, "s", 6)
        await ingest(store, clock, other.id, "h", 2)
        claimed = await claim(store, clock, limit=4)
        await store.complete([failed(claimed[0], clock)], owner="w1")  # a retry, pending
        ok = Outcome(
            started_at=clock.now(),
            duration_ms=1.0,
            status_code=200,
            error_kind=None,
            error=None,
            response_excerpt="ok",
        )
        done = Completion(
            claimed=claimed[1], outcome=ok, next_state=DeliveryState.DELIVERED, next_attempt_at=None
        )
        gave_up = Completion(
            claimed=claimed[2],
            outcome=failed(claimed[2], clock).outcome,
            next_state=DeliveryState.FAILED,
            next_attempt_at=None,
        )
        await store.complete([done, gave_up], owner="w1")
        expected = {
            DeliveryState.PENDING: 3,  # two first attempts and a retry
            DeliveryState.SENDING: 1,
            DeliveryState.DELIVERED: 1,
            DeliveryState.FAILED: 1,
            DeliveryState.HELD: 0,
        }
        assert await store.count_by_state(app.id) == expected
        assert (await store.count_by_state(other.id))[DeliveryState.HELD] == 2
        assert await store.count_by_state() == {**expected, DeliveryState.HELD: 2}

    async def test_pausing_holds_both_lanes(self, store: Store, clock: ManualClock) -> None:
        app = await store.create_app(name="a", push_url=PUSH_URL, now=clock.now())
        await ingest(store, clock, app.id, "s", 4)
        first = await claim(store, clock, limit=2)
        await store.complete([failed(item, clock) for item in first], owner="w1")
        await store.update_app(app.id, now=clock.now(), paused=True)
        counts = await store.count_by_state(app.id)
        assert (counts[DeliveryState.HELD], counts[DeliveryState.PENDING]) == (4, 0)
        await store.update_app(app.id, now=clock.now(), paused=False)
        assert len(await claim(store, clock, limit=10)) == 4


@pytest.fixture(params=[0, 2], ids=["in-process", "push-processes"])
async def service(
    tmp_path: Path, db_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[Service]:
    """A running service; with two push processes, the host and app caps hold whichever
    child makes a push, since the dispatcher keeps them."""
    service = make_service(
        tmp_path,
        db_url,
        concurrency=8,
        per_host_concurrency=5,
        batch_size=50,
        push_timeout=2.0,
        push_processes=request.param,
    )
    await service.start()
    yield service
    await service.stop()


async def add_app(service: Service, url: str, prefix: str, count: int) -> str:
    store, now = service.store, service.clock.now()
    app = await store.create_app(name=prefix, push_url=url, now=now)
    records = [new_record(minimal_record(f"{prefix}{n}")) for n in range(count)]
    await store.ingest(app.id, records, now=now)
    service.dispatcher.wake()
    return app.id


class HangingHost:
    """A loopback listener that reads each request and never answers: how many of its
    connections were open as each new one opened."""

    def __init__(self) -> None:
        self.open = 0
        self.seen: list[int] = []
        self._server: asyncio.Server | None = None
        self._held: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> HangingHost:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._held:
            writer.transport.abort()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/cdr"

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._held.append(writer)
        self.open += 1
        self.seen.append(self.open)
        try:
            await reader.read()  # until the client gives up
        except OSError:
            pass
        finally:
            self.open -= 1
            writer.close()


async def test_a_hanging_host_soon_holds_one_pusher_and_never_the_others(
    service: Service, receiver: Receiver
) -> None:
    async with HangingHost() as hanging:
        await add_app(service, hanging.url, "slow", 200)
        # A new host may have 4 pushes at once (under the per-host 5)...
        await eventually(lambda: len(hanging.seen) == 4)
        # ...another app's records go out at once meanwhile...
        await add_app(service, receiver.url, "fast", 100)
        await receiver.wait_for(lambda r: len(r.pushes) == 100, timeout=5)
        # ...and once its pushes time out, the host is held to one at a time.
        await eventually(lambda: len(hanging.seen) >= 7)
        assert hanging.seen[:4] == [1, 2, 3, 4]
        assert max(hanging.seen[4:]) <= 2  # the one before may still be closing
        assert service.dispatcher.host_limits.limit(host_of(hanging.url)) == 1


async def test_a_host_answering_503_is_left_alone_for_a_while(
    service: Service, receiver: Receiver
) -> None:
    arrivals: list[float] = []

    def unavailable(push: Push, seen: int) -> Reply:
        arrivals.append(time.monotonic())
        return Reply(status=503)

    busy = await Receiver(unavailable).start()
    try:
        await add_app(service, busy.url, "busy", 30)
        # The answers to the first pushes (four at once) hold the host back...
        await busy.wait_for(lambda r: len(r.pushes) == 4)
        # ...while another host's records go out...
        await add_app(service, receiver.url, "fast", 50)
        await receiver.wait_for(lambda r: len(r.pushes) == 50, timeout=5)
        # ...and a second later, half as many are pushed, and held back for twice as long.
        await busy.wait_for(lambda r: len(r.pushes) >= 6, timeout=5)
        assert arrivals[4] - arrivals[3] >= 0.9
        assert arrivals[5] - arrivals[4] < 0.5
    finally:
        await busy.stop()


async def test_stopping_gives_back_what_was_claimed_and_not_pushed(
    tmp_path: Path, db_url: str
) -> None:
    service = make_service(tmp_path, db_url, concurrency=2, batch_size=50, push_timeout=1.0)
    hanging = await Receiver(lambda push, seen: Reply(delay=60)).start()
    await service.start()
    try:
        app_id = await add_app(service, hanging.url, "s", 40)
        await hanging.wait_for(lambda r: len(r.pushes) == 2)
        counts = await service.store.count_by_state(app_id)
        assert counts[DeliveryState.SENDING] > 2  # claimed ahead of the pushers
    finally:
        await service.stop()
        await hanging.stop()
    await service.store.open()
    try:
        counts = await service.store.count_by_state(app_id)
        # The two pushes in flight ended (timed out: retries later); the others are
        # pending again, not leased to a worker that is gone.
        assert counts[DeliveryState.SENDING] == 0
        assert counts[DeliveryState.PENDING] == 40
        now = service.clock.now()
        again = await service.store.claim_due(
            now=now, limit=100, lease_until=now + timedelta(seconds=60), owner="next worker"
        )
        assert len(again) == 38
        assert {item.attempt for item in again} == {1}
    finally:
        await service.store.close()


async def test_slow_apps_keep_a_quarter_of_the_pushers_for_the_others(
    tmp_path: Path, db_url: str, receiver: Receiver
) -> None:
    service = make_service(tmp_path, db_url, concurrency=8, batch_size=50, push_timeout=2.0)
    hanging = [await Receiver(lambda push, seen: Reply(delay=60)).start() for _ in range(4)]
    await service.store.open()
    slow_apps = {  # four apps with work when dispatching starts
        await add_app(service, slow.url, f"slow{number}-", 50)
        for number, slow in enumerate(hanging)
    }
    await service.start()
    try:
        await eventually(lambda: sum(len(r.pushes) for r in hanging) == 6)
        await eventually(lambda: service.dispatcher.held_back == slow_apps)
        # With a quarter of the pushers left, an app under 8 // (4 + 1) in flight may take
        # one: none of them is...
        assert sum(len(r.pushes) for r in hanging) == 6
        await add_app(service, receiver.url, "fast", 100)
        # ...and the quarter goes to the app under its share.
        await receiver.wait_for(lambda r: len(r.pushes) == 100, timeout=5)
        assert sum(len(r.pushes) for r in hanging) == 6
    finally:
        await service.stop()
        for slow in hanging:
            await slow.stop()


async def test_records_arriving_while_pushing_are_claimed_ahead(
    service: Service, receiver: Receiver
) -> None:
    for batch in range(10):
        await add_app(service, receiver.url, f"b{batch}-", 30)
    await receiver.wait_for(lambda r: len(r.pushes) == 300, timeout=10)
    await eventually(
        lambda: _delivered(service, 300),
        timeout=5,
    )
    assert len(receiver.sessions()) == 300


async def _delivered(service: Service, count: int) -> bool:
    return (await service.store.count_by_state())[DeliveryState.DELIVERED] == count


def store_failing_first(
    calls: int, method: Callable[..., Awaitable[T]]
) -> Callable[..., Awaitable[T]]:
    """``method``, raising ``StoreError`` on its first ``calls`` calls."""
    failures = iter(range(calls))

    async def flaky(*args: object, **kwargs: object) -> T:
        if next(failures, None) is not None:
            raise StoreError("the database is unreachable")
        return await method(*args, **kwargs)

    return flaky


@pytest.mark.parametrize("failing", ["complete", "claim_due"])
async def test_dispatching_outlives_a_failing_store(
    tmp_path: Path, db_url: str, receiver: Receiver, failing: str
) -> None:
    """Claims and writes that fail are tried again: every record is pushed exactly once
    (the outcomes waited in memory) and delivered; readiness says so meanwhile."""
    service = make_service(tmp_path, db_url, concurrency=4, batch_size=50)
    await service.store.open()
    try:
        await add_app(service, receiver.url, "s", 20)
        real = getattr(service.store, failing)
        setattr(service.store, failing, store_failing_first(4, real))
        seen_failing = []
        stop = asyncio.Event()
        await service.sender.start()
        running = asyncio.create_task(service.dispatcher.run(stop))

        async def all_delivered() -> bool:
            seen_failing.append(service.dispatcher.store_failing)
            return await _delivered(service, 20)

        await eventually(all_delivered)
        stop.set()
        await asyncio.wait_for(running, timeout=10)
        assert True in seen_failing
        assert not service.dispatcher.store_failing
        assert sorted(Counter(p.session_id for p in receiver.pushes).values()) == [1] * 20
    finally:
        await service.sender.close()
        await service.store.close()


async def test_a_stopping_dispatcher_drops_what_it_cannot_write(
    tmp_path: Path, db_url: str, receiver: Receiver
) -> None:
    """With the store failing for good, stopping ends (outcomes dropped after a few tries)
    and the deliveries stay claimed: pushed again once their leases run out."""
    service = make_service(tmp_path, db_url, concurrency=4, batch_size=50)
    await service.store.open()
    try:
        await add_app(service, receiver.url, "s", 5)
        service.store.complete = store_failing_first(10**9, service.store.complete)  # type: ignore[method-assign]
        stop = asyncio.Event()
        await service.sender.start()
        running = asyncio.create_task(service.dispatcher.run(stop))
        await eventually(lambda: len(receiver.pushes) == 5 and service.dispatcher.store_failing)
        stop.set()
        await asyncio.wait_for(running, timeout=10)
        counts = await service.store.count_by_state()
        assert counts[DeliveryState.SENDING] == 5
    finally:
        await service.sender.close()
        await service.store.close()


@pytest.mark.parametrize(
    ("failures", "seconds"), [(1, 0.05), (2, 0.1), (5, 0.8), (11, 30.0), (10**6, 30.0)]
)
def test_a_failing_store_is_tried_less_and_less_often(failures: int, seconds: float) -> None:
    assert store_retry_delay(failures) == pytest.approx(seconds)


async def test_claiming_reads_only_the_apps_with_work(tmp_path: Path) -> None:
    """The claim finds apps with due work along the lanes' indexes (a loose index scan),
    never by reading every app: idle apps cost it nothing."""
    store = SqliteStore.from_url(f"sqlite:///{tmp_path / 'plan.db'}")
    await store.open()
    try:
        plan = await store._read("EXPLAIN QUERY PLAN " + CLAIM_DUE, (0.0, 16, "[]", "{}"))
        steps = [row[3] for row in plan]
        assert not [step for step in steps if step.startswith(("SCAN a", "SCAN apps"))]
        assert "SEARCH deliveries USING INDEX deliveries_due_first (app_id>?)" in steps
        assert "SEARCH deliveries USING INDEX deliveries_due_retry (app_id>?)" in steps
    finally:
        await store.close()


def test_the_pace_memory_is_bounded_and_keeps_the_apps_at_work(tmp_path: Path) -> None:
    dispatcher = make_service(tmp_path, f"sqlite:///{tmp_path / 'pace.db'}").dispatcher
    dispatcher._active["busy"] = 1
    dispatcher._keep_pace("busy", 60.0)  # slow: a batch would take far more than a second
    for n in range(KEPT_PER_CACHE + 100):
        dispatcher._keep_pace(f"gone{n}", 0.001)
    assert len(dispatcher._pace) <= KEPT_PER_CACHE
    assert "busy" in dispatcher._pace
    assert dispatcher._slow == {"busy"}
    assert f"gone{KEPT_PER_CACHE + 99}" in dispatcher._pace
