"""One push attempt against real loopback servers: what counts as failure, and why; made in
this process by aiohttp (``Sender``) or reqwest (``ReqwestSender``), and in a push process
(``ProcessSender``) with either, alike. Answers no server library would write, from a raw
receiver, are judged alike by both clients, and leave only storable text
(``ccpush.answers``)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from ccpush.answers import answer_text
from ccpush.clock import SystemClock
from ccpush.guard import TargetPolicy
from ccpush.models import ErrorKind
from ccpush.senders import HEAD_BYTES, SENDERS, ProcessSender, Pushes, SenderLimits
from tests.fakedns import FakeDNS
from tests.raw_receiver import RawReceiver, Then, head
from tests.receiver import Receiver, Reply

BODY = b'{"callSessionId":"s1"}'
LOOPBACK = TargetPolicy.parse("127.0.0.0/8")


@pytest.fixture(
    params=[
        ("in-process", "aiohttp"),
        ("in-process", "reqwest"),
        ("push-process", "aiohttp"),
        ("push-process", "reqwest"),
    ],
    ids="-".join,
)
async def sender(request: pytest.FixtureRequest) -> AsyncIterator[Pushes]:
    limits = SenderLimits(timeout=0.5, connect_timeout=0.5, per_host=4, excerpt_bytes=16)
    policy = LOOPBACK
    where, client = request.param
    made: Pushes
    if where == "in-process":
        made = SENDERS[client](SystemClock(), limits, policy=policy)
    else:
        made = ProcessSender(
            SystemClock(), limits, policy=policy, processes=1, sender=SENDERS[client]
        )
    await made.start()
    yield made
    await made.close()


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
async def test_any_2xx_is_success(sender: Pushes, receiver: Receiver, status: int) -> None:
    receiver.responder = lambda push, seen: Reply(status=status, body="")
    outcome = await sender.send(receiver.url, BODY, {})
    assert outcome.ok
    assert outcome.status_code == status


@pytest.mark.parametrize("status", [400, 404, 410, 429, 500, 502, 503])
async def test_other_statuses_fail(sender: Pushes, receiver: Receiver, status: int) -> None:
    receiver.responder = lambda push, seen: Reply(status=status, body="nope")
    outcome = await sender.send(receiver.url, BODY, {})
    assert not outcome.ok
    assert (outcome.status_code, outcome.error_kind) == (status, ErrorKind.HTTP_STATUS)
    assert outcome.response_excerpt == "nope"


async def test_a_redirect_is_a_failure_and_not_followed(sender: Pushes, receiver: Receiver) -> None:
    receiver.responder = lambda push, seen: (
        Reply(status=307, headers={"Location": "/elsewhere"}) if push.path == "/cdr" else Reply()
    )
    outcome = await sender.send(receiver.url, BODY, {})
    assert (outcome.status_code, outcome.error_kind) == (307, ErrorKind.HTTP_STATUS)
    assert "/elsewhere" in (outcome.error or "")
    assert [p.path for p in receiver.pushes] == ["/cdr"]


async def test_a_slow_receiver_times_out(sender: Pushes, receiver: Receiver) -> None:
    receiver.responder = lambda push, seen: Reply(delay=5)
    outcome = await sender.send(receiver.url, BODY, {})
    assert outcome.error_kind is ErrorKind.TIMEOUT
    assert outcome.status_code is None
    assert 400 <= outcome.duration_ms < 2000


async def test_a_refused_connection_is_a_connect_failure(sender: Pushes) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outcome = await sender.send(f"http://127.0.0.1:{port}/cdr", BODY, {})
    assert outcome.error_kind is ErrorKind.CONNECT


async def test_tls_to_a_plain_server_is_a_tls_failure(sender: Pushes, receiver: Receiver) -> None:
    outcome = await sender.send(receiver.url.replace("http://", "https://"), BODY, {})
    assert outcome.error_kind is ErrorKind.TLS
    assert receiver.pushes == []


async def test_a_broken_reply_is_a_protocol_failure(sender: Pushes) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        outcome = await sender.send(f"http://127.0.0.1:{port}/", BODY, {})
    assert outcome.error_kind in (ErrorKind.PROTOCOL, ErrorKind.CONNECT)
    assert not outcome.ok


async def test_the_response_excerpt_is_capped(sender: Pushes, receiver: Receiver) -> None:
    receiver.responder = lambda push, seen: Reply(status=500, body="x" * 10_000)
    outcome = await sender.send(receiver.url, BODY, {})
    assert outcome.response_excerpt == "x" * 16


async def test_connections_to_a_host_are_reused(
    sender: Pushes, receiver: Receiver, request: pytest.FixtureRequest
) -> None:
    for _ in range(3):
        await asyncio.gather(*(sender.send(receiver.url, BODY, {}) for _ in range(20)))
    assert len(receiver.pushes) == 60
    connections = len({push.peer for push in receiver.pushes})
    # aiohttp never holds more than the per-host cap (4); reqwest's pool may open another
    # while a finished request's connection is still on its way back to it. Either way
    # connections are kept alive: a handful for 60 pushes, not one each.
    assert connections <= (4 if "aiohttp" in request.node.name else 8)


async def test_extra_headers_are_sent_and_content_type_is_exact(
    sender: Pushes, receiver: Receiver
) -> None:
    await sender.send(receiver.url, BODY, {"webhook-id": "dlv_7"})
    [push] = receiver.pushes
    assert push.headers["webhook-id"] == "dlv_7"
    assert push.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert push.headers["User-Agent"].startswith("ccpush/")


async def test_cookies_a_receiver_sets_are_never_sent_back(
    sender: Pushes, receiver: Receiver
) -> None:
    """One customer's endpoint cannot make ccpush carry state from push to push."""
    receiver.responder = lambda push, seen: Reply(headers={"Set-Cookie": "session=abc; Path=/"})
    by_name = receiver.url.replace("127.0.0.1", "localhost")  # a jar keeps no IP's cookies
    for _ in range(2):
        assert (await sender.send(by_name, BODY, {})).ok
    assert [push.headers.get("Cookie") for push in receiver.pushes] == [None, None]


# Answers as a receiver may write them, however broken: both clients judge each alike.


@dataclass(frozen=True)
class AnswerCase:
    """An answer written byte for byte, and what both clients make of it."""

    written: bytes
    status: int | None
    kind: ErrorKind | None
    excerpt: str | None = None
    then: Then = "close"


CHUNKED = b"Transfer-Encoding: chunked"
HOSTILE_BODY = b"a\x00b\x01\x7f\xff\x1b[31m\tc\r\n\xc2\x85"
HOSTILE_EXCERPT = "a\\x00b\\x01\\x7f\ufffd\\x1b[31m\tc\r\n\\x85"
HEADERS_100 = [b"X-Header-%d: v" % n for n in range(99)]  # with Content-Length: 100

ANSWERS = {
    # The status decides once the head is in: what befalls the body after changes nothing.
    "2xx body shorter than its Content-Length": AnswerCase(
        head(b"HTTP/1.1 200 OK", b"Content-Length: 100", body=b"ok"), 200, None, "ok"
    ),
    "2xx closed before its body": AnswerCase(
        head(b"HTTP/1.1 200 OK", b"Content-Length: 100"), 200, None
    ),
    "2xx chunked body cut in a chunk": AnswerCase(
        b"HTTP/1.1 200 OK\r\n" + CHUNKED + b"\r\n\r\n5\r\nhel", 200, None, "hel"
    ),
    "2xx chunked body without its last chunk": AnswerCase(
        b"HTTP/1.1 200 OK\r\n" + CHUNKED + b"\r\n\r\n2\r\nok\r\n", 200, None, "ok"
    ),
    "2xx body that stops coming": AnswerCase(
        head(b"HTTP/1.1 200 OK", b"Content-Length: 100", body=b"ok"), 200, None, "ok", "stall"
    ),
    "5xx body shorter than its Content-Length": AnswerCase(
        head(b"HTTP/1.1 503 Busy", b"Content-Length: 100", body=b"later"),
        503,
        ErrorKind.HTTP_STATUS,
        "later",
    ),
    "body read until the connection closes": AnswerCase(
        b"HTTP/1.0 200 OK\r\n\r\nhello", 200, None, "hello"
    ),
    # Bytes of a body are data: made storable text, whatever the status.
    "NUL, controls and invalid UTF-8 in a 2xx body": AnswerCase(
        head(b"HTTP/1.1 200 OK", body=HOSTILE_BODY), 200, None, HOSTILE_EXCERPT, "keep"
    ),
    "NUL, controls and invalid UTF-8 in a 5xx body": AnswerCase(
        head(b"HTTP/1.1 500 Oops", body=HOSTILE_BODY),
        500,
        ErrorKind.HTTP_STATUS,
        HOSTILE_EXCERPT,
        "keep",
    ),
    "NUL in a chunked body": AnswerCase(
        b"HTTP/1.1 200 OK\r\n" + CHUNKED + b"\r\n\r\n3\r\na\x00b\r\n0\r\n\r\n",
        200,
        None,
        "a\\x00b",
    ),
    # A head that is not HTTP is a protocol failure, whatever its status.
    "NUL in the reason phrase": AnswerCase(
        head(b"HTTP/1.1 500 Bad\x00Thing"), None, ErrorKind.PROTOCOL
    ),
    "NUL in a 2xx reason phrase": AnswerCase(
        head(b"HTTP/1.1 200 O\x00K"), None, ErrorKind.PROTOCOL
    ),
    "escape and DEL in the reason phrase": AnswerCase(
        head(b"HTTP/1.1 500 a\x1b[31m\x7f"), None, ErrorKind.PROTOCOL
    ),
    "NUL in the Location of a 3xx": AnswerCase(
        head(b"HTTP/1.1 302 Found", b"Location: /a\x00b"), None, ErrorKind.PROTOCOL
    ),
    "a control byte in the Location of a 3xx": AnswerCase(
        head(b"HTTP/1.1 302 Found", b"Location: /a\x01b"), None, ErrorKind.PROTOCOL
    ),
    "NUL in a header of a 2xx": AnswerCase(
        head(b"HTTP/1.1 200 OK", b"X-Note: a\x00b"), None, ErrorKind.PROTOCOL
    ),
    "DEL in a header of a 2xx": AnswerCase(
        head(b"HTTP/1.1 200 OK", b"X-Note: a\x7fb"), None, ErrorKind.PROTOCOL
    ),
    "status below 100": AnswerCase(head(b"HTTP/1.1 099 Low"), None, ErrorKind.PROTOCOL),
    "status of four digits": AnswerCase(head(b"HTTP/1.1 2000 OK"), None, ErrorKind.PROTOCOL),
    "HTTP/2.0 in an HTTP/1 answer": AnswerCase(head(b"HTTP/2.0 200 OK"), None, ErrorKind.PROTOCOL),
    "not HTTP at all": AnswerCase(b"hello\r\n\r\n", None, ErrorKind.PROTOCOL),
    "both Transfer-Encoding and Content-Length": AnswerCase(
        head(b"HTTP/1.1 200 OK", CHUNKED, b"Content-Length: 7") + b"2\r\nok\r\n0\r\n\r\n",
        None,
        ErrorKind.PROTOCOL,
    ),
    "101 headers": AnswerCase(
        head(b"HTTP/1.1 200 OK", b"X-One-Too-Many: v", *HEADERS_100), None, ErrorKind.PROTOCOL
    ),
    "a status line longer than a head may be": AnswerCase(
        head(b"HTTP/1.1 500 " + b"x" * 2 * HEAD_BYTES), None, ErrorKind.PROTOCOL
    ),
    # Odd but valid heads are judged by their status.
    "empty reason phrase": AnswerCase(head(b"HTTP/1.1 500 "), 500, ErrorKind.HTTP_STATUS),
    "no reason phrase": AnswerCase(head(b"HTTP/1.1 503"), 503, ErrorKind.HTTP_STATUS),
    "a reason phrase of 100 kB": AnswerCase(
        head(b"HTTP/1.1 500 " + b"x" * 100_000), 500, ErrorKind.HTTP_STATUS
    ),
    "tab and bytes beyond ASCII in the reason phrase": AnswerCase(
        head(b"HTTP/1.1 500 caf\xc3\xa9\t\xff"), 500, ErrorKind.HTTP_STATUS
    ),
    "UTF-8 and invalid bytes in the Location of a 3xx": AnswerCase(
        head(b"HTTP/1.1 302 Found", b"Location: /caf\xc3\xa9\xff"), 302, ErrorKind.HTTP_STATUS
    ),
    "100 headers": AnswerCase(head(b"HTTP/1.1 200 OK", *HEADERS_100), 200, None),
    "a header folded over two lines": AnswerCase(
        head(b"HTTP/1.1 200 OK", b"X-Note: a", b"  b"), 200, None
    ),
    "an informational answer before the final one": AnswerCase(
        b"HTTP/1.1 100 Continue\r\n\r\n" + head(b"HTTP/1.1 204 No Content"), 204, None
    ),
    "a status beyond 599": AnswerCase(head(b"HTTP/1.1 600 Odd"), 600, ErrorKind.HTTP_STATUS),
    # The connection closed before the head is whole: the receiver is not there.
    "closed before any byte": AnswerCase(b"", None, ErrorKind.CONNECT),
    "closed within the status line": AnswerCase(b"HTTP/1.1 200", None, ErrorKind.CONNECT),
    "closed within the headers": AnswerCase(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", None, ErrorKind.CONNECT
    ),
}


@pytest.fixture(params=["aiohttp", "reqwest"])
async def client_sender(request: pytest.FixtureRequest) -> AsyncIterator[Pushes]:
    limits = SenderLimits(timeout=0.5, connect_timeout=0.5, excerpt_bytes=64)
    sender = SENDERS[request.param](SystemClock(), limits, policy=LOOPBACK)
    async with sender:
        yield sender


@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS.keys())
async def test_both_clients_judge_an_answer_alike(
    client_sender: Pushes, answer: AnswerCase
) -> None:
    async with RawReceiver(answer.written, answer.then) as receiver:
        outcome = await client_sender.send(receiver.url, BODY, {})
    assert (outcome.status_code, outcome.error_kind) == (answer.status, answer.kind), outcome
    assert outcome.response_excerpt == answer.excerpt
    assert storable(outcome.error or "")


async def test_what_an_answer_leaves_is_storable_from_every_sender(sender: Pushes) -> None:
    """Made so in the process that pushed: a push process's outcome crosses as it is."""
    hostile = head(b"HTTP/1.1 302 \xff\xfe", b"Location: /caf\xc3\xa9\xff\x85", body=HOSTILE_BODY)
    async with RawReceiver(hostile) as receiver:
        outcome = await sender.send(receiver.url, BODY, {})
    assert (outcome.status_code, outcome.error_kind) == (302, ErrorKind.HTTP_STATUS)
    assert outcome.response_excerpt == "a\\x00b\\x01\\x7f\ufffd\\x1b[31m\tc\r\n\ufffd"  # 16 bytes
    assert outcome.error is not None
    assert storable(outcome.error)
    assert outcome.error.startswith("HTTP 302: redirect to ")


def storable(text: str) -> bool:
    """Text both stores hold, on one line: no control character, no lone surrogate."""
    text.encode("utf-8")  # raises on a lone surrogate
    return not any(unicodedata.category(char) == "Cc" for char in text)


@pytest.mark.parametrize(
    ("raw", "limit", "lines", "text"),
    [
        (b"ok", None, False, "ok"),
        (b"", None, False, ""),
        (b"a\x00b", None, False, "a\\x00b"),
        (b"\x01\x1f\x7f", None, False, "\\x01\\x1f\\x7f"),
        (b"tab\tcr\rlf\n", None, False, "tab\\tcr\\rlf\\n"),
        (b"tab\tcr\rlf\n", None, True, "tab\tcr\rlf\n"),
        (b"\x00\x0b\x0c", None, True, "\\x00\\x0b\\x0c"),
        (b"\xff\xfe", None, False, "\ufffd\ufffd"),
        (b"caf\xc3\xa9", None, False, "café"),
        (b"cut \xc3", None, False, "cut \ufffd"),
        (b"\xc2\x85 \xe2\x80\xa8 \xe2\x80\xa9", None, True, "\\x85 \\u2028 \\u2029"),
        (b"\x1b[31mred", None, False, "\\x1b[31mred"),
        ("/a\udcff\udcfeb", None, False, "/a\ufffd\ufffdb"),
        ("\ud800", None, False, "\ufffd"),
        ("back\\slash", None, False, "back\\slash"),
        ("x" * 10, 4, False, "xxxx"),
        ("\x00" * 10, 6, False, "\\x00\\x"),
        (b"\x00" * 10, 8, True, "\\x00\\x00"),
        ("é" * 10, 3, False, "ééé"),
    ],
)
def test_answer_text(raw: str | bytes, limit: int | None, lines: bool, text: str) -> None:
    assert answer_text(raw, limit, lines=lines) == text


# Failures to reach a receiver, in words a customer understands, alike from both clients.

TRUSTED_CA = trustme.CA()


@asynccontextmanager
async def listening(
    serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[int]:
    """A loopback listener running ``serve`` on each connection: its port."""
    held: list[asyncio.StreamWriter] = []

    async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(OSError, ssl.SSLError):
            await serve(reader, writer)

    server = await asyncio.start_server(keep, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.transport.abort()
        server.close()
        await server.wait_closed()


async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # until the client gives up


async def answers_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    await writer.drain()
    writer.close()


def certified_context() -> ssl.SSLContext:
    """Server side TLS with a certificate for 127.0.0.1 from ``TRUSTED_CA``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    TRUSTED_CA.issue_cert("127.0.0.1").configure_cert(context)
    return context


def free_port() -> int:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("case", "kind", "text"),
    [
        ("refused", ErrorKind.CONNECT, "connect refused by 127.0.0.1:{port}"),
        ("hanging", ErrorKind.TIMEOUT, "read timeout: no answer within 0.5 s"),
        (
            "untrusted",
            ErrorKind.TLS,
            "tls: certificate verify failed (",  # then the client's own words
        ),
    ],
)
async def test_a_failure_to_reach_a_receiver_reads_plainly(
    sender: Pushes, case: str, kind: ErrorKind, text: str
) -> None:
    if case == "refused":
        port = free_port()
        outcome = await sender.send(f"http://127.0.0.1:{port}/cdr", BODY, {})
    else:
        tls = certified_context() if case == "untrusted" else None
        async with listening(never_answers, tls) as port:
            scheme = "https" if tls else "http"
            outcome = await sender.send(f"{scheme}://127.0.0.1:{port}/cdr", BODY, {})
    assert outcome.error_kind is kind
    assert (outcome.error or "").startswith(text.format(port=port)), outcome.error


@pytest.mark.parametrize("client", ["aiohttp", "reqwest"])
async def test_a_name_with_no_address_reads_plainly(client: str) -> None:
    limits = SenderLimits(timeout=0.5, connect_timeout=0.5)
    pushes = SENDERS[client](SystemClock(), limits, policy=LOOPBACK, resolver=FakeDNS({}))
    async with pushes:
        outcome = await pushes.send("http://nowhere.example.test/cdr", BODY, {})
    assert outcome.error_kind is ErrorKind.CONNECT
    assert outcome.error == "dns: no such host nowhere.example.test"


@pytest.mark.parametrize("client", ["aiohttp", "reqwest"])
async def test_a_timeout_lasts_what_it_says(client: str) -> None:
    limits = SenderLimits(timeout=1.5, connect_timeout=1.0)
    async with (
        SENDERS[client](SystemClock(), limits, policy=LOOPBACK) as pushes,
        listening(never_answers) as port,
    ):
        began = time.perf_counter()
        outcome = await pushes.send(f"http://127.0.0.1:{port}/cdr", BODY, {})
        took = time.perf_counter() - began
    assert outcome.error == "read timeout: no answer within 1.5 s"
    assert 1.5 <= took < 1.7


@pytest.mark.parametrize("client", ["aiohttp", "reqwest"])
async def test_a_ca_bundle_is_trusted_besides_the_system_store(client: str, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    TRUSTED_CA.cert_pem.write_to_path(str(bundle))
    async with listening(answers_ok, certified_context()) as port:
        url = f"https://127.0.0.1:{port}/cdr"
        for ca_bundle, ok in ((None, False), (str(bundle), True)):
            limits = SenderLimits(timeout=2.0, connect_timeout=1.0, ca_bundle=ca_bundle)
            async with SENDERS[client](SystemClock(), limits, policy=LOOPBACK) as pushes:
                outcome = await pushes.send(url, BODY, {})
            assert outcome.ok is ok, outcome
