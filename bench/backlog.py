"""Claiming from a backlog of a million pending deliveries, against an empty store, and the
dispatcher's peak memory over that backlog.

    .venv/bin/python bench/backlog.py [--backlog 1000000] [--claims 100000] [--repeat 3]
                                      [--dispatch-seconds 15] [--postgres URL] [--json PATH]

For each backend (SQLite; PostgreSQL too with ``--postgres``):

* ``backlog``: a store with ``--backlog`` pending deliveries, all due, over 100 apps (one in
  ten a retry), written with direct SQL in a few statements (1 KB records);
* ``empty`` (the reference, same run): a store with only the ``--claims`` deliveries that
  are claimed.

Claim throughput: deliveries per second through ``claim_due`` (batches of 256, as the
dispatcher claims; its time alone), and through claims and completions (``complete``,
every one delivered), ``--claims`` of them per run, kinds alternated, ``--repeat`` rounds,
medians; each claim's time is kept too. On PostgreSQL each run starts on a vacuumed store
(``vacuumed``): the backlog store serves every round. SQLite copies its log back into the
database every 40 MB of writes, in the commit that crosses the mark (tens of
milliseconds): runs long enough to hold several such checkpoints each measure them alike
(with 20,000 claims a run, whether one fell in a run or not moved the ratio between 0.75
and 0.93).

Peak memory: ``Service`` (dispatcher, defaults) in its own process, opened on the backlog
store, pushing to a receiver process that answers at once for ``--dispatch-seconds``: the
process's peak resident memory (VmHWM), before and after dispatching.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import statistics
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvloop

from ccpush.models import Completion, DeliveryState, Outcome
from ccpush.store import Store, open_store
from common import (
    ADMIN_TOKEN,
    DEFAULT_POSTGRES,
    ReceiverProcess,
    load_average,
    make_records,
    peak_rss_mb,
    percentile,
    run_benchmark,
    store_url,
    with_load,
)

APPS = 100
BATCH = 256


async def fill(store: Store, url: str, count: int) -> float:
    """``count`` pending deliveries, all due, over ``APPS`` apps (a retry in ten): seconds."""
    now = datetime.now(UTC)
    apps = [
        (await store.create_app(name=f"backlog {n}", push_url=url, now=now)).id for n in range(APPS)
    ]
    body = make_records(1)[0].body
    began = time.perf_counter()
    since = now - timedelta(hours=1)
    if type(store).__name__ == "PostgresStore":
        await _fill_postgres(store, apps, body, count, since)
    else:
        await _fill_sqlite(store, apps, body, count, since)
    return time.perf_counter() - began


async def _fill_sqlite(
    store: Store, apps: list[str], body: bytes, count: int, since: datetime
) -> None:
    db = store._conn  # type: ignore[attr-defined]
    start = since.timestamp()

    def write() -> None:
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "CREATE TEMP TABLE app_of AS SELECT row_number() OVER (ORDER BY id) - 1 AS k, id"
            " FROM apps WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(apps),),
        )
        db.execute(
            "INSERT INTO call_records (id, app_id, call_session_id, call_start, received_at,"
            " version) WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n"
            " WHERE i < ? - 1) SELECT i + 1, (SELECT id FROM app_of WHERE k = i % ?),"
            " 'backlog-' || i, ?, ? + i * 0.0001, 1 FROM n",
            (count, len(apps), start, start),
        )
        db.execute(
            "INSERT INTO record_versions (id, record_id, app_id, version, seq, body,"
            " received_at) SELECT id, id, app_id, 1, (id - 1) / ? + 1, ?, received_at"
            " FROM call_records WHERE call_session_id LIKE 'backlog-%'",
            (len(apps), body),
        )
        db.execute(
            "INSERT INTO deliveries (id, record_id, version_id, app_id, state, attempts,"
            " next_attempt_at, first_attempt_at, created_at, updated_at)"
            " SELECT id, id, id, app_id, 'pending', CASE WHEN id % 10 = 0 THEN 1 ELSE 0 END,"
            " received_at, CASE WHEN id % 10 = 0 THEN received_at END, received_at,"
            " received_at FROM call_records WHERE call_session_id LIKE 'backlog-%'"
        )
        db.execute(
            "UPDATE apps SET last_seq = (SELECT count(*) FROM call_records"
            " WHERE call_records.app_id = apps.id)"
        )
        db.execute("DROP TABLE app_of")
        db.execute("COMMIT")
        db.execute("ANALYZE")
        # Measure claims, not the copy of what was just written back to the database.
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    await store._run(write)  # type: ignore[attr-defined]


async def _fill_postgres(
    store: Store, apps: list[str], body: bytes, count: int, since: datetime
) -> None:
    pool = store.pool  # type: ignore[attr-defined]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO call_records (id, app_id, call_session_id, call_start, received_at,"
            " version) OVERRIDING SYSTEM VALUE"
            " SELECT i + 1, ($1::text[])[i % $2 + 1], 'backlog-' || i, $3::timestamptz,"
            " $3::timestamptz + i * interval '100 microseconds', 1"
            " FROM generate_series(0, $4 - 1) AS i",
            apps,
            len(apps),
            since,
            count,
        )
        await conn.execute(
            "INSERT INTO record_versions (id, record_id, app_id, version, seq, body, received_at)"
            " OVERRIDING SYSTEM VALUE SELECT id, id, app_id, 1, (id - 1) / $1 + 1, $2,"
            " received_at FROM call_records",
            len(apps),
            body,
        )
        await conn.execute(
            "INSERT INTO deliveries (id, record_id, version_id, app_id, state, attempts,"
            " next_attempt_at, first_attempt_at, created_at, updated_at) OVERRIDING SYSTEM VALUE"
            " SELECT id, id, id, app_id, 'pending', CASE WHEN id % 10 = 0 THEN 1 ELSE 0 END,"
            " received_at, CASE WHEN id % 10 = 0 THEN received_at END, received_at, received_at"
            " FROM call_records"
        )
        await conn.execute(
            "UPDATE apps SET last_seq = (SELECT count(*) FROM call_records"
            " WHERE call_records.app_id = apps.id)"
        )
        for table in ("call_records", "record_versions", "deliveries"):
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                f" (SELECT max(id) FROM {table}))"
            )


async def vacuumed(store: Store) -> Store:
    """The store, its deliveries vacuumed and analyzed if on PostgreSQL: each run, on either
    store, starts as autovacuum would leave it. (The backlog store is used by every round:
    unvacuumed, the dead index entries of the rounds before slow its later claims, as
    they would until autovacuum ran: 12,300 and 9,800 claims/s in rounds 2 and 3 against
    15,100 in round 1, when the empty store, always new, measured 15,500.)"""
    pool = getattr(store, "pool", None)
    if pool is not None:
        async with pool.acquire() as conn:
            await conn.execute("VACUUM ANALYZE deliveries")
    return store


async def claim_run(store: Store, count: int) -> dict[str, Any]:
    """Claim and complete ``count`` deliveries in batches of ``BATCH``, as the dispatcher
    does; deliveries/s and each claim's time."""
    done, claims = 0, []
    began = time.perf_counter()
    while done < count:
        now = datetime.now(UTC)
        started = time.perf_counter()
        claimed = await store.claim_due(
            now=now,
            limit=min(BATCH, count - done),
            lease_until=now + timedelta(seconds=60),
            owner="bench",
        )
        claims.append(time.perf_counter() - started)
        if not claimed:
            raise RuntimeError(f"nothing left to claim after {done}")
        outcome = Outcome(
            started_at=now,
            duration_ms=1.0,
            status_code=200,
            error_kind=None,
            error=None,
            response_excerpt='{"ok":true}',
        )
        await store.complete(
            [
                Completion(
                    claimed=item,
                    outcome=outcome,
                    next_state=DeliveryState.DELIVERED,
                    next_attempt_at=None,
                )
                for item in claimed
            ],
            owner="bench",
        )
        done += len(claimed)
    seconds = time.perf_counter() - began
    return {
        "per_s": done / seconds,
        "claims_per_s": done / sum(claims),
        "claim_p50_ms": percentile(claims, 0.5) * 1000,
        "claim_p99_ms": percentile(claims, 0.99) * 1000,
    }


def dispatch_main(url: str, push_url: str, seconds: float, conn: Any) -> None:
    """The memory probe's process: a ``Service`` dispatching over the backlog."""

    async def run() -> dict[str, Any]:
        import tempfile

        from ccpush.service import Service
        from ccpush.settings import Settings

        with tempfile.TemporaryDirectory() as data_dir:
            settings = Settings(
                data_dir=Path(data_dir),
                database_url=url,
                admin_token=ADMIN_TOKEN,
                allowed_target_networks="127.0.0.0/8",
                only_allowed_targets=True,
            )
            delivered = 0

            def count(done: Completion) -> None:
                nonlocal delivered
                delivered += done.next_state is DeliveryState.DELIVERED

            service = Service(settings, listeners=[count])
            await service.store.open()
            rss_before = peak_rss_mb(_pid())
            began = time.perf_counter()
            await service.start()
            await asyncio.sleep(seconds)
            await service.stop()
            return {
                "delivered": delivered,
                "per_s": delivered / (time.perf_counter() - began),
                "peak_rss_mb_before": rss_before,
                "peak_rss_mb": peak_rss_mb(_pid()),
            }

    conn.send(uvloop.run(run()))


def _pid() -> int:
    import os

    return os.getpid()


def dispatch_probe(url: str, push_url: str, seconds: float) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=dispatch_main, args=(url, push_url, seconds, child))
    process.start()
    if not parent.poll(seconds + 120):
        process.kill()
        raise RuntimeError("the dispatcher probe did not finish")
    result: dict[str, Any] = parent.recv()
    process.join()
    return result


async def run_backend(args: argparse.Namespace, backend: str, postgres: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with (
        store_url(backend, postgres) as (
            backlog_url,
            _,
        ),
        _receiver(["ok"]) as receiver,
    ):
        backlog = open_store(backlog_url)
        await backlog.open()
        try:
            out["fill_seconds"] = await fill(backlog, receiver.url, args.backlog)
            print(
                f"  {backend}: {args.backlog:,} pending deliveries written in"
                f" {out['fill_seconds']:.1f} s",
                flush=True,
            )
            runs: dict[str, list[dict[str, Any]]] = {"empty": [], "backlog": []}
            for round_number in range(1, args.repeat + 1):
                async with store_url(backend, postgres) as (empty_url, _):
                    empty = open_store(empty_url)
                    await empty.open()
                    try:
                        await fill(empty, receiver.url, args.claims)
                        runs["empty"].append(await claim_run(await vacuumed(empty), args.claims))
                    finally:
                        await empty.close()
                runs["backlog"].append(await claim_run(await vacuumed(backlog), args.claims))
                for kind in runs:
                    run = runs[kind][-1]
                    print(
                        f"  run {round_number}/{args.repeat} {backend} {kind:<8}"
                        f" claims {run['claims_per_s']:>8,.0f} deliveries/s; claims and"
                        f" completions {run['per_s']:>8,.0f}/s (claim of {BATCH} p50"
                        f" {run['claim_p50_ms']:.1f} ms, p99"
                        f" {run['claim_p99_ms']:.1f} ms)",
                        flush=True,
                    )
        finally:
            await backlog.close()
        for kind, kind_runs in runs.items():
            out[kind] = {
                "per_s": statistics.median(r["per_s"] for r in kind_runs),
                "claims_per_s": statistics.median(r["claims_per_s"] for r in kind_runs),
                "claim_p50_ms": statistics.median(r["claim_p50_ms"] for r in kind_runs),
                "claim_p99_ms": statistics.median(r["claim_p99_ms"] for r in kind_runs),
                "runs": [round(r["per_s"]) for r in kind_runs],
            }
        out["ratio"] = out["backlog"]["claims_per_s"] / out["empty"]["claims_per_s"]
        out["cycle_ratio"] = out["backlog"]["per_s"] / out["empty"]["per_s"]
        out["dispatcher"] = dispatch_probe(backlog_url, receiver.url, args.dispatch_seconds)
    print(
        f"  {backend}: claim throughput with the backlog {out['backlog']['claims_per_s']:,.0f}/s"
        f" vs empty {out['empty']['claims_per_s']:,.0f}/s: ratio {out['ratio']:.2f} (claims and"
        f" completions: {out['cycle_ratio']:.2f}); dispatcher over the"
        f" backlog: {out['dispatcher']['per_s']:,.0f} pushes/s, peak RSS"
        f" {out['dispatcher']['peak_rss_mb']:.0f} MB (before dispatching"
        f" {out['dispatcher']['peak_rss_mb_before']:.0f} MB)",
        flush=True,
    )
    return out


@contextlib.asynccontextmanager
async def _receiver(behaviours: list[str]) -> AsyncIterator[ReceiverProcess]:
    with ReceiverProcess(behaviours) as receiver:
        yield receiver


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--claims", type=int, default=100_000, help="deliveries per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dispatch-seconds", type=float, default=15.0)
    parser.add_argument("--postgres", metavar="URL", help="also measure on PostgreSQL")
    parser.add_argument("--skip-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write results here")
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    load_before = load_average()
    out: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k != "json"}}
    backends = ({} if args.skip_sqlite else {"sqlite": DEFAULT_POSTGRES}) | (
        {"postgres": args.postgres} if args.postgres else {}
    )
    for backend, postgres in backends.items():
        out[backend] = await run_backend(args, backend, postgres)
    return with_load(out, load_before)


if __name__ == "__main__":
    run_benchmark(main, parse_args())
