"""Claiming with many idle apps: the claim's cost against the same work among few apps.

    .venv/bin/python bench/apps.py [--apps 10000] [--busy 10] [--claims 100] [--repeat 3]
                                   [--postgres URL] [--json PATH]

A CPaaS platform has thousands of voice applications, most of them quiet at any moment.
For each backend (SQLite; PostgreSQL too with ``--postgres``), two stores hold the same
work: ``--busy`` apps with 200 due deliveries each; ``few`` (the reference) has 100 apps in
all, ``many`` has ``--apps``. Claims of 16 (a dispatcher under light load claims a few at a
time), ``--claims`` of them a run, kinds alternated, ``--repeat`` rounds: the median
claim's time and the ratio few / many (1.0: idle apps cost the claim nothing).
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ccpush.store import Store, open_store
from common import (
    DEFAULT_POSTGRES,
    load_average,
    make_records,
    run_benchmark,
    store_url,
    with_load,
)

PER_BUSY_APP = 200
CLAIM = 16
FEW = 100


async def fill(store: Store, apps: int, busy: int) -> None:
    now = datetime.now(UTC)
    ids = [
        (await store.create_app(name=f"app {n}", push_url="http://127.0.0.1:9/x", now=now)).id
        for n in range(apps)
    ]
    records = make_records(busy * PER_BUSY_APP)
    for n in range(busy):
        chunk = records[n * PER_BUSY_APP : (n + 1) * PER_BUSY_APP]
        await store.ingest(ids[n * apps // busy], chunk, now=now)


async def claim_times(store: Store, claims: int) -> list[float]:
    now = datetime.now(UTC)
    times = []
    for _ in range(claims):
        began = time.perf_counter()
        claimed = await store.claim_due(
            now=now, limit=CLAIM, lease_until=now + timedelta(minutes=5), owner="bench"
        )
        times.append(time.perf_counter() - began)
        if not claimed:
            raise RuntimeError("the store ran out of due deliveries")
    return times


async def run_backend(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    medians: dict[str, list[float]] = {"few": [], "many": []}
    for round_number in range(1, args.repeat + 1):
        for kind, apps in (("few", FEW), ("many", args.apps)):
            async with store_url(backend, args.postgres or DEFAULT_POSTGRES) as (url, _):
                store = open_store(url)
                await store.open()
                try:
                    await fill(store, apps, args.busy)
                    median = statistics.median(await claim_times(store, args.claims))
                finally:
                    await store.close()
            medians[kind].append(median)
            print(
                f"  run {round_number}/{args.repeat} {backend} {kind:<5} {apps:>6,} apps:"
                f" claim of {CLAIM} p50 {median * 1000:.2f} ms",
                flush=True,
            )
    few, many = (statistics.median(medians[kind]) for kind in ("few", "many"))
    print(
        f"  {backend}: claim p50 with {args.apps:,} apps {many * 1000:.2f} ms,"
        f" with {FEW} {few * 1000:.2f} ms: ratio {few / many:.2f}"
    )
    return {"few_ms": few * 1000, "many_ms": many * 1000, "ratio": few / many}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    load_before = load_average()
    out: dict[str, Any] = {
        "settings": {key: getattr(args, key) for key in ("apps", "busy", "claims", "repeat")}
        | {"few": FEW, "claim": CLAIM}
    }
    out["sqlite"] = await run_backend(args, "sqlite")
    if args.postgres:
        out["postgres"] = await run_backend(args, "postgres")
    return with_load(out, load_before)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=10_000, help="apps in the 'many' store")
    parser.add_argument("--busy", type=int, default=10, help="apps with due work, in both")
    parser.add_argument("--claims", type=int, default=100, help="claims a run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", metavar="URL", help="also measure PostgreSQL")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write results here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run_benchmark(main, parse_args())
