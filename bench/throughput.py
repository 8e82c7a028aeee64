"""Durable pushes per second through ccpush, against the same receiver driven by bare aiohttp.

    .venv/bin/python bench/throughput.py [--records 20000] [--concurrency 64] [--repeat 3]
                                         [--batch-size 256] [--postgres URL] [--json PATH]

A raw asyncio keep-alive HTTP server (uvloop, separate process, 127.0.0.1) answers every
POST with 200 at once. Against it, alternately:

* ``bare``: one ``aiohttp.ClientSession`` (``TCPConnector(limit=C)``), C workers POSTing the
  same ~1 KB call-record body N times in total: the ceiling for this client on this machine;
* ``ccpush``: N records ingested with ``store.ingest`` in batches of 500 (not timed), then the
  real ``Service`` dispatching them (concurrency C), timed from ``service.start()`` until
  every delivery is durably ``delivered`` (a listener counts completions; the count is then
  checked with ``count_by_state()``). SQLite always; PostgreSQL too with ``--postgres``
  (in a throw-away schema ``bench_<random>``, dropped afterwards, then a ``CHECKPOINT``
  so that the server does not write the run's changes out during the next run).

Prints each run (rate, and this process's CPU time per push over all its threads), the median
of each kind, the ratio of medians (ccpush / bare) and the median of the per-round ratios, and
the load average before and after: on a shared machine, other processes' load moves the
rates, so compare runs of the same round and look at CPU per push too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import uvloop

import ccpush
from ccpush.models import Completion, DeliveryState, NewRecord
from ccpush.record import CONTENT_TYPE, CallRecord, parse_zone
from ccpush.service import Service
from ccpush.settings import Settings
from ccpush.store import Store, open_store

INGEST_BATCH = 500
HEADERS = {"Content-Type": CONTENT_TYPE}
ZONE = parse_zone("+08:00")


class Timing(NamedTuple):
    seconds: float
    """Wall time of the measured part."""
    cpu: float
    """CPU time of this process (every thread) in the measured part."""


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> Timing:
    return Timing(time.perf_counter() - start[0], time.process_time() - start[1])


# The receiver: raw asyncio + uvloop, keep-alive, in its own process

RESPONSE = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
)


class ReceiverProtocol(asyncio.Protocol):
    """Parses requests by Content-Length and answers each with 200, keeping the connection."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            total = end + 4 + _content_length(bytes(buffer[:end]))
            if len(buffer) < total:
                return
            del buffer[:total]
            self.transport.write(RESPONSE)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def receiver_main(conn: Connection) -> None:
    """The receiver process: listen on a free port, send it back, serve until killed."""

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(ReceiverProtocol, "127.0.0.1", 0, backlog=1024)
        conn.send(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    uvloop.run(serve())


def start_receiver() -> tuple[multiprocessing.Process, str]:
    parent, child = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=receiver_main, args=(child,), daemon=True, name="bench-receiver"
    )
    process.start()
    if not parent.poll(30):
        process.kill()
        raise RuntimeError("the receiver did not start")
    port = parent.recv()
    return process, f"http://127.0.0.1:{port}/cc-http/call-records"


# The payload: a realistic call record of about 1 KB


def make_record(index: int) -> CallRecord:
    sid = f"2311171342{index:07d}"
    return CallRecord(
        callId=f"231117141223{index:08d}",
        callSessionId=sid,
        called="918613237978737",
        calledInfo="India, Reliance Jio Infocomm mobile, Maharashtra circle",
        caller="918069451200",
        ccode="91",
        ccodeName="India",
        agentName="Priya Sharma",
        agentGroupName="TAOTAO",
        agentAccount="priya.sharma@acme-callcenter.example",
        callDuration=15,
        callType=3,
        hangupCode="200",
        hangupReason=1,
        hangingDirection=0,
        labels=["Intended customers", "High level"],
        baseCost="0.0095",
        cost="0.0143",
        remark=(
            "Customer asked about the annual plan and the family add-on; wants a quote by"
            " e-mail and a callback on Monday after 10:00 local time. Prefers Hindi or English."
            " Previous ticket #48213 closed; no complaint open. Do not call on weekends."
        ),
        callStartTime="2023-11-17 13:42:30",
        answerTime="2023-11-17 13:42:33",
        callEndTime="2023-11-17 13:42:48",
        voiceUrl=(
            f"https://recordings.example.com/cc/2023/11/17/{sid}.mp3"
            "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=604800"
            "&X-Amz-Signature=3f1d2c4b5a6978e0f1d2c3b4a5968778695a4b3c2d1e0f9e8d7c6b5a49382716"
        ),
    )


def make_records(count: int) -> list[NewRecord]:
    records = []
    for index in range(count):
        record = make_record(index)
        records.append(
            NewRecord(
                call_session_id=record.callSessionId,
                body=record.push_body(),
                call_start=record.call_start(ZONE),
            )
        )
    return records


# Bare aiohttp: the client's ceiling


async def run_bare(url: str, body: bytes, total: int, concurrency: int) -> Timing:
    """Seconds for ``total`` POSTs by ``concurrency`` workers over one session."""
    remaining = total

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with session.post(url, data=body, headers=HEADERS) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"the receiver answered {response.status}")

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = clocks()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
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


def bench_settings(store_url: str, data_dir: str, concurrency: int, batch_size: int) -> Settings:
    return Settings(
        data_dir=Path(data_dir),
        database_url=store_url,
        concurrency=concurrency,
        per_host_concurrency=concurrency,
        batch_size=batch_size,
        allowed_target_networks="127.0.0.0/8",
        only_allowed_targets=True,
    )


async def ingest_all(store: Store, url: str, records: list[NewRecord]) -> None:
    app = await store.create_app(name="bench", push_url=url, now=datetime.now(UTC))
    for start in range(0, len(records), INGEST_BATCH):
        batch = records[start : start + INGEST_BATCH]
        await store.ingest(app.id, batch, now=datetime.now(UTC))


async def run_ccpush(settings: Settings, url: str, records: list[NewRecord]) -> Timing:
    """Seconds from ``service.start()`` until every record is durably delivered."""
    store = open_store(settings.store_url)
    await store.open()
    try:
        await ingest_all(store, url, records)
    except BaseException:
        await store.close()
        raise
    counter = DeliveredCounter(len(records))
    service = Service(settings, store=store, listeners=[counter])
    began = clocks()
    await service.start()
    try:
        await asyncio.wait_for(counter.done.wait(), timeout=600)
        elapsed = since(began)
        counts = await store.count_by_state()
    finally:
        await service.stop()
    if counter.failed_attempts or counts[DeliveryState.DELIVERED] != len(records):
        raise RuntimeError(f"not all delivered: {dict(counts)}, {counter.failed_attempts} failed")
    return elapsed


async def run_ccpush_sqlite(
    url: str, records: list[NewRecord], concurrency: int, batch_size: int
) -> Timing:
    with tempfile.TemporaryDirectory(prefix="ccpush-bench-") as tmp:
        store_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        settings = bench_settings(store_url, tmp, concurrency, batch_size)
        return await run_ccpush(settings, url, records)


async def run_ccpush_postgres(
    pg_url: str, url: str, records: list[NewRecord], concurrency: int, batch_size: int
) -> Timing:
    schema = f"bench_{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory(prefix="ccpush-bench-") as tmp:
        settings = bench_settings(with_schema(pg_url, schema), tmp, concurrency, batch_size)
        try:
            return await run_ccpush(settings, url, records)
        finally:
            await drop_schema(pg_url, schema)


def with_schema(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query), ("schema", schema)]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def drop_schema(url: str, schema: str) -> None:
    import asyncpg

    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "schema"]
    dsn = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(query)))
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        # Write the run's changes out now, not during the next run (another kind's).
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


# Running, reporting


def machine_info() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "uvloop": uvloop.__version__,
        "sqlite": sqlite3.sqlite_version,
        "ccpush": f"{ccpush.__version__} ({Path(ccpush.__file__).parent})",
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="N, per run")
    parser.add_argument("--concurrency", type=int, default=64, help="C, requests in flight")
    parser.add_argument("--batch-size", type=int, default=256, help="ccpush claim batch size")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each kind, alternated")
    parser.add_argument("--postgres", metavar="URL", help="also measure ccpush on PostgreSQL")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write results here")
    return parser.parse_args(argv)


def report(kinds: list[str], timings: dict[str, list[Timing]], n: int) -> dict[str, Any]:
    rates = {kind: [n / t.seconds for t in timings[kind]] for kind in kinds}
    cpu_us = {kind: [t.cpu / n * 1e6 for t in timings[kind]] for kind in kinds}
    medians = {kind: statistics.median(rates[kind]) for kind in kinds}
    for kind in kinds:
        spread = ", ".join(f"{rate:,.0f}" for rate in rates[kind])
        cpu = statistics.median(cpu_us[kind])
        print(f"  {kind:<16}{medians[kind]:>9,.0f} /s  {cpu:6.1f} us CPU/push   (runs: {spread})")
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
        "medians_per_s": medians,
        "ratios": ratios,
        "median_round_ratios": paired,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    info = machine_info()
    print("machine: " + ", ".join(f"{key} {value}" for key, value in info.items()))
    process, url = start_receiver()
    try:
        records = make_records(args.records)
        body = records[0].body
        print(f"payload: {len(body)} bytes; receiver {url} (pid {process.pid})")
        await run_bare(url, body, min(2_000, args.records), args.concurrency)  # warm-up
        runs = plan_runs(args, url, records, body)
        load_before = os.getloadavg()
        timings = await measure(runs, args)
        load_after = os.getloadavg()
    finally:
        process.kill()
        process.join()
    what = f"{args.records} pushes each, concurrency {args.concurrency}"
    print(f"\nmedians of {args.repeat} runs, {what}:")
    summary = report(list(runs), timings, args.records)
    loads = {"before": load_before, "after": load_after}
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}")
    settings = {
        key: getattr(args, key) for key in ("records", "concurrency", "batch_size", "repeat")
    }
    return {
        "machine": info,
        "payload_bytes": len(body),
        "settings": settings,
        "load_average": loads,
        **summary,
    }


Runner = Callable[[], Coroutine[Any, Any, Timing]]


def plan_runs(
    args: argparse.Namespace, url: str, records: list[NewRecord], body: bytes
) -> dict[str, Runner]:
    n, c, batch = args.records, args.concurrency, args.batch_size
    runs: dict[str, Runner] = {
        "bare": lambda: run_bare(url, body, n, c),
        "ccpush-sqlite": lambda: run_ccpush_sqlite(url, records, c, batch),
    }
    if args.postgres:
        pg = args.postgres
        runs["ccpush-postgres"] = lambda: run_ccpush_postgres(pg, url, records, c, batch)
    return runs


async def measure(runs: dict[str, Runner], args: argparse.Namespace) -> dict[str, list[Timing]]:
    timings: dict[str, list[Timing]] = {kind: [] for kind in runs}
    for round_number in range(1, args.repeat + 1):
        for kind, run in runs.items():
            timing = await run()
            timings[kind].append(timing)
            print(
                f"run {round_number}/{args.repeat} {kind:<16}"
                f"{args.records / timing.seconds:>9,.0f} /s  ({timing.seconds:.2f} s,"
                f" {timing.cpu / args.records * 1e6:.1f} us CPU/push)",
                flush=True,
            )
    return timings


if __name__ == "__main__":
    arguments = parse_args()
    results = uvloop.run(main(arguments))
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"results written to {arguments.json}")
    sys.exit(0)
