"""What the benchmarks share: the receiver process, a ``ccpush serve`` process, the payload,
the machine's description, PostgreSQL schemas and percentiles.

Everything runs on loopback (127.0.0.1), is bounded in count and time, and stops by itself.
Times that cross processes are ``time.monotonic()`` readings: on Linux every process reads
the same clock (CLOCK_MONOTONIC), so an arrival in the receiver and an answer in the load
generator can be subtracted.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import math
import multiprocessing
import os
import platform
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import uvloop

import ccpush
from ccpush.models import NewRecord
from ccpush.record import CallRecord
from ccpush.wire import DEFAULT_ZONE, parse_zone

ROOT = Path(__file__).resolve().parent.parent
ZONE = parse_zone(DEFAULT_ZONE)
ADMIN_TOKEN = "bench-admin-token-" + "0123456789abcdef"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
LIBRARIES = ("aiohttp", "pyreqwest", "uvloop", "asyncpg", "fastapi", "uvicorn", "pydantic")
"""The libraries whose versions a report gives."""

# The payload: a realistic call record of about 1 KB


def make_record(index: int, prefix: str = "") -> CallRecord:
    sid = f"{prefix}2311171342{index:07d}"
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


def record_json(index: int, prefix: str = "") -> bytes:
    """The record as a client sends it to the ingestion API."""
    return make_record(index, prefix).model_dump_json().encode()


def make_records(count: int, prefix: str = "") -> list[NewRecord]:
    records = []
    for index in range(count):
        record = make_record(index, prefix)
        records.append(
            NewRecord(
                call_session_id=record.callSessionId,
                body=record.push_body(),
                call_start=record.call_start(ZONE),
            )
        )
    return records


# The receiver: raw asyncio + uvloop, keep-alive, in its own process, listening on as many
# ports as asked, each with its behaviour: "ok" (200 at once), "hang" (reads, never
# answers), or a delay in seconds before the 200.

RESPONSE = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
)
SID_KEY = b'"callSessionId":"'


class ReceiverProtocol(asyncio.Protocol):
    """Parses requests by Content-Length and answers each as its port's behaviour says."""

    def __init__(self, behaviour: str, port: int, log: list[tuple[str, float, int]]) -> None:
        self.behaviour = behaviour
        self.port = port
        self.log = log
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
            body = bytes(buffer[end + 4 : total])
            del buffer[:total]
            self.log.append((_session_id(body), time.monotonic(), self.port))
            if self.behaviour == "ok":
                self.transport.write(RESPONSE)
            elif self.behaviour != "hang":
                asyncio.get_running_loop().call_later(
                    float(self.behaviour), self._answer_late, self.transport
                )

    @staticmethod
    def _answer_late(transport: Any) -> None:
        if not transport.is_closing():
            transport.write(RESPONSE)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _session_id(body: bytes) -> str:
    start = body.find(SID_KEY)
    if start < 0:
        return ""
    start += len(SID_KEY)
    return body[start : body.index(b'"', start)].decode()


def receiver_main(conn: Connection, behaviours: list[str]) -> None:
    """The receiver process: listen on one free port per behaviour, send the ports back,
    then answer the parent's requests for the arrival log until killed."""

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        log: list[tuple[str, float, int]] = []
        servers = []
        for behaviour in behaviours:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            server = await loop.create_server(
                lambda b=behaviour, p=port: ReceiverProtocol(b, p, log), sock=sock, backlog=1024
            )
            servers.append((server, port))
        conn.send([port for _, port in servers])

        def on_command() -> None:
            os.set_blocking(conn.fileno(), True)  # add_reader made it non-blocking
            command = conn.recv()
            if command == "log":
                conn.send(list(log))
                log.clear()
            elif command == "count":
                conn.send(len(log))

        loop.add_reader(conn.fileno(), on_command)
        await asyncio.Event().wait()

    uvloop.run(serve())


class ReceiverProcess:
    """A receiver in its own process; ``urls[i]`` answers as ``behaviours[i]`` says."""

    def __init__(self, behaviours: list[str]) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self.process = context.Process(
            target=receiver_main, args=(child, behaviours), daemon=True, name="bench-receiver"
        )
        self.process.start()
        if not self._conn.poll(30):
            self.process.kill()
            raise RuntimeError("the receiver did not start")
        self.ports: list[int] = self._conn.recv()
        self.urls = [f"http://127.0.0.1:{port}/cc-http/call-records" for port in self.ports]

    @property
    def url(self) -> str:
        return self.urls[0]

    def take_log(self) -> list[tuple[str, float, int]]:
        """Every request received since the last call: (callSessionId, monotonic time, port)."""
        self._conn.send("log")
        log: list[tuple[str, float, int]] = self._conn.recv()
        return log

    def count(self) -> int:
        self._conn.send("count")
        count: int = self._conn.recv()
        return count

    def cpu_seconds(self) -> float:
        return process_cpu(self.process.pid)

    def stop(self) -> None:
        self.process.kill()
        self.process.join()

    def __enter__(self) -> ReceiverProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


# ``ccpush serve`` in its own process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class CcpushServer:
    """``ccpush serve`` (API and dispatcher, as shipped), in its own process."""

    database_url: str
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CcpushServer:
        env = {
            **os.environ,
            "CCPUSH_DATABASE_URL": self.database_url,
            "CCPUSH_DATA_DIR": str(self.data_dir),
            "CCPUSH_PORT": str(self.port),
            "CCPUSH_ADMIN_TOKEN": ADMIN_TOKEN,
            "CCPUSH_ALLOWED_TARGET_NETWORKS": "127.0.0.0/8",
            "CCPUSH_ONLY_ALLOWED_TARGETS": "true",
            "CCPUSH_KEY_RATE_LIMIT": "0",
            "CCPUSH_LOG_LEVEL": "WARNING",
            **self.env,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ccpush", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"ccpush serve exited: {error[-2000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("ccpush serve did not start within 60 s")

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return process_cpu(self.process.pid)

    def peak_rss_mb(self) -> float:
        assert self.process is not None
        return peak_rss_mb(self.process.pid)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> CcpushServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}


async def create_apps(
    session: aiohttp.ClientSession, base: str, push_urls: list[str | None]
) -> list[str]:
    """One app per push address (None: an app without one); their ids."""
    ids = []
    for number, url in enumerate(push_urls):
        async with session.post(
            f"{base}/v1/apps",
            data=json.dumps({"name": f"bench app {number}", "pushUrl": url}),
            headers=auth_headers(),
        ) as response:
            if response.status != 201:
                raise RuntimeError(f"creating an app: {response.status} {await response.text()}")
            ids.append((await response.json())["id"])
    return ids


# Processes: CPU time and peak memory, from /proc


def process_cpu(pid: int) -> float:
    """User and system CPU seconds of a process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu(postmaster: int) -> float:
    """CPU seconds of a local PostgreSQL server so far: the postmaster, the backends that
    have exited (its children's time), and those running (autovacuum workers included)."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{postmaster}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    total = sum(int(value) for value in fields[11:15]) / ticks
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


async def postmaster_of(url: str) -> int | None:
    """The local PostgreSQL server's main process (the parent of a backend), if /proc
    shows it: else None (a server on another machine)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:  # read while the backend lives: it exits once its connection is closed
        return parent_of(int(await conn.fetchval("SELECT pg_backend_pid()")))
    finally:
        await conn.close()


def parent_of(pid: int) -> int | None:
    """A process's parent, if /proc shows the process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rpartition(")")[2].split()[1])
    except OSError:
        return None


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM), in MB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# The machine


def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    memory = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as info:
        memory = f"{int(info.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    versions = {}
    for name in LIBRARIES:
        with contextlib.suppress(Exception):
            module = __import__(name)
            versions[name] = getattr(module, "__version__", "?")
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory": memory,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres_version(),
        "ccpush": ccpush.__version__,
        **versions,
    }


def postgres_version(url: str = DEFAULT_POSTGRES) -> str:
    async def ask() -> str:
        import asyncpg

        conn = await asyncpg.connect(url, timeout=5)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    # In a thread of its own: callers may be inside a running event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        try:
            return thread.submit(asyncio.run, ask()).result()
        except Exception:
            return "not reachable"


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


# PostgreSQL: a throw-away schema per run


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
        # Write the run's changes out now, not during the next measurement.
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def store_url(
    backend: str, postgres: str = DEFAULT_POSTGRES
) -> AsyncIterator[tuple[str, Path]]:
    """A fresh store's URL (SQLite in a temporary directory, or a new PostgreSQL schema
    dropped afterwards) and a data directory."""
    with tempfile.TemporaryDirectory(prefix="ccpush-bench-") as tmp:
        if backend == "sqlite":
            yield f"sqlite:///{Path(tmp) / 'bench.db'}", Path(tmp)
            return
        schema = f"bench_{secrets.token_hex(4)}"
        try:
            yield with_schema(postgres, schema), Path(tmp)
        finally:
            await drop_schema(postgres, schema)


# Figures


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in 0..1) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def write_json(path: Path | None, results: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"results written to {path}")


def run_benchmark(
    main: Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]],
    args: argparse.Namespace,
) -> None:
    """Print the machine, run ``main(args)`` on uvloop, write its results to ``--json``."""
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine_info().items()))
    write_json(args.json, uvloop.run(main(args)))


def with_load(out: dict[str, Any], before: tuple[float, float, float]) -> dict[str, Any]:
    """``out`` with the load averages before and now (other processes move the figures)."""
    out["load_average"] = {"before": before, "after": load_average()}
    print(f"load average before {before}, after {out['load_average']['after']}")
    return out


# An open-loop load generator: records at a fixed rate, whatever the answers


@dataclass
class Sent:
    """What the load generator did: per session id, when its request was sent and when its
    202 came back (monotonic seconds), and the requests that failed."""

    sent: dict[str, float] = field(default_factory=dict)
    acked: dict[str, float] = field(default_factory=dict)
    app_of: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0


async def offer(urls: list[str], token: str, rate: float, seconds: float, prefix: str) -> Sent:
    """POST one record at a time at ``rate`` records/s for ``seconds``, to the apps' ingestion
    URLs in turn (open loop: a request is sent on time even if earlier ones are not
    answered yet)."""
    template = record_json(9_999_999)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    result = Sent()
    count = int(rate * seconds)
    tasks: set[asyncio.Task[None]] = set()

    async def send(session: aiohttp.ClientSession, index: int) -> None:
        sid = f"{prefix}{index:07d}"
        body = template.replace(b"23111713429999999", sid.encode())
        result.app_of[sid] = index % len(urls)
        result.sent[sid] = time.monotonic()
        try:
            async with session.post(urls[index % len(urls)], data=body, headers=headers) as r:
                await r.read()
                if r.status != 202:
                    result.failures.append(f"{r.status}")
                    return
        except aiohttp.ClientError as exc:
            result.failures.append(repr(exc))
            return
        result.acked[sid] = time.monotonic()

    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector) as session:
        result.started = start = time.monotonic()
        for index in range(count):
            due = start + index / rate
            delay = due - time.monotonic()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            task = asyncio.create_task(send(session, index))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        result.ended = time.monotonic()
        if tasks:
            await asyncio.wait(tasks, timeout=60)
    return result


async def wait_for_arrivals(receiver: ReceiverProcess, count: int, within: float) -> bool:
    """Wait until the receiver has seen ``count`` requests (or ``within`` seconds passed)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if receiver.count() >= count:
            return True
        await asyncio.sleep(0.2)
    return False


def first_arrivals(log: list[tuple[str, float, int]]) -> dict[str, float]:
    arrivals: dict[str, float] = {}
    for sid, at, _ in log:
        if sid not in arrivals:
            arrivals[sid] = at
    return arrivals


def latency_figures(latencies: list[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds (a push that arrived before the client had read the
    202 counts as 0)."""
    values = [max(0.0, value) * 1000 for value in latencies]
    return {
        "count": len(values),
        "p50_ms": percentile(values, 0.50),
        "p95_ms": percentile(values, 0.95),
        "p99_ms": percentile(values, 0.99),
        "max_ms": max(values) if values else float("nan"),
    }


async def ingest_key(session: aiohttp.ClientSession, base: str) -> str:
    """A platform ingest key: the call center's credential."""
    async with session.post(
        f"{base}/v1/platform-keys", data='{"name": "bench"}', headers=auth_headers()
    ) as response:
        if response.status != 201:
            raise RuntimeError(f"creating a key: {response.status} {await response.text()}")
        secret: str = (await response.json())["secret"]
        return secret
