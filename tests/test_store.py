"""The store contract, run against every backend (SQLite and the real PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from ccpush.clock import ManualClock
from ccpush.errors import AppNotFound, StoreRefusedValue
from ccpush.models import (
    Claimed,
    Completion,
    DeliveryState,
    ErrorKind,
    NewRecord,
    Outcome,
    ReplayJob,
    ReplayKind,
    ReplayState,
)
from ccpush.store import Store, open_store

START = datetime(2023, 11, 17, 5, 42, 30, tzinfo=UTC)


def new_records(*ids: str) -> list[NewRecord]:
    return [
        NewRecord(
            call_session_id=sid, body=f'{{"callSessionId":"{sid}"}}'.encode(), call_start=START
        )
        for sid in ids
    ]


def outcome(at: datetime, status: int | None = 200) -> Outcome:
    failed = status is None or not 200 <= status < 300
    return Outcome(
        started_at=at,
        duration_ms=1.5,
        status_code=status,
        error_kind=(ErrorKind.HTTP_STATUS if status else ErrorKind.CONNECT) if failed else None,
        error="HTTP 503" if failed else None,
        response_excerpt="busy" if failed else "ok",
    )


async def claim(
    store: Store, clock: ManualClock, owner: str = "w1", limit: int = 100
) -> list[Claimed]:
    now = clock.now()
    return await store.claim_due(
        now=now, limit=limit, lease_until=now + timedelta(seconds=60), owner=owner
    )


class TestStore:
    async def test_apps_are_created_read_and_changed(
        self, store: Store, clock: ManualClock
    ) -> None:
        app = await store.create_app(
            name="Sales line", push_url="http://127.0.0.1:1/a", now=clock.now()
        )
        assert app.id.startswith("app_")
        assert await store.get_app(app.id) == app
        clock.advance(timedelta(minutes=1))
        changed = await store.update_app(app.id, now=clock.now(), name="Sales", push_url=None)
        assert (changed.name, changed.push_url) == ("Sales", None)
        assert changed.updated_at == clock.now()
        assert changed.created_at == app.created_at
        with pytest.raises(AppNotFound):
            await store.get_app("app_missing")
        with pytest.raises(AppNotFound):
            await store.update_app("app_missing", now=clock.now(), name="x")

    async def test_ingest_stores_each_session_once(self, store: Store, clock: ManualClock) -> None:
        app = await store.create_app(name="a", push_url="http://127.0.0.1:1/", now=clock.now())
        first = await store.ingest(app.id, new_records("s1", "s2", "s1"), now=clock.now())
        assert [(r.call_session_id, r.accepted) for r in first] == [
            ("s1", True),
            ("s2", True),
            ("s1", False),
        ]
        again = await store.ingest(app.id, new_records("s2", "s3"), now=clock.now())
        assert [r.accepted for r in again] == [False, True]
        counts = await store.count_by_state(app.id)
        assert counts[DeliveryState.PENDING] == 3

    async def test_same_session_id_in_two_apps_is_two_records(
        self, store: Store, clock: ManualClock
    ) -> None:
        one = await store.create_app(name="a", push_url=None, now=clock.now())
        two = await store.create_app(name="b", push_url=None, now=clock.now())
        await store.ingest(one.id, new_records("s1"), now=clock.now())
        results = await store.ingest(two.id, new_records("s1"), now=clock.now())
        assert results[0].accepted

    async def test_ingest_for_unknown_app_stores_nothing(
        self, store: Store, clock: ManualClock
    ) -> None:
        with pytest.raises(AppNotFound):
            await store.ingest("app_missing", new_records("s1"), now=clock.now())
        assert sum((await store.count_by_state()).values()) == 0

    async def test_claim_leases_due_work_oldest_first(
        self, store: Store, clock: ManualClock
    ) -> None:
        app = await store.create_app(name="a", push_url="http://127.0.0.1:9/x", now=clock.now())
        await store.ingest(app.id, new_records("early"), now=clock.now())
        clock.advance(timedelta(seconds=1))
        await store.ingest(app.id, new_records("late"), now=clock.now())
        claimed = await claim(store, clock, limit=1)
        assert [c.call_session_id for c in claimed] == ["early"]
        item = claimed[0]
        assert (item.push_url, item.attempt, item.first_attempt_at) == (
            "http://127.0.0.1:9/x",
            1,
            None,
        )
        assert item.body == b'{"callSessionId":"early"}'
        assert [c.call_session_id for c in await claim(store, clock, owner="w2")] == ["late"]
        assert await claim(store, clock, owner="w3") == []
        assert (await store.count_by_state())[DeliveryState.SENDING] == 2

    async def test_work_not_yet_due_is_not_claimed(self, store: Store, clock: ManualClock) -> None:
        app = await store.create_app(name="a", push_url="http://127.0.0.1:9/x", now=clock.now())
        await store.ingest(app.id, new_records("s1"), now=clock.now())
        [item] = await claim(store, clock)
        retry_at = clock.now() + timedelta(minutes=30)
        await store.complete(
            [
                Completion(
                    claimed=item,
                    outcome=outcome(clock.now(), 503),
                    next_state=DeliveryState.PENDING,
                    next_attempt_at=retry_at,
                )
            ],
            owner="w1",
        )
        assert await store.next_due_at() == retry_at
        clock.advance(timedelta(minutes=29, seconds=59))
        assert await claim(store, clock) == []
        clock.advance(timedelta(seconds=1))
        [again] = await claim(store, clock)
        assert (again.attempt, again.first_attempt_at) == (2, retry_at - timedelta(minutes=30))

    async def test_completion_records_attempts(self, store: Store, clock: ManualClock) -> None:
        app = await store.create_app(name="a", push_url="http://127.0.0.1:9/x", now=clock.now())
        await store.ingest(app.id, new_records("s1"), now=clock.now())
        [item] = await claim(store, clock)
        await store.complete(
            [
                Completion(
                    claimed=item,
                    outcome=outcome(clock.now()),
                    next_state=DeliveryState.DELIVERED,
                    next_attempt_at=None,
                )
            ],
            owner="w1",
        )
        [delivery] = await store.deliveries_of(app.id, "s1")
        assert (delivery.state, delivery.attempts, delivery.next_attempt_at) == (
            DeliveryState.DELIVERED,
            1,
            None,
        )
        [attempt] = delivery.attempt_log
        assert (attempt.number, attempt.status_code, attempt.error_kind) == (1, 200, None)
        assert attempt.started_at == clock.now()
        assert attempt.response_excerpt == "ok"
        assert await store.deliveries_of(app.id, "unknown") == []

    async def test_a_stale_worker_cannot_move_a_reclaimed_delivery(
        self, store: Store, clock: ManualClock
    ) -> None:
        app = await store.create_app(name="a", push_url="http://127.0.0.1:9/x", now=clock.now())
        await store.ingest(app.id, new_records("s1"), now=clock.now())
        [stale] = await claim(store, clock, owner="dead")
        clock.advance(timedelta(seconds=61))
        assert await store.release_expired(now=clock.now()) == 1
        [fresh] = await claim(store, clock, owner="alive")
        assert fresh.attempt == 1
        late = Completion(
            claimed=stale,
            outcome=outcome(clock.now(), 200),
            next_state=DeliveryState.DELIVERED,
            next_attempt_at=None,
        )
        await store.complete([late], owner="dead")
        [delivery] = await store.deliveries_of(app.id, "s1")
        assert delivery.state is DeliveryState.SENDING
        assert len(delivery.attempt_log) == 1  # the attempt happened, so it is logged

    async def test_an_outcome_for_a_deleted_app_is_dropped(
        self, store: Store, clock: ManualClock
    ) -> None:
        app = await store.create_app(name="a", push_url="http://127.0.0.1:9/x", now=clock.now())
        other = await store.create_app(name="b", push_url="http://127.0.0.1:9/y", now=clock.now())
        await store.ingest(app.id, new_records("s1"), now=clock.now())
        await store.ingest(other.id, new_records("s2"), now=clock.now())
        claimed = await claim(store, clock)
        await store.delete_app(app.id)
        done = [
            Completion(
                claimed=item,
                outcome=outcome(clock.now(), 200),
                next_state=DeliveryState.DELIVERED,
                next_attempt_at=None,
            )
            for item in claimed
        ]
        await store.complete(done, owner="w1")
        [delivery] = await store.deliveries_of(other.id, "s2")
        assert (delivery.state, len(delivery.attempt_log)) == (DeliveryState.DELIVERED, 1)
        assert await store.count_by_state() == {
            **dict.fromkeys(DeliveryState, 0),
            DeliveryState.DELIVERED: 1,
        }

    async def test_unexpired_leases_are_kept(self, store: Store, clock: ManualClock) -> None:
        app = await store.create_app(name="a", push_url="http://127.0.0.1:9/x", now=clock.now())
        await store.ingest(app.id, new_records("s1"), now=clock.now())
        await claim(store, clock)
        clock.advance(timedelta(seconds=59))
        assert await store.release_expired(now=clock.now()) == 0

    async def test_no_push_address_holds_records_until_one_is_set(
        self, store: Store, clock: ManualClock
    ) -> None:
        app = await store.create_app(name="a", push_url=None, now=clock.now())
        await store.ingest(app.id, new_records("s1", "s2"), now=clock.now())
        assert (await store.count_by_state(app.id))[DeliveryState.HELD] == 2
        assert await claim(store, clock) == []
        clock.advance(timedelta(hours=1))
        await store.update_app(app.id, now=clock.now(), push_url="http://127.0.0.1:9/new")
        claimed = await claim(store, clock)
        assert {c.call_session_id for c in claimed} == {"s1", "s2"}
        assert {c.push_url for c in claimed} == {"http://127.0.0.1:9/new"}

    async def test_clearing_the_address_holds_waiting_deliveries(
        self, store: Store, clock: ManualClock
    ) -> None:
        app = await store.create_app(name="a", push_url="http://127.0.0.1:9/x", now=clock.now())
        await store.ingest(app.id, new_records("s1", "s2"), now=clock.now())
        [in_flight] = await claim(store, clock, limit=1)
        await store.update_app(app.id, now=clock.now(), push_url=None)
        retry = Completion(
            claimed=in_flight,
            outcome=outcome(clock.now(), 500),
            next_state=DeliveryState.PENDING,
            next_attempt_at=clock.now() + timedelta(minutes=30),
        )
        await store.complete([retry], owner="w1")
        counts = await store.count_by_state(app.id)
        assert counts[DeliveryState.HELD] == 2
        assert counts[DeliveryState.PENDING] == 0

    async def test_changed_address_applies_to_pending_retries(
        self, store: Store, clock: ManualClock
    ) -> None:
        app = await store.create_app(name="a", push_url="http://127.0.0.1:9/old", now=clock.now())
        await store.ingest(app.id, new_records("s1"), now=clock.now())
        await store.update_app(app.id, now=clock.now(), push_url="http://127.0.0.1:9/new")
        [item] = await claim(store, clock)
        assert item.push_url == "http://127.0.0.1:9/new"

    async def test_migrations_are_recorded_and_not_reapplied(self, db_url: str) -> None:
        first = open_store(db_url)
        await first.open(migrate=False)
        try:
            applied = await first.migrate()
            assert applied[:3] == ["0001_initial", "0002_accounts_keys_replays", "0003_signing"]
            assert applied == sorted(applied)
            assert await first.migrate() == []
        finally:
            await first.close()
        second = open_store(db_url)
        await second.open()
        await second.close()

    async def test_many_records_in_one_batch(self, store: Store, clock: ManualClock) -> None:
        app = await store.create_app(name="a", push_url="http://127.0.0.1:9/x", now=clock.now())
        ids = [f"s{i}" for i in range(2000)]
        results = await store.ingest(app.id, new_records(*ids), now=clock.now())
        assert all(r.accepted for r in results)
        claimed = await claim(store, clock, limit=5000)
        assert sorted(c.call_session_id for c in claimed) == sorted(ids)

    async def test_a_replay_taken_over_is_enqueued_once(
        self, store: Store, clock: ManualClock
    ) -> None:
        """Two runners: the second takes a replay over only once the first's lease ran out,
        from where it was; the first can then add nothing. Each record is queued once."""
        app = await store.create_app(name="a", push_url=None, now=clock.now())
        await store.ingest(app.id, new_records(*(f"s{i}" for i in range(250))), now=clock.now())
        job, created = await store.create_replay(
            app.id,
            kind=ReplayKind.RANGE,
            range_from=START - timedelta(hours=1),
            range_to=START + timedelta(hours=1),
            cap=1000,
            now=clock.now(),
        )
        assert created
        assert job.total == 250
        lease = timedelta(seconds=60)

        async def lease_it(owner: str) -> ReplayJob | None:
            return await store.claim_replay(
                now=clock.now(), lease_until=clock.now() + lease, owner=owner
            )

        async def advance(owner: str) -> ReplayJob | None:
            now = clock.now()
            return await store.advance_replay(
                job.id, owner=owner, chunk=100, now=now, lease_until=now + lease
            )

        assert await lease_it("first") is not None
        assert (await advance("first")).enqueued == 100  # type: ignore[union-attr]
        assert await lease_it("second") is None  # leased
        clock.advance(lease + timedelta(seconds=1))
        taken = await lease_it("second")
        assert taken is not None
        assert taken.enqueued == 100
        assert await advance("first") is None  # its lease is gone: nothing added
        while (current := await advance("second")) is not None:
            if current.state is ReplayState.DONE:
                break
        assert current is not None
        assert (current.state, current.enqueued) == (ReplayState.DONE, 250)
        counts = await store.count_by_state(app.id)
        assert counts[DeliveryState.HELD] == 500  # the 250 ingested and one replay of each


async def test_workers_claiming_at_once_never_share_a_delivery(
    store: Store, clock: ManualClock, db_url: str, backend: str
) -> None:
    """Four workers, each with its own connection, claim the same due work at the same
    time (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, one writer at a time on SQLite): every
    delivery goes to exactly one of them."""
    app = await store.create_app(name="a", push_url="http://127.0.0.1:9/x", now=clock.now())
    await store.ingest(app.id, new_records(*(f"s{i}" for i in range(2000))), now=clock.now())
    workers = [open_store(db_url) for _ in range(4)]
    for worker in workers:
        await worker.open(migrate=False)
    try:

        async def drain(worker: Store, owner: str) -> list[int]:
            taken: list[int] = []
            while batch := await claim(worker, clock, owner=owner, limit=64):
                taken += [item.delivery_id for item in batch]
            return taken

        shares = await asyncio.gather(*(drain(worker, f"w{n}") for n, worker in enumerate(workers)))
    finally:
        for worker in workers:
            await worker.close()
    every = [delivery for share in shares for delivery in share]
    assert len(every) == len(set(every)) == 2000
    if backend == "postgres":
        assert all(shares)  # they did claim side by side (SQLite: one writer at a time)


@pytest.mark.parametrize("name", ["nul\x00in the middle", "a lone \ud800 surrogate", "ok"])
async def test_a_value_the_database_cannot_hold_is_refused_not_an_outage(
    store: Store, backend: str, name: str
) -> None:
    # The API refuses such values first; this is what the store says when one gets through.
    now = datetime(2026, 3, 1, tzinfo=UTC)
    holds_nul = backend == "sqlite"  # SQLite stores it (and reads back up to the NUL)
    if name == "ok" or ("\x00" in name and holds_nul):
        await store.create_account(name=name, now=now)
        return
    with pytest.raises(StoreRefusedValue):
        await store.create_account(name=name, now=now)
    assert [account.name for account in await store.list_accounts()] == ["Default account"]
