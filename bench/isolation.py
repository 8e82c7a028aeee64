"""Isolation: healthy apps' throughput and latency while other apps' receivers hang or crawl.

    .venv/bin/python bench/isolation.py [--apps 100] [--hanging 10] [--slow 10]
                                        [--slow-delay 2] [--rate 1000] [--seconds 60]
                                        [--json PATH]

Two runs of ``ccpush serve`` as shipped (SQLite; defaults: concurrency 128, 64 per host,
push timeout 15 s), each with ``--apps`` apps, every app pushing to its own port of a
receiver process (its own host, as far as the client's connection pools go):

* ``faulty``: ``--hanging`` apps' receivers read the push and never answer (each push ends
  at the 15 s timeout), ``--slow`` apps' answer after ``--slow-delay`` seconds, the others
  at once;
* ``healthy`` (the reference, same run): every receiver answers at once.

A load generator sends single records with an ingest key, open loop, ``--rate`` records/s
spread evenly over the apps, for ``--seconds``. For the apps that are healthy in both runs:
records delivered per second over the load (delivered within 5 s of its end), and latency
(receiver arrival - the 202, as in ``bench/latency.py``) p50/p99, faulty vs healthy.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from common import (
    CcpushServer,
    ReceiverProcess,
    create_apps,
    first_arrivals,
    ingest_key,
    latency_figures,
    load_average,
    offer,
    run_benchmark,
    store_url,
    with_load,
)


def behaviours(args: argparse.Namespace, faulty: bool) -> list[str]:
    healthy = args.apps - args.hanging - args.slow
    if not faulty:
        return ["ok"] * args.apps
    return ["ok"] * healthy + ["hang"] * args.hanging + [str(args.slow_delay)] * args.slow


async def run(args: argparse.Namespace, faulty: bool) -> dict[str, Any]:
    kinds = behaviours(args, faulty)
    healthy = set(range(args.apps - args.hanging - args.slow))
    async with store_url("sqlite") as (url, data_dir):
        with ReceiverProcess(kinds) as receiver, CcpushServer(url, data_dir) as server:
            return await _measure(args, kinds, healthy, receiver, server)


async def _measure(
    args: argparse.Namespace,
    kinds: list[str],
    healthy: set[int],
    receiver: ReceiverProcess,
    server: CcpushServer,
) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        app_ids = await create_apps(session, server.base, receiver.urls)
        token = await ingest_key(session, server.base)
    urls = [f"{server.base}/v1/apps/{app}/call-records" for app in app_ids]
    await offer(urls, token, args.rate, 2.0, "warm-")
    await asyncio.sleep(1.0)
    receiver.take_log()
    cpu = server.cpu_seconds()
    sent = await offer(urls, token, args.rate, args.seconds, "iso-")
    wanted = sum(1 for sid in sent.acked if sent.app_of[sid] in healthy)
    await asyncio.sleep(5.0)
    log = receiver.take_log()
    server_cpu = server.cpu_seconds() - cpu
    rss = server.peak_rss_mb()
    arrivals = first_arrivals(log)
    by_sid = {
        sid: arrivals[sid] - at
        for sid, at in sent.acked.items()
        if sent.app_of[sid] in healthy and sid in arrivals
    }
    per_kind: dict[str, int] = {}
    for sid in arrivals:
        if sid in sent.app_of:
            kind = kinds[sent.app_of[sid]]
            per_kind[kind] = per_kind.get(kind, 0) + 1
    seconds = sent.ended - sent.started
    return {
        **latency_figures(list(by_sid.values())),
        "healthy_apps": len(healthy),
        "healthy_offered": wanted,
        "healthy_delivered": len(by_sid),
        "healthy_per_s": len(by_sid) / seconds,
        "offered_per_s": len(sent.sent) / seconds,
        "accepted": len(sent.acked),
        "failed_requests": len(sent.failures),
        "arrivals_by_behaviour": per_kind,
        "server_cpu_us_per_record": server_cpu / max(1, len(sent.acked)) * 1e6,
        "server_peak_rss_mb": rss,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--hanging", type=int, default=10, help="apps whose receiver hangs")
    parser.add_argument("--slow", type=int, default=10, help="apps whose receiver is slow")
    parser.add_argument("--slow-delay", type=float, default=2.0, help="seconds, slow receivers")
    parser.add_argument("--rate", type=float, default=1000.0, help="records/s offered")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write results here")
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    load_before = load_average()
    out: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k != "json"}}
    for name, faulty in (("healthy", False), ("faulty", True)):
        result = out[name] = await run(args, faulty)
        print(
            f"  {name:<8} healthy apps: {result['healthy_per_s']:7.1f} records/s delivered"
            f" ({result['healthy_delivered']:,} of {result['healthy_offered']:,}),"
            f" p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms,"
            f" max {result['max_ms']:.1f} ms; arrivals by receiver"
            f" {result['arrivals_by_behaviour']}; server {result['server_cpu_us_per_record']:.0f}"
            f" us CPU/record, peak RSS {result['server_peak_rss_mb']:.0f} MB",
            flush=True,
        )
    out["throughput_ratio"] = out["faulty"]["healthy_per_s"] / out["healthy"]["healthy_per_s"]
    print(
        f"  healthy apps keep {out['throughput_ratio']:.3f} of their throughput; p99"
        f" {out['faulty']['p99_ms']:.1f} ms with faulty apps vs {out['healthy']['p99_ms']:.1f} ms"
        " without"
    )
    return with_load(out, load_before)


if __name__ == "__main__":
    run_benchmark(main, parse_args())
