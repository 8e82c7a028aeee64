"""The HTTP server against hostile clients: slow, oversized and too many, over real sockets.

The in-process tests serve the real API with ``ccpush.http_server`` from a thread; the slow
ones run ``ccpush serve`` itself, under an open-file limit, while a receiver on loopback
takes its pushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import pytest
from pydantic import ValidationError

from ccpush.errors import ConfigurationError
from ccpush.http_server import (
    OTHER_OPEN_FILES,
    UNLIMITED,
    Refusals,
    ServerLimits,
    Throttle,
    head_size,
    open_files_needed,
    soft_file_limit,
)
from ccpush.settings import Settings
from tests.conftest import minimal_record
from tests.helpers import eventually, make_settings
from tests.receiver import Receiver
from tests.served import ServerThread, free_port, served_api

ADMIN = "test-admin-token-0123456789abcdef"
GET = b"GET /healthz HTTP/1.1\r\nHost: ccpush\r\n\r\n"
SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: ccpush\r\nX-Pad: " + b"p" * 400 + b"\r\n\r\n"


# What an HTTP client sees, read from a raw socket


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def error_code(self) -> str:
        return str(json.loads(self.body)["error"]["code"])


def parse_answer(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = (line.partition(":") for line in lines)
    headers = {name.lower(): value.strip() for name, _, value in fields}
    return Answer(int(status_line.split()[1]), headers, body)


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One answer on a connection kept open."""
    answer = parse_answer(await reader.readuntil(b"\r\n\r\n"))
    body = await reader.readexactly(int(answer.headers.get("content-length", "0")))
    return replace(answer, body=body)


async def read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (a reset after the answer
    included: a server that closes with unread input resets the connection)."""
    received = b""
    async with asyncio.timeout(timeout):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk


@dataclass(frozen=True)
class Outcome:
    answer: Answer | None
    """None: closed without an answer."""
    seconds: float
    """From connecting to the connection's end."""
    sent: int


async def send_slowly(port: int, request: bytes, pace: float, timeout: float = 30) -> Outcome:
    """Send ``request`` a byte every ``pace`` seconds, until the server answers or closes."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received, sent = b"", 0
    try:
        for byte in request:
            writer.write(bytes([byte]))
            sent += 1
            with contextlib.suppress(TimeoutError):
                received = await asyncio.wait_for(reader.read(65536), pace)
                break
        received += await read_until_closed(reader, timeout)
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    answer = parse_answer(received) if received else None
    return Outcome(answer, time.monotonic() - started, sent)


async def send_endless_head(port: int, megabytes: int, start: bytes) -> Outcome:
    """``start``, then ``megabytes`` MiB of one header's value, until the server stops it."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setblocking(False)
        sent, chunk = 0, b"a" * 65536
        try:
            await loop.sock_sendall(sock, start)
            while sent < megabytes * 1024 * 1024:
                await loop.sock_sendall(sock, chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        async with asyncio.timeout(10):
            received = await loop.sock_recv(sock, 65536)
    return Outcome(parse_answer(received), time.monotonic() - started, sent)


# The rules, as pure functions


@pytest.mark.parametrize(
    ("needed", "soft", "hard", "expected"),
    [
        (1192, 20000, 20000, 20000),  # enough already
        (1192, 1024, 4096, 1192),  # raised as far as needed
        (1192, 1024, 1192, 1192),
        (1192, 1024, UNLIMITED, 1192),
        (1192, UNLIMITED, UNLIMITED, UNLIMITED),
        (1192, 1024, 1191, None),  # the hard limit is too low
        (1192, 256, 256, None),
    ],
)
def test_the_open_file_limit_is_raised_to_what_serve_needs_or_refused(
    needed: int, soft: int, hard: int, expected: int | None
) -> None:
    if expected is None:
        with pytest.raises(ConfigurationError, match="CCPUSH_MAX_CONNECTIONS"):
            soft_file_limit(needed, soft, hard)
    else:
        assert soft_file_limit(needed, soft, hard) == expected


def test_a_worker_needs_no_files_for_the_api_s_connections(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ccpush.db'}"
    settings = make_settings(tmp_path, url, max_connections=1000, concurrency=128, push_processes=2)
    serving = open_files_needed(settings)
    assert serving == 1000 + 128 + 2 * 2 + OTHER_OPEN_FILES
    assert open_files_needed(settings, serving=False) == serving - 1000


@pytest.mark.parametrize(
    ("target", "fields", "size"),
    [
        (b"/", [], 17),
        (b"/healthz", [(b"host", b"ccpush")], 24 + 14),
        (b"/" + b"x" * 99, [(b"a", b"b")] * 10, 116 + 10 * 6),
    ],
)
def test_a_head_s_size_counts_its_request_line_and_fields(
    target: bytes, fields: list[tuple[bytes, bytes]], size: int
) -> None:
    assert head_size(target, fields) == size


def test_a_throttle_says_yes_once_an_interval() -> None:
    throttle = Throttle(60)
    assert [throttle.ready(t) for t in (0, 1, 59.9, 60, 61, 200)] == [
        True, False, False, True, False, True,
    ]  # fmt: skip


def test_each_refusal_is_a_whole_answer_that_closes_its_connection() -> None:
    limits = ServerLimits(16384, 100, 10, 30, 5, 1000)
    refusals = Refusals.for_limits(limits)
    expected = {
        "timeout": (408, "request_timeout"),
        "head_too_large": (431, "headers_too_large"),
        "too_many_headers": (431, "too_many_headers"),
        "busy": (503, "too_many_connections"),
    }
    for name, (status, code) in expected.items():
        answer = parse_answer(getattr(refusals, name))
        assert (answer.status, answer.error_code) == (status, code)
        assert answer.headers["connection"] == "close"
        assert int(answer.headers["content-length"]) == len(answer.body)
    assert parse_answer(refusals.busy).headers["retry-after"] == "1"
    assert (
        "16384 bytes" in json.loads(parse_answer(refusals.head_too_large).body)["error"]["message"]
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_header_bytes", 100),
        ("max_headers", 0),
        ("header_timeout", 0),
        ("body_timeout", -1),
        ("keepalive_timeout", 0),
        ("max_connections", 0),
    ],
)
def test_server_limits_out_of_range_are_refused_by_name(field: str, value: int) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})


# The server of ``ccpush serve``, in this process

TIMEOUT = 1.0
KEEPALIVE = 2
CAP = 8
SLACK = 2.0
"""How late a deadline may be met on a busy machine."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    tmp = tmp_path_factory.mktemp("limits")
    settings = make_settings(
        tmp,
        f"sqlite:///{tmp / 'ccpush.db'}",
        max_header_bytes=4096,
        max_headers=20,
        header_timeout=TIMEOUT,
        body_timeout=TIMEOUT,
        keepalive_timeout=KEEPALIVE,
        max_connections=CAP,
    )
    with ServerThread(served_api(settings, dispatch=False), settings) as served:
        yield served


def open_connections(server: ServerThread) -> int:
    assert server.server is not None
    return len(server.server.server_state.connections)


@contextlib.asynccontextmanager
async def connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()


async def test_an_idle_new_connection_is_answered_408_and_closed(server: ServerThread) -> None:
    started = time.monotonic()
    async with connection(server.port) as (reader, _):
        answer = parse_answer(await read_until_closed(reader, TIMEOUT + SLACK))
    assert (answer.status, answer.error_code) == (408, "request_timeout")
    assert time.monotonic() - started >= TIMEOUT * 0.9


async def test_a_head_sent_byte_by_byte_is_answered_408_at_the_header_timeout(
    server: ServerThread,
) -> None:
    outcome = await send_slowly(server.port, SLOW_HEAD, pace=0.05)
    assert outcome.answer is not None
    assert outcome.answer.status == 408
    assert TIMEOUT * 0.9 <= outcome.seconds <= TIMEOUT + SLACK
    assert outcome.sent < len(SLOW_HEAD)


async def test_a_stalled_body_is_answered_408_at_the_body_timeout(server: ServerThread) -> None:
    head = b"POST /v1/apps HTTP/1.1\r\nHost: ccpush\r\nContent-Length: 100\r\n\r\n"
    async with connection(server.port) as (reader, writer):
        writer.write(head + b'{"name": ')
        started = time.monotonic()
        answer = parse_answer(await read_until_closed(reader, TIMEOUT + SLACK))
    assert answer.status == 408
    assert time.monotonic() - started >= TIMEOUT * 0.9


async def test_the_header_timeout_runs_from_each_request_s_first_byte(
    server: ServerThread,
) -> None:
    async with connection(server.port) as (reader, writer):
        writer.write(GET)
        assert (await read_answer(reader)).status == 200
        # Idle between requests for longer than the header timeout, within keep-alive:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), TIMEOUT * 1.2)
        writer.write(GET)
        assert (await read_answer(reader)).status == 200
        started = time.monotonic()
        assert await read_until_closed(reader, KEEPALIVE + SLACK) == b""  # ends silently
        assert time.monotonic() - started >= KEEPALIVE * 0.9


async def test_a_body_in_pieces_and_pipelined_requests_are_served(server: ServerThread) -> None:
    body = json.dumps({"name": "pieces"}).encode()
    head = (
        b"POST /v1/apps HTTP/1.1\r\nHost: ccpush\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + ADMIN.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    async with connection(server.port) as (reader, writer):
        writer.write(head + body[:5])
        await writer.drain()
        writer.write(body[5:] + GET + GET)
        assert [(await read_answer(reader)).status for _ in range(3)] == [201, 200, 200]


async def test_a_large_body_behind_a_small_head_is_not_taken_for_a_large_head(
    server: ServerThread,
) -> None:
    body = b'{"name": "large"}' + b" " * 60_000
    head = (
        b"POST /v1/apps HTTP/1.1\r\nHost: ccpush\r\nAuthorization: Bearer " + ADMIN.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )  # fmt: skip
    async with connection(server.port) as (reader, writer):
        writer.write(head + body)  # one read holds the head and much more
        assert (await read_answer(reader)).status == 201


@pytest.mark.parametrize(
    ("start", "code"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: ccpush\r\nX-Endless: ", "headers_too_large"),
        (b"GET /", "headers_too_large"),  # an endless request target
        (b"GET /healthz HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 50_000, "headers_too_large"),
    ],
)
async def test_an_endless_head_is_answered_431_having_read_little(
    server: ServerThread, start: bytes, code: str
) -> None:
    outcome = await send_endless_head(server.port, 64, start)
    assert outcome.answer is not None
    assert (outcome.answer.status, outcome.answer.error_code) == (431, code)
    assert outcome.sent < 16 * 1024 * 1024  # cut off long before its end


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ([b"X-Big: " + b"b" * 5000], "headers_too_large"),  # whole, in one read
        ([b"X-%d: 1" % n for n in range(21)], "too_many_headers"),
    ],
)
async def test_a_complete_head_over_a_limit_is_answered_431(
    server: ServerThread, fields: list[bytes], code: str
) -> None:
    request = b"GET /healthz HTTP/1.1\r\n" + b"\r\n".join(fields) + b"\r\n\r\n"
    async with connection(server.port) as (reader, writer):
        writer.write(request)
        answer = parse_answer(await read_until_closed(reader, SLACK))
    assert (answer.status, answer.error_code) == (431, code)


async def test_beyond_the_connection_cap_clients_get_503_at_once_then_are_served(
    server: ServerThread,
) -> None:
    await eventually(lambda: open_connections(server) == 0)  # the tests before are gone
    held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(CAP)]
    try:
        await eventually(lambda: open_connections(server) == CAP, timeout=TIMEOUT / 2)
        started = time.monotonic()
        async with connection(server.port) as (reader, writer):
            writer.write(GET)
            busy = parse_answer(await read_until_closed(reader, SLACK))
        assert (busy.status, busy.headers["retry-after"]) == (503, "1")
        assert time.monotonic() - started < TIMEOUT / 2  # not held until a slot frees
        # The idle connections are dropped at the header timeout; then clients are served.
        for reader, _ in held:
            assert parse_answer(await read_until_closed(reader, TIMEOUT + SLACK)).status == 408
        async with connection(server.port) as (reader, writer):
            writer.write(GET)
            assert (await read_answer(reader)).status == 200
    finally:
        for _, writer in held:
            writer.close()


async def test_a_client_is_served_while_slow_clients_are_held(server: ServerThread) -> None:
    await eventually(lambda: open_connections(server) == 0)  # the tests before are gone
    slow = [
        asyncio.create_task(send_slowly(server.port, SLOW_HEAD, pace=0.05)) for _ in range(CAP - 1)
    ]
    await eventually(lambda: open_connections(server) == CAP - 1, timeout=TIMEOUT / 2)
    async with connection(server.port) as (reader, writer):
        writer.write(GET)
        assert (await read_answer(reader)).status == 200
    assert not any(task.done() for task in slow)
    outcomes = await asyncio.gather(*slow)
    assert {o.answer.status if o.answer else None for o in outcomes} == {408}


# ``ccpush serve`` itself

SERVE_ENV = {
    "CCPUSH_ADMIN_TOKEN": ADMIN,
    "CCPUSH_ALLOWED_TARGET_NETWORKS": "127.0.0.0/8",
    "CCPUSH_LOG_LEVEL": "WARNING",
}


@dataclass(frozen=True)
class Served:
    pid: int
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def listening(self) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def soft_open_file_limit(self) -> int:
        for line in Path(f"/proc/{self.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
        raise AssertionError("no open-file limit")


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, env: dict[str, str], open_files: tuple[int, int] | None = None
) -> AsyncIterator[Served]:
    """``ccpush serve`` on a free port (with ``open_files`` as its RLIMIT_NOFILE), its output
    in a file, stopped with SIGTERM after."""
    port = free_port()
    log = tmp_path / "serve.log"
    limit = functools.partial(resource.setrlimit, resource.RLIMIT_NOFILE, open_files)
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ccpush", "serve",
            env={**os.environ, **SERVE_ENV, "CCPUSH_DATA_DIR": str(tmp_path),
                 "CCPUSH_PORT": str(port), **env},
            stdout=output, stderr=output,
            preexec_fn=limit if open_files else None,
        )  # fmt: skip
        served = Served(process.pid, port, log)
        try:
            await eventually(lambda: process.returncode is not None or served.listening(), 30)
            assert process.returncode is None, log.read_text()
            yield served
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)
    assert "Traceback" not in log.read_text()


async def ingest_and_wait_for_push(
    client: aiohttp.ClientSession, app_id: str, receiver: Receiver, session_id: str
) -> None:
    path = f"/v1/apps/{app_id}/call-records"
    async with client.post(path, json=minimal_record(session_id)) as posted:
        assert posted.status == 202
    await receiver.wait_for(lambda r: session_id in r.sessions())


async def make_app(client: aiohttp.ClientSession, receiver: Receiver) -> str:
    async with client.post("/v1/apps", json={"name": "limits", "pushUrl": receiver.url}) as made:
        assert made.status == 201
        return str((await made.json())["id"])


@pytest.mark.slow
async def test_serve_stays_small_against_endless_headers(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    concurrency = {"CCPUSH_CONCURRENCY": "128"}  # set: the limit is raised as far as needed
    async with serving(tmp_path, concurrency, open_files=(256, hard)) as served:
        needed = 1000 + 128 + OTHER_OPEN_FILES
        assert served.soft_open_file_limit() == needed  # raised from 256 to what it needs
        before = served.rss_kib()
        attacks = [send_endless_head(served.port, 50, b"GET / HTTP/1.1\r\nX: ") for _ in range(2)]
        outcomes = await asyncio.gather(*attacks)
        grown_kib = served.rss_kib() - before
        assert [o.answer.status if o.answer else None for o in outcomes] == [431, 431]
        assert grown_kib < 16 * 1024, f"serve grew by {grown_kib} KiB"
        async with aiohttp.ClientSession(served.url) as client, client.get("/healthz") as ok:
            assert ok.status == 200


@pytest.mark.slow
async def test_serve_refuses_a_connection_cap_beyond_its_open_file_limit(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ccpush", "serve",
        env={**os.environ, **SERVE_ENV, "CCPUSH_DATA_DIR": str(tmp_path),
             "CCPUSH_PORT": str(free_port()), "CCPUSH_MAX_CONNECTIONS": "1000",
             "CCPUSH_CONCURRENCY": "128"},
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=functools.partial(resource.setrlimit, resource.RLIMIT_NOFILE, (1024, 1024)),
    )  # fmt: skip
    _, error = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    needed = 1000 + 128 + OTHER_OPEN_FILES
    assert b"invalid setting CCPUSH_MAX_CONNECTIONS" in error
    assert b"%d open files are needed" % needed in error
    assert b"the open-file limit is 1024" in error


SLOWLORIS = 1100
OPEN_FILES = 1024
SERVE_CAP = 800


@pytest.mark.slow
async def test_serve_outlasts_slow_clients_beyond_its_open_file_limit(tmp_path: Path) -> None:
    """The attack that locked every client out of a server with 1,024 open files: 1,100
    connections sending their heads a byte at a time. Beyond the cap they are answered 503
    at once; the rest are dropped at the header timeout; meanwhile a client connected before
    ingests and its record is pushed; afterwards everyone is served."""
    timeout = 6.0
    env = {
        "CCPUSH_MAX_CONNECTIONS": str(SERVE_CAP),
        "CCPUSH_HEADER_TIMEOUT": str(timeout),
        "CCPUSH_KEEPALIVE_TIMEOUT": "60",
    }
    own_soft, own_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if own_soft < 2 * SLOWLORIS:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(own_hard, 4 * SLOWLORIS), own_hard))
    receiver = await Receiver().start()
    headers = {"Authorization": f"Bearer {ADMIN}"}
    connector = aiohttp.TCPConnector(limit=1)  # one connection, opened before the attack
    try:
        async with (
            serving(tmp_path, env, open_files=(OPEN_FILES, OPEN_FILES)) as served,
            aiohttp.ClientSession(served.url, headers=headers, connector=connector) as client,
        ):
            app_id = await make_app(client, receiver)
            attack = [
                asyncio.create_task(send_slowly(served.port, SLOW_HEAD, pace=0.25))
                for _ in range(SLOWLORIS)
            ]
            await eventually(lambda: sum(t.done() for t in attack) >= SLOWLORIS - SERVE_CAP)
            assert served.open_files() <= SERVE_CAP + OTHER_OPEN_FILES  # not 1,100 sockets
            async with connection(served.port) as (reader, writer):
                writer.write(GET)
                assert parse_answer(await read_until_closed(reader, SLACK)).status == 503
            await ingest_and_wait_for_push(client, app_id, receiver, "during-the-attack")
            assert sum(not t.done() for t in attack) >= SERVE_CAP - 1  # still held
            outcomes = await asyncio.gather(*attack)
            statuses = [o.answer.status if o.answer else None for o in outcomes]
            assert statuses.count(503) >= SLOWLORIS - SERVE_CAP
            assert statuses.count(408) + statuses.count(503) == SLOWLORIS
            assert max(o.seconds for o in outcomes) < timeout + 3 * SLACK
            async with aiohttp.ClientSession(served.url, headers=headers) as fresh:
                await ingest_and_wait_for_push(fresh, app_id, receiver, "after-the-attack")
    finally:
        await receiver.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (own_soft, own_hard))
