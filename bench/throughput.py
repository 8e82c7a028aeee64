"""Durable pushes per second through ccpush, against the same receiver driven by bare aiohttp.

    .venv/bin/python bench/throughput.py [--records 20000] [--concurrency 64] [--repeat 3]
                                         [--batch-size 256] [--postgres URL] [--json PATH]
                                         [--cpu N] [--kinds K,K]

A raw asyncio keep-alive HTTP server (uvloop, separate process, 127.0.0.1) answers every
POST with 200 at once. Against it, alternately:

* ``bare``: one ``aiohttp.ClientSession`` (``TCPConnector(limit=C)``), C workers POSTing the
  same ~1 KB call-record body N times in total: the ceiling for this client on this machine
  (the reference of the ratio);
* ``bare-headers``: the same with the 10 headers of a ccpush push (Standard Webhooks and
  ccpush's own, values of the same length): what the contract's request costs the client;
* ``bare-reqwest``: the same with pyreqwest's client: the ceiling of the other HTTP client
  ccpush can use (``CCPUSH_HTTP_CLIENT=reqwest``), for comparison (ratios are still against
  ``bare``);
* ``ccpush-sqlite``: N records ingested with ``store.ingest`` in batches of 500 (not timed),
  then the real ``Service`` dispatching them (concurrency C), timed from ``service.start()``
  until every delivery is durably ``delivered`` (a listener counts completions; the count is
  then checked with ``count_by_state()``);
* ``ccpush-sqlite-Pproc``: the same with ``CCPUSH_PUSH_PROCESSES=P`` (``--push-processes``,
  default 2): the pushes' HTTP work in P child processes, started before the clock (as the
  reference's session is made before it);
* ``ccpush-sqlite-reqwest``: one process, as ``ccpush-sqlite``, with
  ``CCPUSH_HTTP_CLIENT=reqwest``;
* ``ccpush-sqlite-Pproc-reqwest``: both, P push processes whose requests reqwest makes;
* ``ccpush-postgres``, ``ccpush-postgres-Pproc``, ``ccpush-postgres-reqwest`` and
  ``ccpush-postgres-Pproc-reqwest``, with ``--postgres``: the same on
  PostgreSQL, in a throw-away schema ``bench_<random>``, dropped afterwards, then a
  ``CHECKPOINT`` so that the server does not write the run's changes out during the next run;
* ``ccpush-postgres-reqwest-Ddispatchers``: D dispatcher processes (``--dispatchers``,
  default 2) on one PostgreSQL store, as ``ccpush worker`` run D times scales out, each with
  C/D pushes in flight (C in all, as the reference) and reqwest; the records wait, held,
  until every process is ready (``bench/dispatchers.py``).

With ``--cpu N`` the benchmark's process, where the reference and ccpush run in turn, is
held on CPU N and the receiver on the others: the same one core for the client side of
both, as ``taskset -c N ccpush worker`` would hold a dispatcher. Dispatcher processes are
not held: they run on every CPU.

Prints each run (rate, this process's CPU time per push over all its threads, the event
loop's thread's alone, the child processes', and the PostgreSQL server's when it runs on
this machine), the median of each kind, the ratio of
medians (ccpush / bare) and the median of the per-round ratios, and the load average before
and after: on a shared machine, other processes' load moves the rates, so compare runs of
the same round and look at CPU per push too.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import uvloop
from pyreqwest.client import ClientBuilder

from ccpush.models import Completion, DeliveryState, NewRecord
from ccpush.senders import HttpClient, ProcessSender
from ccpush.service import Service
from ccpush.settings import Settings
from ccpush.store import Store, open_store
from ccpush.wire import CONTENT_TYPE, DEFAULT_ZONE, fixed_headers, push_headers
from common import (
    DEFAULT_POSTGRES,
    ReceiverProcess,
    machine_info,
    make_records,
    postmaster_of,
    process_cpu,
    server_cpu,
    store_url,
    write_json,
)
from dispatchers import DispatcherProcesses

INGEST_BATCH = 500
AIOHTTP: HttpClient = "aiohttp"
REQWEST: HttpClient = "reqwest"
HEADERS = {"Content-Type": CONTENT_TYPE}
CONTRACT_HEADERS = push_headers(
    fixed_headers(DEFAULT_ZONE),
    msg_id="dlv_1234567",
    timestamp=1764160000,
    signature="v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
    sequence=1234567,
    version=1,
    attempt=1,
)
"""A ccpush push's headers, with values as long as a real push's."""


class Timing(NamedTuple):
    seconds: float
    """Wall time of the measured part."""
    cpu: float
    """CPU time of this process (every thread) in the measured part."""
    loop_cpu: float
    """CPU time of the event loop's thread (this one) in the measured part."""
    child_cpu: float = 0.0
    """CPU time of the child processes (push processes, or dispatcher processes), if any, in
    the measured part."""
    server_cpu: float = 0.0
    """CPU time of the PostgreSQL server, if it runs here, in the measured part."""
    receiver_cpu: float = 0.0
    """CPU time of the receiver during the run (it does nothing in the untimed part)."""


Clocks = tuple[float, float, float, float, float]


def clocks(children: Sequence[int] = (), postmaster: int | None = None) -> Clocks:
    children_cpu = sum(process_cpu(pid) for pid in children)
    server = server_cpu(postmaster) if postmaster else 0.0
    return time.perf_counter(), time.process_time(), time.thread_time(), children_cpu, server


def since(start: Clocks, children: Sequence[int] = (), postmaster: int | None = None) -> Timing:
    now = clocks(children, postmaster)
    return Timing(*(later - earlier for later, earlier in zip(now, start, strict=True)))


# Bare aiohttp: the client's ceiling


async def run_bare(
    url: str, body: bytes, total: int, concurrency: int, headers: dict[str, str] = HEADERS
) -> Timing:
    """Seconds for ``total`` POSTs by ``concurrency`` workers over one session."""
    remaining = total

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"the receiver answered {response.status}")

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = clocks()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return since(began)


async def run_bare_reqwest(url: str, body: bytes, total: int, concurrency: int) -> Timing:
    """``run_bare`` with pyreqwest's client (``limit`` C, the contract's headers): the
    ceiling of the client ``CCPUSH_HTTP_CLIENT=reqwest`` uses, for comparison only."""
    remaining = total
    client = ClientBuilder().max_connections(concurrency).build()

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            request = client.post(url).headers(CONTRACT_HEADERS).body_bytes(body).build()
            response = await request.send()
            await response.bytes()
            if response.status != 200:
                raise RuntimeError(f"the receiver answered {response.status}")

    async with client:
        began = clocks()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return since(began)


# ccpush: ingest (untimed), then dispatch until every delivery is durably delivered


class DeliveredCounter:
    """An attempt listener: sets ``done`` when ``target`` deliveries are written."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.delivered = 0
        self.failed_attempts = 0
        self.done = asyncio.Event()

    def __call__(self, completion: Completion) -> None:
        if completion.next_state is DeliveryState.DELIVERED:
            self.delivered += 1
        else:
            self.failed_attempts += 1
            self.done.set()  # a bench run with failures is not a measurement
        if self.delivered >= self.target:
            self.done.set()


def bench_settings(
    database_url: str,
    data_dir: Path,
    concurrency: int,
    batch_size: int,
    processes: int = 0,
    client: HttpClient = "aiohttp",
) -> Settings:
    return Settings(
        http_client=client,
        push_processes=processes,
        data_dir=data_dir,
        database_url=database_url,
        concurrency=concurrency,
        per_host_concurrency=concurrency,
        batch_size=batch_size,
        allowed_target_networks="127.0.0.0/8",
        only_allowed_targets=True,
    )


async def ingest_all(store: Store, url: str | None, records: list[NewRecord]) -> str:
    """One app pushing to ``url`` (None: its records are held until it has an address),
    and ``records`` for it; the app's id."""
    app = await store.create_app(name="bench", push_url=url, now=datetime.now(UTC))
    for start in range(0, len(records), INGEST_BATCH):
        batch = records[start : start + INGEST_BATCH]
        await store.ingest(app.id, batch, now=datetime.now(UTC))
    return app.id


async def run_ccpush(
    settings: Settings, url: str, records: list[NewRecord], postmaster: int | None = None
) -> Timing:
    """Seconds from ``service.start()`` until every record is durably delivered; and the
    CPU time of this process, its push processes and the PostgreSQL server (``postmaster``,
    if it runs here)."""
    store = open_store(settings.store_url)
    await store.open()
    try:
        await ingest_all(store, url, records)
    except BaseException:
        await store.close()
        raise
    counter = DeliveredCounter(len(records))
    service = Service(settings, store=store, listeners=[counter])
    sender = service.sender
    await sender.start()  # push processes, if any, start before the clock, as the
    # reference's session is made before it
    children = sender.pids if isinstance(sender, ProcessSender) else []
    began = clocks(children, postmaster)
    await service.start()
    try:
        await asyncio.wait_for(counter.done.wait(), timeout=600)
        elapsed = since(began, children, postmaster)
        counts = await store.count_by_state()
    finally:
        await service.stop()
    if counter.failed_attempts or counts[DeliveryState.DELIVERED] != len(records):
        raise RuntimeError(f"not all delivered: {dict(counts)}, {counter.failed_attempts} failed")
    return elapsed


async def run_ccpush_on(
    backend: str,
    pg_url: str,
    url: str,
    records: list[NewRecord],
    concurrency: int,
    batch_size: int,
    processes: int,
    client: HttpClient,
) -> Timing:
    """``run_ccpush`` on a fresh store: SQLite in a temporary directory, or PostgreSQL in a
    throw-away schema (its server's CPU measured)."""
    async with store_url(backend, pg_url) as (db_url, data_dir):
        settings = bench_settings(db_url, data_dir, concurrency, batch_size, processes, client)
        postmaster = await postmaster_of(pg_url) if backend == "postgres" else None
        return await run_ccpush(settings, url, records, postmaster)


async def run_ccpush_dispatchers(
    pg_url: str,
    url: str,
    records: list[NewRecord],
    concurrency: int,
    batch_size: int,
    dispatchers: int,
    client: HttpClient,
) -> Timing:
    """``dispatchers`` processes on one PostgreSQL store, ``concurrency`` shared between
    them: the records are held (their app has no address) until every process is ready;
    the clock starts when the address is set and they are told to go."""
    postmaster = await postmaster_of(pg_url)
    async with store_url("postgres", pg_url) as (db_url, data_dir):
        share = concurrency // dispatchers
        settings = bench_settings(db_url, data_dir, share, batch_size, 0, client)
        store = open_store(db_url)
        await store.open()
        try:
            app_id = await ingest_all(store, None, records)
            async with DispatcherProcesses([settings] * dispatchers) as running:
                await store.update_app(app_id, now=datetime.now(UTC), push_url=url)
                began = clocks(running.pids, postmaster)
                running.go()
                await running.wait_delivered(len(records), within=600)
                elapsed = since(began, running.pids, postmaster)
            counts = await store.count_by_state()
        finally:
            await store.close()
    if counts[DeliveryState.DELIVERED] != len(records):
        raise RuntimeError(f"not all delivered: {dict(counts)}")
    return elapsed


# Running, reporting


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="N, per run")
    parser.add_argument("--concurrency", type=int, default=64, help="C, requests in flight")
    parser.add_argument("--batch-size", type=int, default=256, help="ccpush claim batch size")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each kind, alternated")
    parser.add_argument(
        "--push-processes", type=int, default=2, help="P, for the ccpush-*-Pproc kinds"
    )
    parser.add_argument(
        "--dispatchers",
        type=int,
        default=2,
        help="D, for the ccpush-postgres-reqwest-Ddispatchers kind (C/D in flight each)",
    )
    parser.add_argument("--postgres", metavar="URL", help="also measure ccpush on PostgreSQL")
    parser.add_argument(
        "--cpu",
        type=int,
        metavar="N",
        help="run this process (the reference and ccpush alike) on CPU N only, and the"
        " receiver on the others (the PostgreSQL server is left where it runs)",
    )
    parser.add_argument(
        "--kinds", metavar="K,K", help="measure only these kinds (and bare, the reference)"
    )
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write results here")
    return parser.parse_args(argv)


def report(kinds: list[str], timings: dict[str, list[Timing]], n: int) -> dict[str, Any]:
    rates = {kind: [n / t.seconds for t in timings[kind]] for kind in kinds}
    cpu_us = {kind: [t.cpu / n * 1e6 for t in timings[kind]] for kind in kinds}
    loop_us = {kind: [t.loop_cpu / n * 1e6 for t in timings[kind]] for kind in kinds}
    child_us = {kind: [t.child_cpu / n * 1e6 for t in timings[kind]] for kind in kinds}
    server_us = {kind: [t.server_cpu / n * 1e6 for t in timings[kind]] for kind in kinds}
    receiver_us = {kind: [t.receiver_cpu / n * 1e6 for t in timings[kind]] for kind in kinds}
    loop_busy = {kind: [t.loop_cpu / t.seconds for t in timings[kind]] for kind in kinds}
    medians = {kind: statistics.median(rates[kind]) for kind in kinds}
    for kind in kinds:
        spread = ", ".join(f"{rate:,.0f}" for rate in rates[kind])
        children, server = statistics.median(child_us[kind]), statistics.median(server_us[kind])
        print(
            f"  {kind:<20}{medians[kind]:>9,.0f} /s  {statistics.median(cpu_us[kind]):6.1f} us"
            f" CPU/push, {statistics.median(loop_us[kind]):6.1f} on the loop's thread"
            f" (busy {statistics.median(loop_busy[kind]):.0%})"
            + (f", {children:.1f} in child processes" if children else "")
            + (f", {server:.1f} in the PostgreSQL server" if server else "")
            + f"   (runs: {spread})"
        )
    ratios, paired = {}, {}
    for kind in kinds[1:]:
        ratios[kind] = medians[kind] / medians["bare"]
        pairs = [a / b for a, b in zip(rates[kind], rates["bare"], strict=True)]
        paired[kind] = statistics.median(pairs)
        print(
            f"  ratio {kind} / bare: {ratios[kind]:.2f} (ratio of medians;"
            f" median of per-round ratios {paired[kind]:.2f})"
        )
    return {
        "per_s": rates,
        "cpu_us_per_push": cpu_us,
        "loop_cpu_us_per_push": loop_us,
        "push_process_cpu_us_per_push": child_us,
        "postgres_server_cpu_us_per_push": server_us,
        "receiver_cpu_us_per_push": receiver_us,
        "loop_busy": loop_busy,
        "medians_per_s": medians,
        "ratios": ratios,
        "median_round_ratios": paired,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    info = machine_info()
    print("machine: " + ", ".join(f"{key} {value}" for key, value in info.items()))
    with ReceiverProcess(["ok"]) as receiver:
        if args.cpu is not None:
            pin(args.cpu, receiver.process.pid)
        url = receiver.url
        records = make_records(args.records)
        body = records[0].body
        print(f"payload: {len(body)} bytes; receiver {url} (pid {receiver.process.pid})")
        await run_bare(url, body, min(2_000, args.records), args.concurrency)  # warm-up
        runs = plan_runs(args, url, records, body)
        load_before = os.getloadavg()
        timings = await measure(runs, args, receiver)
        load_after = os.getloadavg()
    what = f"{args.records} pushes each, concurrency {args.concurrency}"
    print(f"\nmedians of {args.repeat} runs, {what}:")
    summary = report(list(runs), timings, args.records)
    loads = {"before": load_before, "after": load_after}
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}")
    settings = {
        key: getattr(args, key) for key in ("records", "concurrency", "batch_size", "repeat", "cpu")
    }
    return {
        "machine": info,
        "payload_bytes": len(body),
        "settings": settings,
        "load_average": loads,
        **summary,
    }


Runner = Callable[[], Coroutine[Any, Any, Timing]]


def pin(cpu: int, receiver: int) -> None:
    """This process on ``cpu``, the receiver on the other CPUs. Threads started later (the
    store's, reqwest's) inherit this thread's CPU, so it is set before any of them."""
    others = os.sched_getaffinity(0) - {cpu}
    if not others:
        raise SystemExit("--cpu needs a machine with two CPUs or more")
    os.sched_setaffinity(0, {cpu})
    os.sched_setaffinity(receiver, others)
    print(f"this process on CPU {cpu}, the receiver on CPUs {sorted(others)}")


def plan_runs(
    args: argparse.Namespace, url: str, records: list[NewRecord], body: bytes
) -> dict[str, Runner]:
    n, c, batch, pp = args.records, args.concurrency, args.batch_size, args.push_processes
    runs: dict[str, Runner] = {
        "bare": lambda: run_bare(url, body, n, c),
        "bare-headers": lambda: run_bare(url, body, n, c, CONTRACT_HEADERS),
        "bare-reqwest": lambda: run_bare_reqwest(url, body, n, c),
    }
    pg = args.postgres or DEFAULT_POSTGRES
    for backend in ("sqlite", "postgres") if args.postgres else ("sqlite",):
        # in one process or in push processes, with either client
        for processes, client, shape in (
            (0, AIOHTTP, ""),
            (pp, AIOHTTP, f"-{pp}proc"),
            (0, REQWEST, "-reqwest"),
            (pp, REQWEST, f"-{pp}proc-reqwest"),
        ):
            runs[f"ccpush-{backend}{shape}"] = functools.partial(
                run_ccpush_on, backend, pg, url, records, c, batch, processes, client
            )
    if args.postgres:
        runs[f"ccpush-postgres-reqwest-{args.dispatchers}dispatchers"] = functools.partial(
            run_ccpush_dispatchers, pg, url, records, c, batch, args.dispatchers, REQWEST
        )
    if args.kinds:
        chosen = {"bare", *args.kinds.split(",")}
        unknown = chosen - runs.keys()
        if unknown:
            raise SystemExit(f"unknown kinds: {', '.join(sorted(unknown))}")
        runs = {kind: run for kind, run in runs.items() if kind in chosen}
    return runs


async def measure(
    runs: dict[str, Runner], args: argparse.Namespace, receiver: ReceiverProcess
) -> dict[str, list[Timing]]:
    timings: dict[str, list[Timing]] = {kind: [] for kind in runs}
    for round_number in range(1, args.repeat + 1):
        for kind, run in runs.items():
            receiver.take_log()  # the receiver keeps what arrived: start each run empty
            before = process_cpu(receiver.process.pid)
            timing = await run()
            timing = timing._replace(receiver_cpu=process_cpu(receiver.process.pid) - before)
            timings[kind].append(timing)
            print(
                f"run {round_number}/{args.repeat} {kind:<20}"
                f"{args.records / timing.seconds:>9,.0f} /s  ({timing.seconds:.2f} s,"
                f" {timing.cpu / args.records * 1e6:.1f} us CPU/push,"
                f" {timing.loop_cpu / args.records * 1e6:.1f} on the loop's thread,"
                f" {timing.child_cpu / args.records * 1e6:.1f} in child processes,"
                f" {timing.server_cpu / args.records * 1e6:.1f} in the PostgreSQL server)",
                flush=True,
            )
    return timings


if __name__ == "__main__":
    arguments = parse_args()
    write_json(arguments.json, uvloop.run(main(arguments)))
    sys.exit(0)
