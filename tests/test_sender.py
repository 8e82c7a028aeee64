"""One push attempt against real loopback servers: what counts as failure, and why; made in
this process by aiohttp (``Sender``) or reqwest (``ReqwestSender``), and in a push process
(``ProcessSender``) with either, alike."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from ccpush.clock import SystemClock
from ccpush.guard import TargetPolicy
from ccpush.models import ErrorKind
from ccpush.push_processes import ProcessSender
from ccpush.sender import Pushes, SenderLimits, local_sender
from tests.receiver import Receiver, Reply

BODY = b'{"callSessionId":"s1"}'


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
    policy = TargetPolicy.parse("127.0.0.0/8")
    where, client = request.param
    made: Pushes
    if where == "in-process":
        made = local_sender(client, SystemClock(), limits, policy=policy)
    else:
        made = ProcessSender(SystemClock(), limits, policy=policy, processes=1, client=client)
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


async def test_connections_to_a_host_are_reused(sender: Pushes, receiver: Receiver) -> None:
    for _ in range(3):
        await asyncio.gather(*(sender.send(receiver.url, BODY, {}) for _ in range(20)))
    assert len(receiver.pushes) == 60
    assert len({push.peer for push in receiver.pushes}) <= 4  # per-host cap, kept alive


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
