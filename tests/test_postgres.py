"""What only the PostgreSQL store does: its plans for the hot statements, and its pool.

The plans read what they need, not the whole backlog. Each statement is run under
``EXPLAIN`` on a store with thousands of rows, with no fresh statistics (as right after a
burst of ingestion) or with them (as autovacuum gathers them soon after), and no step of
its plan may read more rows than its work asks for: a plan that scans an app's records or
every due delivery costs more as they grow, and shows first as a slower claim or
ingestion under load.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ccpush.models import NewRecord
from ccpush.store import Store
from ccpush.store.postgres import PostgresStore
from ccpush.store.postgres.queries import CLAIM_DUE, COMPLETE, LATEST_VERSIONS
from tests.helpers import eventually

pytestmark = pytest.mark.parametrize("backend", ["postgres"])

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def record(sid: str) -> NewRecord:
    return NewRecord(call_session_id=sid, body=b"{}", call_start=NOW)


async def app_with_backlog(store: Store, push_url: str | None, backlog: int) -> str:
    app = await store.create_app(name="many", push_url=push_url, now=NOW)
    for start in range(0, backlog, 500):
        batch = [record(f"known-{n}") for n in range(start, start + 500)]
        await store.ingest(app.id, batch, now=NOW)
    return app.id


async def plan_of(store: Store, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Every node of the statement's executed plan (the statement's writes rolled back)."""
    assert isinstance(store, PostgresStore)
    async with store.pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            rows = await conn.fetch("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, *args)
        finally:
            await transaction.rollback()
    return list(_nodes(json.loads(rows[0][0])[0]["Plan"]))


async def analyze(store: Store) -> None:
    """Fresh statistics, as autovacuum gathers them soon after a burst of ingestion."""
    assert isinstance(store, PostgresStore)
    await store.pool.execute("ANALYZE")


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def most_rows_read(nodes: list[dict[str, Any]], table: str) -> int:
    return max(
        node["Actual Rows"] * node["Actual Loops"]
        for node in nodes
        if node.get("Relation Name") == table
    )


async def test_ingestion_finds_known_records_one_by_one(store: Store) -> None:
    """Planned as one join, the lookup scanned all the app's records (each batch cost more
    than the one before: 168 ms per 500 records at 20,000)."""
    app_id = await app_with_backlog(store, None, 3000)
    incoming = [f"new-{n}" for n in range(400)] + [f"known-{n}" for n in range(100)]
    nodes = await plan_of(store, LATEST_VERSIONS, [app_id] * len(incoming), incoming)
    assert most_rows_read(nodes, "call_records") <= 500
    assert most_rows_read(nodes, "record_versions") <= 100


@pytest.mark.parametrize(("limit", "analyzed"), [(100, False), (256, True)])
async def test_a_claim_reads_no_more_deliveries_than_it_claims(
    store: Store, limit: int, analyzed: bool
) -> None:
    """Which apps have due work was once an OR of two EXISTS, which PostgreSQL ran as a
    hashed scan of every due delivery (10 ms of a 19 ms claim at 20,000); and once the
    statistics knew the backlog, the claimed rows were updated through a hash join with
    every delivery (3 ms of 7 ms at 20,000, with the default batch of 256)."""
    await app_with_backlog(store, "http://receiver.test/cdr", 20_000)
    if analyzed:
        await analyze(store)
    later = NOW + timedelta(seconds=1)
    args = (later, limit, later + timedelta(seconds=60), "worker", [], None, [])
    nodes = await plan_of(store, CLAIM_DUE, *args)
    assert most_rows_read(nodes, "deliveries") <= 2 * limit


@pytest.mark.parametrize("analyzed", [False, True])
async def test_a_completion_reads_only_its_deliveries(store: Store, analyzed: bool) -> None:
    """Joined with the deliveries, the attempts' insert scanned every delivery for each
    batch without fresh statistics (2 ms of 3.7 ms for 256 attempts at 20,000 deliveries),
    and with them (2.7 ms of 4.6 ms); the state's update read every delivery the worker held
    in ``sending`` (it claims a batch or two ahead), 1,256 rows to complete 256."""
    await app_with_backlog(store, "http://receiver.test/cdr", 20_000)
    if analyzed:
        await analyze(store)
    later = NOW + timedelta(seconds=1)
    lease = later + timedelta(seconds=60)
    await store.claim_due(now=later, limit=1000, lease_until=lease, owner="worker")
    claimed = await store.claim_due(now=later, limit=256, lease_until=lease, owner="worker")
    ids, n = [item.delivery_id for item in claimed], len(claimed)
    outcomes = ([1.0] * n, [200] * n, [None] * n, [None] * n, ["ok"] * n)
    args = (ids, [1] * n, [later] * n, *outcomes, ["delivered"] * n, [None] * n, "worker")
    nodes = await plan_of(store, COMPLETE, *args)
    modified = {node["Operation"] for node in nodes if node["Node Type"] == "ModifyTable"}
    assert modified == {"Insert", "Update"}  # the attempts, and the deliveries' states
    assert most_rows_read(nodes, "deliveries") <= 2 * n


async def test_an_app_deleted_while_its_outcomes_are_written_keeps_no_attempts(
    store: Store,
) -> None:
    """Attempts have no foreign key to their deliveries (its check took a tenth of the
    server's CPU per push): deleting an app must wait for a completion that holds its
    deliveries, then delete the attempts that completion logged."""
    assert isinstance(store, PostgresStore)
    app = await store.create_app(name="gone", push_url="http://receiver.test/cdr", now=NOW)
    await store.ingest(app.id, [record("s1"), record("s2")], now=NOW)
    later = NOW + timedelta(seconds=1)
    claimed = await store.claim_due(
        now=later, limit=10, lease_until=later + timedelta(seconds=60), owner="worker"
    )
    ids, n = [item.delivery_id for item in claimed], len(claimed)
    outcomes = ([1.0] * n, [200] * n, [None] * n, [None] * n, ["ok"] * n)
    args = (ids, [1] * n, [later] * n, *outcomes, ["delivered"] * n, [None] * n, "worker")
    async with store.pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute(COMPLETE, *args)
        deleting = asyncio.create_task(store.delete_app(app.id))
        await eventually(lambda: _waits_for_a_lock(store))
        await transaction.commit()
    await deleting
    assert await store.pool.fetchval("SELECT count(*) FROM attempts") == 0
    assert await store.pool.fetchval("SELECT count(*) FROM deliveries") == 0


async def _waits_for_a_lock(store: PostgresStore) -> bool:
    waiting = await store.pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    return bool(waiting)


async def test_a_connection_given_back_inside_a_transaction_is_rolled_back(store: Store) -> None:
    """The pool skips asyncpg's reset round trip, except for what must be undone."""
    assert isinstance(store, PostgresStore)
    async with store.pool.acquire() as conn:
        await conn.execute("BEGIN")
        await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (999, 'x')")
    async with store.pool.acquire() as conn:
        assert not conn.is_in_transaction()
        assert (
            await conn.fetchval("SELECT count(*) FROM schema_migrations WHERE version = 999") == 0
        )
