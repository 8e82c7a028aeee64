"""The console's statistics query (``Store.attempt_stats``), on every backend."""

from __future__ import annotations

from datetime import timedelta

from ccpush.clock import ManualClock
from ccpush.models import AttemptBucket, Claimed, Completion, DeliveryState
from ccpush.store import Store
from ccpush.store.postgres import PostgresStore
from ccpush.store.sqlite import SqliteStore
from tests.test_store import claim, new_records, outcome

HOUR = timedelta(hours=1)


async def finish(
    store: Store, item: Claimed, clock: ManualClock, status: int, then: DeliveryState
) -> None:
    retry_at = clock.now() + timedelta(minutes=30) if then is DeliveryState.PENDING else None
    done = Completion(
        claimed=item,
        outcome=outcome(clock.now(), status),
        next_state=then,
        next_attempt_at=retry_at,
    )
    await store.complete([done], owner="w1")


async def test_attempts_are_counted_by_outcome_per_period(store: Store, clock: ManualClock) -> None:
    start = clock.now()
    app = await store.create_app(name="a", push_url="http://127.0.0.1:9/x", now=start)
    other = await store.create_app(name="b", push_url="http://127.0.0.1:9/y", now=start)
    await store.ingest(app.id, new_records("ok", "again", "lost"), now=start)
    await store.ingest(other.id, new_records("elsewhere"), now=start)
    clock.advance(timedelta(minutes=10))
    items = {item.call_session_id: item for item in await claim(store, clock)}
    await finish(store, items["ok"], clock, 200, DeliveryState.DELIVERED)
    await finish(store, items["again"], clock, 503, DeliveryState.PENDING)
    await finish(store, items["lost"], clock, 500, DeliveryState.FAILED)
    await finish(store, items["elsewhere"], clock, 200, DeliveryState.DELIVERED)
    clock.advance(HOUR)
    [retry] = await claim(store, clock)
    await finish(store, retry, clock, 200, DeliveryState.DELIVERED)

    assert await store.attempt_stats(app.id, since=start, bucket=HOUR) == [
        AttemptBucket(start=start, delivered=1, retrying=1, failed=1),
        AttemptBucket(start=start + HOUR, delivered=1, retrying=0, failed=0),
    ]
    later = start + timedelta(minutes=30)
    assert await store.attempt_stats(app.id, since=later, bucket=timedelta(days=1)) == [
        AttemptBucket(start=later, delivered=1, retrying=0, failed=0)
    ]
    assert await store.attempt_stats(app.id, since=clock.now() + HOUR, bucket=HOUR) == []


async def undo_migration_7(store: Store) -> None:
    """Take the store's schema back to before migration 7, keeping the data."""
    undo = (
        "DROP INDEX attempts_by_app_time",
        "ALTER TABLE attempts DROP COLUMN app_id",
        "DELETE FROM schema_migrations WHERE version = 7",
    )
    if isinstance(store, SqliteStore):
        for statement in undo:
            await store._read(statement)
    else:
        assert isinstance(store, PostgresStore)
        for statement in undo:
            await store.pool.execute(statement)


async def test_attempts_kept_from_before_they_had_an_app_are_counted(
    store: Store, clock: ManualClock
) -> None:
    """Migration 7 gives attempts their app (the charts read them by app and time): the
    attempts written before it are filled in."""
    start = clock.now()
    app = await store.create_app(name="a", push_url="http://127.0.0.1:9/x", now=start)
    await store.ingest(app.id, new_records("old"), now=start)
    [item] = await claim(store, clock)
    await finish(store, item, clock, 200, DeliveryState.DELIVERED)
    await undo_migration_7(store)
    assert await store.migrate() == ["0007_attempts_by_app"]
    assert await store.attempt_stats(app.id, since=start, bucket=HOUR) == [
        AttemptBucket(start=start, delivered=1, retrying=0, failed=0)
    ]
