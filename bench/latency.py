"""End-to-end latency at a fixed offered load: from ingestion's 202 to the receiver's arrival.

    .venv/bin/python bench/latency.py [--rate 1000] [--seconds 60] [--apps 10]
                                      [--reference-seconds 15] [--postgres URL] [--json PATH]

``ccpush serve`` as shipped (defaults: concurrency 128, batch 256; SQLite, or PostgreSQL with
``--postgres``) pushes to a receiver process (one port per app, each answering 200 at once).
A load generator (this process) sends single records with a platform ingest key, open loop,
``--rate`` records/s spread over ``--apps`` apps, for ``--seconds``. For every record:
latency = arrival at the receiver - the moment the generator read its 202 (both
``time.monotonic()``, one clock for all processes on Linux). A push that arrived before the
client had read the 202 counts as 0 ms.

No backlog growth: every record must arrive, the pushes still waiting when the load stops
are counted, and p99 of the first and last 10 s are compared.

Reference, same run: the same generator POSTs the records straight to the receiver (bare
aiohttp, same rate, ``--reference-seconds``): the latency of one HTTP hop on this machine,
from sending to arrival.
"""

from __future__ import annotations

import argparse
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
    percentile,
    run_benchmark,
    store_url,
    wait_for_arrivals,
    with_load,
)


async def run_ccpush(args: argparse.Namespace, backend: str, postgres: str) -> dict[str, Any]:
    async with store_url(backend, postgres) as (url, data_dir):
        with ReceiverProcess(["ok"] * args.apps) as receiver, CcpushServer(url, data_dir) as server:
            return await _measure(args, receiver, server)


async def _measure(
    args: argparse.Namespace, receiver: ReceiverProcess, server: CcpushServer
) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        app_ids = await create_apps(session, server.base, receiver.urls)
        token = await ingest_key(session, server.base)
    urls = [f"{server.base}/v1/apps/{app}/call-records" for app in app_ids]
    # Warm-up: connections, caches, the first claims.
    await offer(urls, token, args.rate, 2.0, "warm-")
    await wait_for_arrivals(receiver, int(args.rate * 2.0), within=30)
    receiver.take_log()
    cpu = server.cpu_seconds()
    sent = await offer(urls, token, args.rate, args.seconds, "lat-")
    waiting_at_end = len(sent.acked) - receiver.count()
    complete = await wait_for_arrivals(receiver, len(sent.acked), within=30)
    server_cpu = server.cpu_seconds() - cpu
    log = receiver.take_log()
    rss = server.peak_rss_mb()
    arrivals = first_arrivals(log)
    by_sid = {sid: arrivals[sid] - at for sid, at in sent.acked.items() if sid in arrivals}
    latencies = list(by_sid.values())
    missing = [sid for sid in sent.acked if sid not in arrivals]
    first = [v for sid, v in by_sid.items() if sent.acked[sid] - sent.started < 10]
    last = [v for sid, v in by_sid.items() if sent.ended - sent.acked[sid] < 10]
    answers = [sent.acked[sid] - sent.sent[sid] for sid in sent.acked]
    figures = latency_figures(latencies)
    return {
        **figures,
        "offered": int(args.rate * args.seconds),
        "accepted": len(sent.acked),
        "failed_requests": len(sent.failures),
        "delivered": len(arrivals),
        "missing": len(missing),
        "all_delivered": complete and not missing,
        "duplicates": len(log) - len(arrivals),
        "before_answer": sum(1 for value in latencies if value <= 0),
        "waiting_when_load_stopped": max(0, waiting_at_end),
        "p99_first_10s_ms": percentile([max(0, v) * 1000 for v in first], 0.99),
        "p99_last_10s_ms": percentile([max(0, v) * 1000 for v in last], 0.99),
        "ingest_answer_p50_ms": percentile(answers, 0.5) * 1000,
        "ingest_answer_p99_ms": percentile(answers, 0.99) * 1000,
        "server_cpu_us_per_record": server_cpu / max(1, len(sent.acked)) * 1e6,
        "server_peak_rss_mb": rss,
    }


async def run_reference(args: argparse.Namespace) -> dict[str, Any]:
    """The same open-loop generator, POSTing straight to the receiver."""
    with ReceiverProcess(["ok"] * args.apps) as receiver:
        sent = await offer(receiver.urls, "-", args.rate, 2.0, "warm-")
        await wait_for_arrivals(receiver, len(sent.sent), within=30)
        receiver.take_log()
        sent = await offer(receiver.urls, "-", args.rate, args.reference_seconds, "ref-")
        await wait_for_arrivals(receiver, len(sent.sent), within=30)
        arrivals = first_arrivals(receiver.take_log())
    latencies = [arrivals[sid] - at for sid, at in sent.sent.items() if sid in arrivals]
    return {**latency_figures(latencies), "offered": len(sent.sent)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="records/s offered")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long")
    parser.add_argument("--apps", type=int, default=10, help="apps (receiver ports)")
    parser.add_argument("--reference-seconds", type=float, default=15.0)
    parser.add_argument("--postgres", metavar="URL", help="also measure on PostgreSQL")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write results here")
    return parser.parse_args(argv)


def show(name: str, figures: dict[str, Any]) -> None:
    print(
        f"  {name:<10} p50 {figures['p50_ms']:6.1f} ms  p95 {figures['p95_ms']:6.1f} ms"
        f"  p99 {figures['p99_ms']:6.1f} ms  max {figures['max_ms']:7.1f} ms"
        f"  ({figures['count']:,} records)"
    )


async def main(args: argparse.Namespace) -> dict[str, Any]:
    load_before = load_average()
    out: dict[str, Any] = {
        "settings": {
            "rate": args.rate,
            "seconds": args.seconds,
            "apps": args.apps,
            "reference_seconds": args.reference_seconds,
        }
    }
    out["reference"] = await run_reference(args)
    show("reference", out["reference"])
    backends = {"sqlite": ""} | ({"postgres": args.postgres} if args.postgres else {})
    for backend, postgres in backends.items():
        result = out[backend] = await run_ccpush(args, backend, postgres)
        show(backend, result)
        print(
            f"    accepted {result['accepted']:,} of {result['offered']:,}, delivered"
            f" {result['delivered']:,} (missing {result['missing']}, duplicates"
            f" {result['duplicates']}); waiting when the load stopped:"
            f" {result['waiting_when_load_stopped']}; p99 first 10 s"
            f" {result['p99_first_10s_ms']:.1f} ms, last 10 s {result['p99_last_10s_ms']:.1f} ms;"
            f" 202 in p50 {result['ingest_answer_p50_ms']:.1f} ms, p99"
            f" {result['ingest_answer_p99_ms']:.1f} ms; server"
            f" {result['server_cpu_us_per_record']:.0f} us CPU/record,"
            f" peak RSS {result['server_peak_rss_mb']:.0f} MB"
        )
    return with_load(out, load_before)


if __name__ == "__main__":
    run_benchmark(main, parse_args())
