"""The SSRF target guard: hostile push targets are refused with a reason and never reached.

Safety rule for this file: no test may open a connection to anything but loopback. Hostile
targets outside loopback are judged by verdict only (``check_address``, ``check_target`` and
the sender with a fake DNS resolver); a broken guard would make those tests try to connect,
and the ``tripwire`` fixture stops any such attempt before a packet leaves and fails the test:
aiohttp's at the event loop's ``sock_connect``, reqwest's (which connects from Rust) where
``ReqwestSender`` fixes the one address a client may reach.
Loopback targets are aimed at ``Trap``, a real listener outside the allow-list that counts
the connections it accepts: it must see none.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError
from yarl import URL

from ccpush.clock import ManualClock, SystemClock
from ccpush.errors import CcpushError, TargetRefused
from ccpush.guard import (
    GuardedResolver,
    TargetPolicy,
    check_address,
    check_target,
    check_url,
    guarded_socket_factory,
    host_problem,
    refusal_in,
)
from ccpush.models import ErrorKind
from ccpush.senders import SENDERS, HttpClient, Pushes, ReqwestSender, Sender, SenderLimits
from ccpush.senders.reqwest import ANSWER_LIFETIME
from ccpush.settings import Settings
from tests.fakedns import FakeDNS
from tests.receiver import Receiver, Reply

BODY = b'{"callSessionId":"s1"}'
NOTHING = TargetPolicy()
"""The default policy: nothing beyond global addresses."""
LIMITS = SenderLimits(timeout=2.0, connect_timeout=1.0)

# What the fake DNS answers; each list is one answer. Names under .test never reach real DNS.
NAMES: dict[str, list[list[str]]] = {
    "metadata.test": [["169.254.169.254"]],
    "intranet.test": [["10.20.30.40"]],
    "mixed.test": [["93.184.216.34", "192.168.1.1"]],
    "v6-private.test": [["fd12:3456::1"]],
    "cgnat.test": [["100.64.1.1"]],
    "loopback.test": [["127.0.0.1"]],
    "mapped.test": [["::ffff:127.0.0.1"]],
    "public.test": [["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]],
}


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


LOOPBACKS = ("127.0.0.1", "::1") if _ipv6_loopback() else ("127.0.0.1",)


class Trap:
    """A loopback listener (127.0.0.1 and ::1, one port) counting the connections it accepts."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0
        self._servers: list[asyncio.Server] = []

    async def start(self, hosts: tuple[str, ...] = LOOPBACKS) -> Trap:
        for _ in range(50):  # find a port free on every host
            try:
                await self._bind(hosts)
                return self
            except OSError:
                await self.stop()
        raise RuntimeError(f"no port free on all of {hosts}")

    async def _bind(self, hosts: tuple[str, ...]) -> None:
        self.port = 0
        for host in hosts:
            server = await asyncio.start_server(self._accept, host, self.port)
            self._servers.append(server)
            self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()
        self._servers = []

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.close()


def _local(host: str) -> bool:
    """True for destinations on this machine: loopback, unspecified and their mapped forms."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified


class Tripwire:
    """Where the event loop was asked to connect: locally (let through) or elsewhere (stopped)."""

    def __init__(self) -> None:
        self.local: list[Any] = []
        self.stopped: list[Any] = []


@pytest.fixture
async def tripwire(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Tripwire]:
    """Every socket connect outside this machine fails before it starts, and fails the test.

    aiohttp (through aiohappyeyeballs) connects with ``loop.sock_connect``;
    ``test_the_tripwire_sees_the_connections_aiohttp_makes`` checks that it still does.
    reqwest connects only to the address ``ReqwestSender._keep`` gives a host's client
    (``test_the_tripwire_sees_the_addresses_reqwest_is_given`` checks that it is called).
    """
    loop = asyncio.get_running_loop()
    real_connect = loop.sock_connect
    real_keep = ReqwestSender._keep
    wire = Tripwire()

    async def sock_connect(sock: socket.socket, address: Any) -> None:
        if not _local(str(address[0])):
            wire.stopped.append(address)
            raise OSError(f"tripwire: the test tried to connect to {address}")
        wire.local.append(address)
        await real_connect(sock, address)

    def keep(sender: ReqwestSender, host: str, client: Any, address: str, until: float) -> Any:
        if not _local(address.strip("[]")):
            wire.stopped.append((address,))
            raise OSError(f"tripwire: the test would have let reqwest connect to {address}")
        wire.local.append((address,))
        return real_keep(sender, host, client, address, until)

    monkeypatch.setattr(loop, "sock_connect", sock_connect)
    monkeypatch.setattr(ReqwestSender, "_keep", keep)
    yield wire
    assert wire.stopped == [], f"a test tried to connect outside loopback: {wire.stopped}"


@pytest.fixture
async def trap() -> AsyncIterator[Trap]:
    trap = await Trap().start()
    yield trap
    await trap.stop()


@pytest.fixture
def dns() -> FakeDNS:
    return FakeDNS(NAMES, real={"localhost"})


@pytest.fixture(params=["aiohttp", "reqwest"])
def client(request: pytest.FixtureRequest) -> HttpClient:
    """Each push test runs with both HTTP clients."""
    name: HttpClient = request.param
    return name


def sender_with(
    client: HttpClient, policy: TargetPolicy, resolver: FakeDNS | None = None
) -> Pushes:
    return SENDERS[client](SystemClock(), LIMITS, policy=policy, resolver=resolver)


@pytest.fixture
async def guarded(tripwire: Tripwire, dns: FakeDNS, client: HttpClient) -> AsyncIterator[Pushes]:
    """A sender with the default policy (nothing extra allowed) and the fake DNS."""
    async with sender_with(client, NOTHING, dns) as sender:
        yield sender


METADATA = "link-local address 169.254.169.254 (cloud metadata)"

HOSTILE = [
    # Loopback, aimed at the trap's port: a broken guard would be caught connecting.
    pytest.param("http://127.0.0.1:{port}/cdr", "loopback address 127.0.0.1", id="v4-loopback"),
    pytest.param("https://127.0.0.1:{port}/", "loopback address 127.0.0.1", id="https-loopback"),
    pytest.param("http://127.0.0.2:{port}/", "loopback address 127.0.0.2", id="v4-loopback-2"),
    pytest.param("http://[::1]:{port}/cdr", "loopback address ::1", id="v6-loopback"),
    pytest.param(
        "http://[::ffff:127.0.0.1]:{port}/",
        "loopback address 127.0.0.1 (as IPv4-mapped ::ffff:7f00:1)",
        id="mapped-loopback",
    ),
    pytest.param(
        "http://[0:0:0:0:0:ffff:7f00:1]:{port}/",
        "loopback address 127.0.0.1 (as IPv4-mapped",
        id="mapped-loopback-hex",
    ),
    pytest.param(
        "http://2130706433:{port}/", "loopback address 127.0.0.1 (written 2130706433)", id="decimal"
    ),
    pytest.param(
        "http://0177.0.0.1:{port}/", "loopback address 127.0.0.1 (written 0177.0.0.1)", id="octal"
    ),
    pytest.param(
        "http://017700000001:{port}/",
        "loopback address 127.0.0.1 (written 017700000001)",
        id="octal-whole",
    ),
    pytest.param(
        "http://0x7f.0.0.1:{port}/", "loopback address 127.0.0.1 (written 0x7f.0.0.1)", id="hex"
    ),
    pytest.param(
        "http://0x7f000001:{port}/",
        "loopback address 127.0.0.1 (written 0x7f000001)",
        id="hex-whole",
    ),
    pytest.param(
        "http://127.1:{port}/", "loopback address 127.0.0.1 (written 127.1)", id="short-form"
    ),
    pytest.param(
        "http://127.0.0.1.:{port}/",
        "loopback address 127.0.0.1 (written 127.0.0.1.)",
        id="trailing-dot",
    ),
    pytest.param("http://0.0.0.0:{port}/", "unspecified address 0.0.0.0", id="v4-unspecified"),
    pytest.param(
        "http://0:{port}/", "unspecified address 0.0.0.0 (written 0)", id="v4-unspecified-short"
    ),
    pytest.param(
        "http://\uff11\uff12\uff17.0.0.1:{port}/",
        "loopback address 127.0.0.1",
        id="fullwidth-digits",
    ),
    pytest.param(
        "http://127\u30020\u30020\u30021:{port}/",
        "loopback address 127.0.0.1",
        id="ideographic-dots",
    ),
    pytest.param(
        "http://\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3:{port}/",
        "localhost resolves to loopback address",
        id="enclosed-letters-localhost",
    ),
    pytest.param("HTTP://127.0.0.1:{port}/", "loopback address 127.0.0.1", id="uppercase-scheme"),
    pytest.param("http://[::]:{port}/", "unspecified address ::", id="v6-unspecified"),
    pytest.param(
        "http://localhost:{port}/", "localhost resolves to loopback address", id="localhost"
    ),
    pytest.param(
        "http://LocalHost:{port}/", "localhost resolves to loopback address", id="localhost-case"
    ),
    pytest.param(
        "http://example.com@127.0.0.1:{port}/",
        "loopback address 127.0.0.1",
        id="userinfo-decoy",
    ),
    pytest.param(
        "http://loopback.test:{port}/",
        "loopback.test resolves to loopback address 127.0.0.1",
        id="name-to-loopback",
    ),
    pytest.param(
        "http://mapped.test:{port}/",
        "mapped.test resolves to loopback address 127.0.0.1 (as IPv4-mapped",
        id="name-to-mapped-loopback",
    ),
    # Elsewhere: judged by verdict only (the tripwire stops any connect attempt).
    pytest.param("http://10.0.0.1/", "private address 10.0.0.1", id="rfc1918-10"),
    pytest.param("http://172.16.5.4/", "private address 172.16.5.4", id="rfc1918-172"),
    pytest.param("http://192.168.1.1/", "private address 192.168.1.1", id="rfc1918-192"),
    pytest.param("http://169.254.169.254/latest/meta-data/", METADATA, id="metadata"),
    pytest.param("http://2852039166/", f"{METADATA} (written 2852039166)", id="metadata-decimal"),
    pytest.param(
        "http://0xa9.0xfe.0xa9.0xfe/",
        f"{METADATA} (written 0xa9.0xfe.0xa9.0xfe)",
        id="metadata-hex",
    ),
    pytest.param(
        "http://0251.0376.0251.0376/",
        f"{METADATA} (written 0251.0376.0251.0376)",
        id="metadata-octal",
    ),
    pytest.param("http://169.254.1.1/", "link-local address 169.254.1.1", id="v4-link-local"),
    pytest.param("http://100.64.0.1/", "carrier-grade NAT address 100.64.0.1", id="cgnat"),
    pytest.param(
        "http://100.100.100.200/",
        "carrier-grade NAT address 100.100.100.200 (cloud metadata)",
        id="cgnat-metadata",
    ),
    pytest.param("http://224.0.0.1/", "multicast address 224.0.0.1", id="v4-multicast"),
    pytest.param("http://255.255.255.255/", "broadcast address 255.255.255.255", id="broadcast"),
    pytest.param("http://240.0.0.1/", "reserved address 240.0.0.1", id="class-e"),
    pytest.param("http://0.1.2.3/", "this-network address 0.1.2.3", id="this-network"),
    pytest.param(
        "http://192.0.0.8/", "IETF protocol assignment address 192.0.0.8", id="ietf-192-0-0"
    ),
    pytest.param("http://198.18.0.1/", "benchmarking address 198.18.0.1", id="benchmarking"),
    pytest.param("http://192.0.2.10/", "documentation address 192.0.2.10", id="v4-doc"),
    pytest.param("http://[fd00::1]/", "unique local (private) address fd00::1", id="ula"),
    pytest.param(
        "http://[fd00:ec2::254]/",
        "unique local (private) address fd00:ec2::254 (cloud metadata)",
        id="v6-metadata",
    ),
    pytest.param("http://[fe80::1]/", "link-local address fe80::1", id="v6-link-local"),
    pytest.param(
        "http://[fe80::1%25eth0]/", "link-local address fe80::1%eth0", id="v6-link-local-zone"
    ),
    pytest.param("http://[ff02::1]/", "multicast address ff02::1", id="v6-multicast"),
    pytest.param("http://[2001:db8::1]/", "documentation address 2001:db8::1", id="v6-doc"),
    pytest.param("http://[fec0::1]/", "site-local address (deprecated) fec0::1", id="site-local"),
    pytest.param("http://[2001::1]/", "Teredo address 2001::1", id="teredo"),
    pytest.param("http://[100::1]/", "discard-only address 100::1", id="discard-only"),
    pytest.param(
        "http://[::127.0.0.1]/",
        "IPv4-compatible address (deprecated) ::7f00:1",
        id="v4-compatible",
    ),
    pytest.param(
        "http://[::ffff:10.0.0.1]/",
        "private address 10.0.0.1 (as IPv4-mapped ::ffff:a00:1)",
        id="mapped-private",
    ),
    pytest.param(
        "http://[::ffff:169.254.169.254]/",
        f"{METADATA} (as IPv4-mapped ::ffff:a9fe:a9fe)",
        id="mapped-metadata",
    ),
    pytest.param(
        "http://[::ffff:100.64.0.1]/",
        "carrier-grade NAT address 100.64.0.1 (as IPv4-mapped",
        id="mapped-cgnat",
    ),
    pytest.param(
        "http://[64:ff9b::a9fe:a9fe]/",
        f"{METADATA} (via NAT64 64:ff9b::a9fe:a9fe)",
        id="nat64-metadata",
    ),
    pytest.param(
        "http://[64:ff9b::7f00:1]/",
        "loopback address 127.0.0.1 (via NAT64 64:ff9b::7f00:1)",
        id="nat64-loopback",
    ),
    pytest.param(
        "http://[2002:a9fe:a9fe::1]/", f"{METADATA} (in 6to4 2002:a9fe:a9fe::1)", id="6to4"
    ),
    pytest.param(
        "http://[2002:c0a8:101::1]/",
        "private address 192.168.1.1 (in 6to4 2002:c0a8:101::1)",
        id="6to4-private",
    ),
    pytest.param(
        "http://metadata.test/", f"metadata.test resolves to {METADATA}", id="name-to-metadata"
    ),
    pytest.param(
        "http://intranet.test/",
        "intranet.test resolves to private address 10.20.30.40",
        id="name-to-private",
    ),
    pytest.param(
        "http://mixed.test/",
        "mixed.test resolves to private address 192.168.1.1",
        id="name-one-answer-private",
    ),
    pytest.param(
        "http://v6-private.test/",
        "v6-private.test resolves to unique local (private) address fd12:3456::1",
        id="name-to-ula",
    ),
    pytest.param(
        "http://cgnat.test/",
        "cgnat.test resolves to carrier-grade NAT address 100.64.1.1",
        id="name-to-cgnat",
    ),
    # Schemes other than http and https.
    pytest.param("ftp://example.com/cdr", "scheme 'ftp'", id="ftp"),
    pytest.param("file:///etc/passwd", "scheme 'file'", id="file"),
    pytest.param("gopher://127.0.0.1:{port}/_x", "scheme 'gopher'", id="gopher"),
    pytest.param("dict://127.0.0.1:{port}/", "scheme 'dict'", id="dict"),
    pytest.param("ws://example.com/", "scheme 'ws'", id="websocket"),
]

# The remaining IPv4 ranges written as IPv4-mapped IPv6, and more IPv6 ranges.
HOSTILE += [
    pytest.param(f"http://[::ffff:{v4}]/", f"{reason} (as IPv4-mapped", id=f"mapped-{name}")
    for name, v4, reason in [
        ("unspecified", "0:0", "unspecified address 0.0.0.0"),  # ::ffff:0.0.0.0
        ("this-network", "0.1.2.3", "this-network address 0.1.2.3"),
        ("multicast", "239.1.2.3", "multicast address 239.1.2.3"),
        ("broadcast", "255.255.255.255", "broadcast address 255.255.255.255"),
        ("class-e", "240.0.0.1", "reserved address 240.0.0.1"),
        ("ietf", "192.0.0.8", "IETF protocol assignment address 192.0.0.8"),
        ("benchmarking", "198.19.0.1", "benchmarking address 198.19.0.1"),
        ("documentation", "203.0.113.5", "documentation address 203.0.113.5"),
    ]
] + [
    pytest.param(
        "http://[2001:2::1]/", "IETF protocol assignment address 2001:2::1", id="v6-benchmarking"
    ),
    pytest.param("http://[4000::1]/", "non-global address 4000::1", id="v6-reserved"),
    pytest.param("http://[3fff::1]/", "documentation address 3fff::1", id="v6-doc-3fff"),
    pytest.param(
        "http://[64:ff9b:1::a00:1]/", "local-use NAT64 address 64:ff9b:1::a00:1", id="nat64-local"
    ),
]


@pytest.mark.parametrize(("url", "reason"), HOSTILE)
async def test_the_sender_refuses_hostile_targets_and_never_connects(
    guarded: Pushes, trap: Trap, url: str, reason: str
) -> None:
    outcome = await guarded.send(url.format(port=trap.port), BODY, {})
    assert outcome.error_kind is ErrorKind.BLOCKED, outcome.error
    assert reason in (outcome.error or "")
    assert outcome.status_code is None
    assert trap.accepted == 0


@pytest.mark.parametrize(("url", "reason"), HOSTILE)
async def test_the_configuration_check_refuses_hostile_targets(
    tripwire: Tripwire, dns: FakeDNS, trap: Trap, url: str, reason: str
) -> None:
    refusal = await check_target(url.format(port=trap.port), NOTHING, dns)
    assert refusal is not None
    assert reason in refusal
    assert trap.accepted == 0


async def test_a_dns_answer_that_changes_after_the_check_is_refused_at_push(
    tripwire: Tripwire, trap: Trap, client: HttpClient
) -> None:
    dns = FakeDNS({"rebind.test": [["93.184.216.34"], ["127.0.0.1"]]})
    url = f"http://rebind.test:{trap.port}/cdr"
    assert await check_target(url, NOTHING, dns) is None
    assert tripwire.local == []  # the check resolved, and connected nowhere
    async with sender_with(client, NOTHING, dns) as sender:
        outcome = await sender.send(url, BODY, {})
    assert outcome.error_kind is ErrorKind.BLOCKED
    assert outcome.error == "rebind.test resolves to loopback address 127.0.0.1"
    assert dns.calls == ["rebind.test", "rebind.test"]
    assert trap.accepted == 0


async def test_a_redirect_to_a_forbidden_address_is_not_followed(
    tripwire: Tripwire, receiver: Receiver, client: HttpClient
) -> None:
    elsewhere = await Trap().start(hosts=("127.0.0.2",))
    location = f"http://127.0.0.2:{elsewhere.port}/cdr"
    receiver.responder = lambda push, seen: Reply(status=302, headers={"Location": location})
    policy = TargetPolicy.parse("127.0.0.1/32")
    try:
        async with sender_with(client, policy) as sender:
            outcome = await sender.send(receiver.url, BODY, {})
            direct = await sender.send(location, BODY, {})
    finally:
        await elsewhere.stop()
    assert (outcome.status_code, outcome.error_kind) == (302, ErrorKind.HTTP_STATUS)
    assert not outcome.ok
    assert f"redirect to {location} not followed" in (outcome.error or "")
    assert len(receiver.pushes) == 1
    assert direct.error_kind is ErrorKind.BLOCKED
    assert direct.error == "loopback address 127.0.0.2"
    assert elsewhere.accepted == 0


async def test_the_tripwire_sees_the_connections_aiohttp_makes(
    tripwire: Tripwire, receiver: Receiver
) -> None:
    policy = TargetPolicy.parse("127.0.0.1/32")
    async with Sender(SystemClock(), LIMITS, policy=policy) as sender:
        assert (await sender.send(receiver.url, BODY, {})).ok
    assert tripwire.local == [("127.0.0.1", receiver.port)]


async def test_a_refusal_is_not_kept_for_the_next_push(
    tripwire: Tripwire, receiver: Receiver, client: HttpClient
) -> None:
    """The name is resolved again at the next push: an answer the guard refused says
    nothing of the next one."""
    dns = FakeDNS({"flip.test": [["127.0.0.2"], ["127.0.0.1"]]})
    policy = TargetPolicy.parse("127.0.0.1/32")
    url = f"http://flip.test:{receiver.port}/cdr"
    async with sender_with(client, policy, dns) as sender:
        refused = await sender.send(url, BODY, {})
        allowed = await sender.send(url, BODY, {})
    assert refused.error_kind is ErrorKind.BLOCKED
    assert allowed.ok, allowed.error
    assert dns.calls == ["flip.test", "flip.test"]
    assert len(receiver.pushes) == 1


async def test_reqwest_resolves_a_new_name_once_for_pushes_that_arrive_together(
    tripwire: Tripwire, receiver: Receiver
) -> None:
    dns = FakeDNS({"receiver.test": [["127.0.0.1"]]})
    policy = TargetPolicy.parse("127.0.0.1/32")
    url = f"http://receiver.test:{receiver.port}/cdr"
    async with ReqwestSender(SystemClock(), LIMITS, policy=policy, resolver=dns) as sender:
        outcomes = await asyncio.gather(*(sender.send(url, BODY, {}) for _ in range(20)))
    assert all(outcome.ok for outcome in outcomes)
    assert dns.calls == ["receiver.test"]
    assert tripwire.local == [("127.0.0.1",)]


async def test_the_tripwire_sees_the_addresses_reqwest_is_given(
    tripwire: Tripwire, receiver: Receiver
) -> None:
    dns = FakeDNS({"receiver.test": [["127.0.0.1"]], "elsewhere.test": [["10.0.0.1"]]})
    policy = TargetPolicy.parse("127.0.0.1/32, 10.0.0.0/8")  # lets 10.0.0.1 past the guard
    async with ReqwestSender(SystemClock(), LIMITS, policy=policy, resolver=dns) as sender:
        assert (await sender.send(f"http://receiver.test:{receiver.port}/", BODY, {})).ok
        assert (await sender.send(receiver.url, BODY, {})).ok
        stopped = await sender.send("http://elsewhere.test/", BODY, {})
    assert tripwire.local == [("127.0.0.1",), ("127.0.0.1",)]
    assert "tripwire" in (stopped.error or "")
    assert tripwire.stopped == [("10.0.0.1",)]
    tripwire.stopped.clear()  # stopped as it should be: not a failure of this test


async def test_reqwest_connects_to_a_names_ipv4_address_when_it_has_both(
    tripwire: Tripwire, receiver: Receiver
) -> None:
    """reqwest takes one address per name: the IPv4 one, whatever the answer's order (the
    receiver listens on 127.0.0.1 only)."""
    dns = FakeDNS({"dual.test": [["::1", "127.0.0.1"]]})
    policy = TargetPolicy.parse("127.0.0.1/32, ::1/128")
    async with ReqwestSender(SystemClock(), LIMITS, policy=policy, resolver=dns) as sender:
        outcome = await sender.send(f"http://dual.test:{receiver.port}/cdr", BODY, {})
    assert outcome.ok, outcome.error
    assert tripwire.local == [("127.0.0.1",)]


async def test_reqwest_checks_a_name_again_once_its_answer_is_old(
    tripwire: Tripwire, receiver: Receiver
) -> None:
    """A client pinned to a checked address is not used past the answer's lifetime: the
    name is resolved and checked again, so a later answer cannot ride on the old pin."""
    script = [["127.0.0.1"], ["127.0.0.1"], ["127.0.0.2"]]
    dns = FakeDNS({"receiver.test": script})
    policy = TargetPolicy.parse("127.0.0.1/32")
    url = f"http://receiver.test:{receiver.port}/cdr"
    clock = ManualClock()
    async with ReqwestSender(clock, LIMITS, policy=policy, resolver=dns) as sender:
        assert (await sender.send(url, BODY, {})).ok
        clock.advance(ANSWER_LIFETIME - timedelta(seconds=1))
        assert (await sender.send(url, BODY, {})).ok
        assert dns.calls == ["receiver.test"]  # the answer is still young
        clock.advance(timedelta(seconds=1))
        assert (await sender.send(url, BODY, {})).ok  # old: resolved again, same address
        clock.advance(ANSWER_LIFETIME)
        refused = await sender.send(url, BODY, {})
    assert dns.calls == ["receiver.test"] * 3
    assert refused.error_kind is ErrorKind.BLOCKED
    assert refused.error == "receiver.test resolves to loopback address 127.0.0.2"
    assert len(receiver.pushes) == 3


async def test_an_allowed_network_is_reached_through_its_checked_address(
    tripwire: Tripwire, receiver: Receiver, client: HttpClient
) -> None:
    dns = FakeDNS({"receiver.test": [["127.0.0.1"]]})
    policy = TargetPolicy.parse("127.0.0.1/32")
    async with sender_with(client, policy, dns) as sender:
        by_name = await sender.send(f"http://receiver.test:{receiver.port}/cdr", BODY, {})
        by_address = await sender.send(receiver.url, BODY, {})
    assert by_name.ok, by_name.error
    assert by_address.ok, by_address.error
    assert len(receiver.pushes) == 2


@pytest.mark.parametrize(
    ("allowed", "address", "reached"),
    [
        ("127.0.0.0/8", "127.0.0.1", True),
        ("127.0.0.0/8", "127.255.255.254", True),
        ("127.0.0.0/8", "::ffff:127.0.0.1", True),
        ("127.0.0.0/8", "::1", False),
        ("127.0.0.0/8", "10.0.0.1", False),
        ("127.0.0.0/8", "169.254.169.254", False),
        ("127.0.0.1/32", "127.0.0.2", False),
        ("10.1.0.0/16", "10.1.255.255", True),
        ("10.1.0.0/16", "::ffff:10.1.0.5", True),
        ("10.1.0.0/16", "10.2.0.1", False),
        ("10.1.0.0/16", "10.0.255.255", False),
        ("::1/128", "::1", True),
        ("::1/128", "127.0.0.1", False),
        ("fd00::/8", "fd00::5", True),
        ("fd00::/8", "fe80::1", False),
        ("::/96", "127.0.0.1", False),  # an IPv6 network never holds an IPv4 address
        ("0.0.0.0/8", "::", False),
    ],
)
def test_allowed_networks_open_exactly_their_range(
    allowed: str, address: str, reached: bool
) -> None:
    policy = TargetPolicy.parse(allowed)
    assert (check_address(address, policy) is None) is reached
    assert check_address(address, NOTHING) is not None  # forbidden unless opened


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "2a00:1450:4001:80b::200e",
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8
        "2002:808:808::1",  # 6to4 of 8.8.8.8
        "::ffff:8.8.8.8",
    ],
)
def test_global_addresses_are_allowed(address: str) -> None:
    assert check_address(address, NOTHING) is None
    assert check_address(ipaddress.ip_address(address), NOTHING) is None


def test_what_is_not_an_address_is_refused() -> None:
    assert check_address("example.com", NOTHING) == "'example.com' is not an IP address"


@pytest.mark.parametrize(
    ("text", "networks"),
    [
        ("", ()),
        (" ", ()),
        ("127.0.0.0/8", ("127.0.0.0/8",)),
        (" 127.0.0.0/8 , ::1/128 ,", ("127.0.0.0/8", "::1/128")),
        ("10.0.0.7", ("10.0.0.7/32",)),
    ],
)
def test_a_policy_is_parsed_from_a_cidr_list(text: str, networks: tuple[str, ...]) -> None:
    parsed = TargetPolicy.parse(text).allowed_networks
    assert parsed == tuple(ipaddress.ip_network(network) for network in networks)


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("nonsense", "nonsense"),
        ("10.0.0.0/33", "10.0.0.0/33"),
        ("10.0.0.1/8", "10.0.0.1/8"),
        ("300.1.1.1", "300.1.1.1"),
        ("::1/129", "::1/129"),
        ("127.0.0.0/8, bogus", "bogus"),
        ("10.0.0.0/8; 192.168.0.0/16", "10.0.0.0/8; 192.168.0.0/16"),
        ("localhost", "localhost"),
    ],
)
def test_a_policy_refuses_junk_naming_the_entry(text: str, bad: str) -> None:
    with pytest.raises(ValueError, match="allowed target network") as caught:
        TargetPolicy.parse(text)
    assert repr(bad) in str(caught.value)


def test_settings_validate_and_parse_allowed_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCPUSH_ALLOWED_TARGET_NETWORKS", "10.0.0.0/8, fd00::/8")
    assert Settings().target_policy == TargetPolicy.parse("10.0.0.0/8,fd00::/8")
    monkeypatch.setenv("CCPUSH_ALLOWED_TARGET_NETWORKS", "10.0.0.0/8, junk")
    with pytest.raises(ValidationError, match="allowed target network 'junk'"):
        Settings()
    monkeypatch.delenv("CCPUSH_ALLOWED_TARGET_NETWORKS")
    assert Settings().target_policy == NOTHING


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://[::1/", "not a valid URL"),
        ("http:///cdr", "the push address has no host"),
        ("/cdr", "no scheme: a push address must be http or https"),
        ("http://nowhere.test/", "nowhere.test does not resolve"),
        ("http://1572395042/", "an unusual way to write 93.184.216.34"),
        (f"http://{'a' * 64}.test/", "has a label of 64 characters (at most 63)"),
        ("http://" + "a." * 127 + "test/", "longer than 253 characters"),
        ("http://xn--a.test/", "has a label that is not valid IDNA (xn--a)"),
        (f"http://{'é' * 64}.test/", "not a valid URL"),
    ],
)
async def test_the_configuration_check_explains_other_problems(
    tripwire: Tripwire, dns: FakeDNS, url: str, message: str
) -> None:
    assert message in (await check_target(url, NOTHING, dns) or "")


@pytest.mark.parametrize(
    "url",
    [
        "http://public.test/cdr",
        "https://public.test:8443/cdr",
        "http://93.184.216.34/cdr",
        "https://[2606:2800:220:1:248:1893:25c8:1946]/cdr",
    ],
)
async def test_the_configuration_check_passes_public_targets_without_connecting(
    tripwire: Tripwire, dns: FakeDNS, url: str
) -> None:
    assert await check_target(url, NOTHING, dns) is None


def test_the_refusal_is_a_ccpush_error_and_an_os_error() -> None:
    refused = TargetRefused("loopback address 127.0.0.1")
    assert isinstance(refused, CcpushError)
    assert isinstance(refused, OSError)
    assert str(refused) == "loopback address 127.0.0.1"
    assert refused.errno is None


async def test_aiohttp_carries_a_resolver_refusal_as_the_dns_error_cause(
    tripwire: Tripwire, trap: Trap
) -> None:
    dns = FakeDNS({"trap.test": [["127.0.0.1"]]})
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(NOTHING, dns))
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorDNSError) as caught:
            await session.get(f"http://trap.test:{trap.port}/")
    assert isinstance(caught.value.os_error, TargetRefused)
    assert refusal_in(caught.value) is caught.value.os_error
    assert str(caught.value.os_error) == "trap.test resolves to loopback address 127.0.0.1"
    assert trap.accepted == 0


@pytest.mark.parametrize(
    ("host", "reason"),
    [("127.0.0.1", "loopback address 127.0.0.1"), ("[::1]", "loopback address ::1")],
)
async def test_ip_literals_skip_the_resolver_and_meet_the_socket_factory(
    tripwire: Tripwire, trap: Trap, host: str, reason: str
) -> None:
    dns = FakeDNS({})
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(NOTHING, dns), socket_factory=guarded_socket_factory(NOTHING)
    )
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await session.get(f"http://{host}:{trap.port}/")
    assert not isinstance(caught.value, aiohttp.ClientConnectorDNSError)
    assert isinstance(caught.value.os_error, TargetRefused)
    assert str(refusal_in(caught.value)) == reason
    assert dns.calls == []  # aiohttp never asked the resolver: hence the socket factory
    assert trap.accepted == 0


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("0x7f.0.0.1", "0x7f.0.0.1 resolves to loopback address 127.0.0.1"),
        ("0x7f.1", "0x7f.1 resolves to loopback address 127.0.0.1"),
        ("localhost", "localhost resolves to loopback address"),
    ],
)
async def test_the_real_resolver_reads_numeric_spellings_and_the_guard_refuses_them(
    host: str, reason: str
) -> None:
    resolver = GuardedResolver(NOTHING)  # aiohttp's ThreadedResolver: getaddrinfo, no DNS
    try:
        with pytest.raises(TargetRefused, match="resolves to loopback address") as caught:
            await resolver.resolve(host, 80, socket.AF_UNSPEC)
    finally:
        await resolver.close()
    assert str(caught.value).startswith(reason)


async def test_refusals_are_not_cached_and_allowed_answers_are_checked_each_lookup(
    tripwire: Tripwire,
) -> None:
    dns = FakeDNS({"flip.test": [["127.0.0.1"], ["93.184.216.34"], ["10.0.0.1"]]})
    resolver = GuardedResolver(NOTHING, dns)
    with pytest.raises(TargetRefused, match="loopback"):
        await resolver.resolve("flip.test", 80, socket.AF_UNSPEC)
    [answer] = await resolver.resolve("flip.test", 80, socket.AF_UNSPEC)
    assert answer["host"] == "93.184.216.34"
    with pytest.raises(TargetRefused, match=r"private address 10\.0\.0\.1"):
        await resolver.resolve("flip.test", 80, socket.AF_UNSPEC)


async def test_an_empty_answer_is_a_connect_failure_not_a_crash(
    tripwire: Tripwire, client: HttpClient
) -> None:
    dns = FakeDNS({"empty.test": [[]]})
    async with sender_with(client, NOTHING, dns) as sender:
        outcome = await sender.send("http://empty.test/", BODY, {})
    assert outcome.error_kind is ErrorKind.CONNECT
    assert "dns: no such host empty.test" in (outcome.error or "")


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("example.com", None),
        ("example.com.", None),
        ("_service.example.com", None),
        ("xn--strae-oqa.example", None),  # straße, as IDNA 2008 writes it
        (f"{'a' * 63}.example", None),
        (("a" * 62 + ".") * 4 + "a", None),  # 253 characters
        ("93.184.216.34", None),
        ("0x7f.1", None),  # an address, spelt oddly: check_address judges it
        ("2606:2800:220:1::1", None),
        ("fe80::1%eth0", None),
        (("a" * 62 + ".") * 4 + "ab", "longer than 253 characters"),
        (f"{'a' * 64}.example", "has a label of 64 characters (at most 63)"),
        ("a..example", "has an empty label"),
        (".example", "has an empty label"),
        ("xn--a.example", "not valid IDNA (xn--a)"),
        ("exa mple.com", "a character no host name may hold"),
        ("ex\x00ample.com", "a character no host name may hold"),
        ("%41.example", "a character no host name may hold"),
        ("1:2:3", "not a valid IPv6 address"),
    ],
)
def test_a_host_must_be_one_dns_can_hold(host: str, problem: str | None) -> None:
    found = host_problem(host)
    if problem is None:
        assert found is None
    else:
        assert problem in (found or "")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"http://{'a' * 64}.test/cdr", "has a label of 64 characters"),
        ("http://xn--a.test/cdr", "not valid IDNA"),
        ("http://a..test/cdr", "has an empty label"),
    ],
)
async def test_the_sender_refuses_a_host_dns_cannot_hold_without_raising(
    guarded: Pushes, dns: FakeDNS, url: str, reason: str
) -> None:
    assert reason in (check_url(URL(url), NOTHING) or "")
    outcome = await guarded.send(url, BODY, {})
    assert outcome.error_kind is ErrorKind.BLOCKED, outcome.error
    assert reason in (outcome.error or "")
    assert dns.calls == []


async def test_a_name_the_system_resolver_cannot_encode_is_a_lookup_failure() -> None:
    resolver = GuardedResolver(NOTHING)  # getaddrinfo refuses the label before any lookup
    try:
        with pytest.raises(socket.gaierror, match="is not a valid host name"):
            await resolver.resolve(f"{'a' * 64}.test", 80, socket.AF_UNSPEC)
    finally:
        await resolver.close()
