"""A fleet of customers' HTTPS hosts on this machine, pushed to by ``ccpush serve`` with its
defaults: how late healthy customers' records arrive while some hosts are dead, hanging or
flaky.

    python bench/fleet.py --hosts 1000 --rate 400 --seconds 60

Each app has its own host on a distinct loopback address (127.1.x.y:8443), HTTPS with a
certificate from a ``trustme`` CA that ccpush trusts (``CCPUSH_CA_BUNDLE``). Hosts answer
after a log-normal delay (median 60 ms, p99 about 1.5 s); 2 % of them refuse connections (no
listener), 2 % read requests and never answer, 5 % answer 500 to a fifth of requests. The
receivers run in ``--receivers`` processes of their own. Records arrive through the API, one
per request, at ``--rate`` a second with Poisson arrivals, spread over the apps with a Zipf
skew (the biggest app gets ``--top-share`` of them), for ``--seconds``.

A healthy customer's lag is from the ingestion request's start to the push's arrival at its
host (before the host's own answer time). The run is made once per ``--runs`` entry:
``default`` (ccpush's defaults), or a number of pushes in flight (``CCPUSH_CONCURRENCY``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import multiprocessing
import os
import random
import resource
import ssl
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import trustme
import uvloop

from ccpush.capacity import default_concurrency
from common import (
    CcpushServer,
    _content_length,
    _session_id,
    auth_headers,
    ingest_key,
    load_average,
    machine_info,
    peak_rss_mb,
    percentile,
    process_cpu,
    record_json,
)

PORT = 8443
MEDIAN = 0.060
P99 = 1.5
SIGMA = math.log(P99 / MEDIAN) / 2.326
"""The log-normal's sigma: its 99th percentile is ``P99`` (z = 2.326)."""
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
FAIL = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
KINDS = ("ok", "dead", "hang", "flaky")


def address(index: int) -> str:
    """The loopback address of host ``index``: 127.1.0.1, 127.1.0.2... (never .0 or .255)."""
    return f"127.1.{index // 250}.{index % 250 + 1}"


def assign_kinds(
    hosts: int, seed: int, dead: float, hang: float, flaky: float, biggest: str = "ok"
) -> list[str]:
    """Each host's behaviour; host 0 (the biggest app's) is ``biggest``."""
    rng = random.Random(seed)
    counts = [round(hosts * share) for share in (dead, hang, flaky)]
    bad = ["dead"] * counts[0] + ["hang"] * counts[1] + ["flaky"] * counts[2]
    kinds = bad + ["ok"] * (hosts - 1 - len(bad))
    rng.shuffle(kinds)
    return [biggest, *kinds]


def zipf_exponent(apps: int, top_share: float) -> float:
    """The Zipf exponent s for which the biggest of ``apps`` gets ``top_share``."""
    low, high = 0.0, 4.0
    for _ in range(60):
        middle = (low + high) / 2
        share = 1 / sum(rank**-middle for rank in range(1, apps + 1))
        low, high = (middle, high) if share < top_share else (low, middle)
    return (low + high) / 2


# The receivers: one asyncio server per host, in a few processes


class HostProtocol(asyncio.Protocol):
    """Reads requests by Content-Length; logs each arrival; answers as the host's kind says."""

    def __init__(self, kind: str, index: int, log: list[tuple[str, float, int]]) -> None:
        self.kind, self.index, self.log = kind, index, log
        self.buffer = bytearray()
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            total = end + 4 + _content_length(bytes(buffer[:end]))
            if len(buffer) < total:
                return
            body = bytes(buffer[end + 4 : total])
            del buffer[:total]
            self.log.append((_session_id(body), time.monotonic(), self.index))
            if self.kind == "hang":
                continue
            answer = FAIL if self.kind == "flaky" and random.random() < 0.2 else OK
            delay = random.lognormvariate(math.log(MEDIAN), SIGMA)
            asyncio.get_running_loop().call_later(delay, self._answer, answer)

    def _answer(self, answer: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(answer)


def receivers_main(conn: Connection, hosts: list[tuple[int, str]], ca_pem: bytes) -> None:
    """A receiver process: listen for ``hosts`` ((index, kind), the dead left out), then
    answer the parent's requests for the arrival log."""
    raise_open_files()
    ca = trustme.CA.from_pem(ca_pem[: ca_pem.index(b"-----END CERTIFICATE-----") + 26], ca_pem)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        log: list[tuple[str, float, int]] = []
        for index, kind in hosts:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert(address(index)).configure_cert(context)
            await loop.create_server(
                lambda k=kind, i=index: HostProtocol(k, i, log),
                host=address(index),
                port=PORT,
                ssl=context,
                backlog=256,
                reuse_address=True,
            )
        conn.send("ready")

        def on_command() -> None:
            os.set_blocking(conn.fileno(), True)
            if conn.recv() == "log":
                conn.send(list(log))
                log.clear()

        loop.add_reader(conn.fileno(), on_command)
        await asyncio.Event().wait()

    uvloop.run(serve())


@dataclass
class Receivers:
    """The fleet's hosts, in ``processes`` processes."""

    kinds: list[str]
    ca: trustme.CA
    processes: int
    _children: list[tuple[multiprocessing.Process, Connection]] = field(default_factory=list)

    def start(self) -> Receivers:
        context = multiprocessing.get_context("spawn")
        ca_pem = self.ca.cert_pem.bytes() + self.ca.private_key_pem.bytes()
        live = [(index, kind) for index, kind in enumerate(self.kinds) if kind != "dead"]
        for number in range(self.processes):
            ours, theirs = context.Pipe()
            share = live[number :: self.processes]
            child = context.Process(
                target=receivers_main, args=(theirs, share, ca_pem), daemon=True
            )
            child.start()
            self._children.append((child, ours))
        for child, conn in self._children:
            if not conn.poll(300) or conn.recv() != "ready":
                raise RuntimeError(f"a receiver process did not start ({child.exitcode})")
        return self

    def take_log(self) -> list[tuple[str, float, int]]:
        log: list[tuple[str, float, int]] = []
        for _, conn in self._children:
            conn.send("log")
            log.extend(conn.recv())
        return log

    def stop(self) -> None:
        for child, _ in self._children:
            child.kill()
            child.join()


# The load: Poisson arrivals over Zipf-skewed apps, one record per request


@dataclass
class Load:
    sent: dict[str, float] = field(default_factory=dict)
    app_of: dict[str, int] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)


async def offer(base: str, key: str, app_ids: list[str], args: argparse.Namespace) -> Load:
    rng = random.Random(args.seed)
    exponent = zipf_exponent(len(app_ids), args.top_share)
    weights = [rank**-exponent for rank in range(1, len(app_ids) + 1)]
    cumulative = list(itertools.accumulate(weights))
    template = record_json(9_999_999)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    load = Load()
    tasks: set[asyncio.Task[None]] = set()

    async def send(session: aiohttp.ClientSession, sid: str, app: int) -> None:
        body = template.replace(b"23111713429999999", sid.encode())
        load.app_of[sid] = app
        load.sent[sid] = time.monotonic()
        try:
            url = f"{base}/v1/apps/{app_ids[app]}/call-records"
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 202:
                    load.failures[str(response.status)] += 1
        except aiohttp.ClientError as exc:
            load.failures[type(exc).__name__] += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        start = due = time.monotonic()
        number = 0
        while due < start + args.seconds:
            delay = due - time.monotonic()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            app = rng.choices(range(len(app_ids)), cum_weights=cumulative)[0]
            task = asyncio.create_task(send(session, f"{args.prefix}{number:08d}", app))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            number += 1
            due += rng.expovariate(args.rate)
        if tasks:
            await asyncio.wait(tasks, timeout=60)
    return load


async def create_apps(base: str, count: int) -> list[str]:
    """One app per host, created 32 at a time; their ids in host order."""
    ids: list[str] = [""] * count
    async with aiohttp.ClientSession() as session:

        async def create(index: int) -> None:
            body = {"name": f"fleet {index}", "pushUrl": f"https://{address(index)}:{PORT}/cdr"}
            async with session.post(f"{base}/v1/apps", json=body, headers=auth_headers()) as r:
                if r.status != 201:
                    raise RuntimeError(f"creating an app: {r.status} {await r.text()}")
                ids[index] = (await r.json())["id"]

        for first in range(0, count, 32):
            await asyncio.gather(*(create(n) for n in range(first, min(first + 32, count))))
    return ids


async def warm_up(kinds: list[str], ca_file: Path) -> None:
    """One TLS handshake with every listening host, so that no run pays the receivers'
    first handshake with each certificate (the first run would be slower than the next)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    gate = asyncio.Semaphore(64)

    async def shake(index: int) -> None:
        async with gate, asyncio.timeout(10):
            _, writer = await asyncio.open_connection(address(index), PORT, ssl=context)
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(shake(n) for n, kind in enumerate(kinds) if kind != "dead"))


# One run


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def sample_files(pid: int, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], open_files(pid))
        except OSError:
            return
        await asyncio.sleep(0.5)


async def run_once(
    concurrency: str, receivers: Receivers, ca_file: Path, args: argparse.Namespace
) -> dict[str, Any]:
    env = {"CCPUSH_CA_BUNDLE": str(ca_file)}
    if concurrency != "default":
        env["CCPUSH_CONCURRENCY"] = concurrency
    os.environ.pop("CCPUSH_CONCURRENCY", None)
    with tempfile.TemporaryDirectory(prefix="ccpush-fleet-") as tmp:
        server = CcpushServer(f"sqlite:///{tmp}/fleet.db", Path(tmp), env=env)
        server.start()
        assert server.process is not None
        pid = server.process.pid
        try:
            app_ids = await create_apps(server.base, len(receivers.kinds))
            async with aiohttp.ClientSession() as session:
                key = await ingest_key(session, server.base)
            receivers.take_log()  # what earlier runs left
            peak, stop = [0], asyncio.Event()
            sampler = asyncio.create_task(sample_files(pid, peak, stop))
            load_before = load_average()
            cpu_before, began = process_cpu(pid), time.monotonic()
            load = await offer(server.base, key, app_ids, args)
            load_end = time.monotonic()
            await asyncio.sleep(args.after)
            cpu = (process_cpu(pid) - cpu_before) / (time.monotonic() - began)
            log = receivers.take_log()
            stop.set()
            await sampler
            rss = peak_rss_mb(pid)
        finally:
            server.stop()
    return figures(concurrency, load, log, receivers.kinds, load_end) | {
        "concurrency": _concurrency(concurrency),
        "cpu_percent": 100 * cpu,
        "open_files_peak": peak[0],
        "peak_rss_mb": rss,
        "load_average": (load_before[0], load_average()[0]),
    }


def _concurrency(run: str) -> int:
    """The pushes in flight of a run: given, or what ``serve`` derives from the open-file
    limit it inherits from this process (and logs)."""
    if run != "default":
        return int(run)
    return default_concurrency(resource.getrlimit(resource.RLIMIT_NOFILE)[0], reserved=1000)


def figures(
    concurrency: str,
    load: Load,
    log: list[tuple[str, float, int]],
    kinds: list[str],
    load_end: float,
) -> dict[str, Any]:
    arrived: dict[str, float] = {}
    for sid, at, _ in log:
        if sid in load.sent and sid not in arrived:
            arrived[sid] = at
    healthy = [sid for sid, app in load.app_of.items() if kinds[app] == "ok"]
    lags = [max(arrived[sid] - load.sent[sid], 0.0) for sid in healthy if sid in arrived]
    late = sum(1 for sid in healthy if sid not in arrived)
    late_10s = sum(1 for sid in healthy if arrived.get(sid, math.inf) > load_end + 10)
    first_sent = min((load.sent[sid] for sid in healthy), default=load_end)
    last_arrival = max((arrived[sid] for sid in healthy if sid in arrived), default=load_end)
    biggest = [
        arrived[sid] - load.sent[sid] for sid in healthy if not load.app_of[sid] and sid in arrived
    ]
    others = [
        arrived[sid] - load.sent[sid] for sid in healthy if load.app_of[sid] and sid in arrived
    ]
    by_kind = Counter(kinds[load.app_of[sid]] for sid in load.sent)
    arrived_by_kind = Counter(kinds[load.app_of[sid]] for sid in arrived)
    return {
        "run": concurrency,
        "records": len(load.sent),
        "refused_by_api": dict(load.failures),
        "healthy_records": len(healthy),
        "healthy_lag_s": {
            "p50": percentile(lags, 0.50),
            "p90": percentile(lags, 0.90),
            "p99": percentile(lags, 0.99),
            "max": max(lags, default=float("nan")),
        },
        "healthy_undelivered_after": late,
        "healthy_undelivered_10s_after": late_10s,
        "healthy_per_s": len(lags) / max(last_arrival - first_sent, 1e-9),
        "biggest_app": {"records": len(biggest), "p99": percentile(biggest, 0.99)},
        "other_healthy_p99": percentile(others, 0.99),
        "arrived_by_kind": {kind: f"{arrived_by_kind[kind]}/{by_kind[kind]}" for kind in KINDS},
        "load_seconds": round(load_end - min(load.sent.values(), default=load_end), 1),
    }


def report(result: dict[str, Any], after: float) -> None:
    lag = result["healthy_lag_s"]
    print(
        f"  run {result['run']} (concurrency {result['concurrency']}): {result['records']} records"
        f" ({result['healthy_records']} to healthy hosts) in {result['load_seconds']} s"
    )
    print(
        f"    healthy lag p50 {lag['p50']:.3f} s, p90 {lag['p90']:.3f} s,"
        f" p99 {lag['p99']:.3f} s, max {lag['max']:.3f} s"
    )
    print(
        f"    healthy undelivered 10 s after the load: {result['healthy_undelivered_10s_after']},"
        f" {after:g} s after: {result['healthy_undelivered_after']};"
        f" healthy delivered {result['healthy_per_s']:.1f} records/s"
    )
    print(
        f"    the biggest app's {result['biggest_app']['records']} records: lag p99"
        f" {result['biggest_app']['p99']:.3f} s; the other healthy apps' p99"
        f" {result['other_healthy_p99']:.3f} s"
    )
    print(f"    arrived by kind of host: {result['arrived_by_kind']}")
    print(
        f"    ccpush: {result['cpu_percent']:.1f} % of a core, open files at most"
        f" {result['open_files_peak']}, peak RSS {result['peak_rss_mb']:.0f} MB"
    )
    before, after = result["load_average"]
    print(f"    load average (1 min) {before:.2f} before, {after:.2f} after")
    if result["refused_by_api"]:
        print(f"    ingestion requests not answered 202: {result['refused_by_api']}")


# Setting up


def raise_open_files() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    limit = raise_open_files()
    per_process = math.ceil(args.hosts / args.receivers)
    if limit != resource.RLIM_INFINITY and limit < 2 * per_process + 256:
        raise SystemExit(f"the open-file limit {limit} is too low for {args.hosts} hosts")
    kinds = assign_kinds(args.hosts, args.seed, args.dead, args.hang, args.flaky, args.biggest)
    ca = trustme.CA()
    results = []
    with tempfile.TemporaryDirectory(prefix="ccpush-fleet-ca-") as tmp:
        ca_file = Path(tmp) / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        started = time.monotonic()
        receivers = Receivers(kinds, ca, args.receivers).start()
        await warm_up(kinds, ca_file)
        print(
            f"{args.hosts} hosts ({dict(Counter(kinds))}) listening after"
            f" {time.monotonic() - started:.1f} s; open-file limit {limit}"
        )
        try:
            for number, concurrency in enumerate(args.runs.split(",")):
                args.prefix = f"fleet{number}"
                result = await run_once(concurrency.strip(), receivers, ca_file, args)
                report(result, args.after)
                results.append(result)
        finally:
            receivers.stop()
    compare(results)
    return results


def compare(results: list[dict[str, Any]]) -> None:
    if len(results) < 2:
        return
    first = results[0]
    for other in results[1:]:
        ratios = {
            name: first["healthy_lag_s"][name] / other["healthy_lag_s"][name]
            for name in ("p50", "p99")
            if other["healthy_lag_s"][name]
        }
        shown = ", ".join(f"{name} {ratio:.2f}" for name, ratio in ratios.items())
        print(f"  run {first['run']} / run {other['run']}: healthy lag {shown}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=400.0, help="records a second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--after", type=float, default=30.0, help="seconds to wait after")
    parser.add_argument("--top-share", type=float, default=0.18)
    parser.add_argument("--dead", type=float, default=0.02)
    parser.add_argument("--hang", type=float, default=0.02)
    parser.add_argument("--flaky", type=float, default=0.05)
    parser.add_argument(
        "--biggest", choices=KINDS, default="ok", help="how the biggest app's host behaves"
    )
    parser.add_argument("--receivers", type=int, default=4, help="receiver processes")
    parser.add_argument("--runs", default="default,1024", help="default, or a concurrency")
    parser.add_argument("--seed", type=int, default=17)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine_info().items()))
    print(
        f"fleet: {arguments.hosts} hosts, {arguments.rate:g} records/s for"
        f" {arguments.seconds:g} s, then {arguments.after:g} s"
    )
    uvloop.run(main(arguments))
