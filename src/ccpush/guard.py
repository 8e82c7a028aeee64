"""The SSRF target guard: which addresses a push may reach, checked where it connects.

A push address is typed in by a customer, so every push is a request a stranger aims
from inside our network. By default a push may reach only global unicast addresses
over http or https; ``TargetPolicy.allowed_networks`` opens chosen ranges (that is how
tests and the demo reach their loopback receivers).

The addresses checked are the ones connected to, at three points:

* ``check_url``, before a request: the scheme, a host name DNS cannot hold (a label over
  63 characters, a name over 253, a character no host name has), and a host written as an
  IP address in any spelling ``getaddrinfo`` accepts (``2130706433``, ``0177.0.0.1``,
  ``0x7f.1``...), so that the refusal names the real address.
* ``GuardedResolver``, every DNS answer: all its addresses are checked, and aiohttp
  connects to exactly those (and caches only those), so an answer that changes between
  the configuration check and the push (DNS rebinding) is checked again when it counts.
* ``guarded_socket_factory``, every socket aiohttp opens, for the address it is about to
  connect to. aiohttp hands IP literals to no resolver, so this is their check at
  connect time, and the last one for everything else.

A refusal is a ``TargetRefused``. It is an ``OSError``, so aiohttp carries it out of the
resolver as ``ClientConnectorDNSError.os_error`` and out of the socket factory as
``ClientConnectorError.os_error``; ``refusal_in`` finds it again in what aiohttp raised.

The check made when an address is configured (``check_target``) says, for a loopback or
private address, which setting would open it (``how_to_allow``): the one who sees that
message is setting up a receiver, often on the platform's own network or machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, TypeAlias

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.connector import AddrInfoType, SocketFactoryType
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from ccpush.errors import TargetRefused

__all__ = [
    "ALLOWED_NETWORKS_SETTING",
    "LOOPBACK_NETWORKS",
    "AddressRefused",
    "GuardedResolver",
    "TargetPolicy",
    "TargetRefused",
    "check_address",
    "check_target",
    "check_url",
    "guarded_socket_factory",
    "host_problem",
    "how_to_allow",
    "literal_address",
    "refusal_in",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES: Final = frozenset({"http", "https"})
RESOLVE_SECONDS: Final = 10.0
"""How long ``check_target`` waits for a DNS answer."""
MAX_NAME_LENGTH: Final = 253
"""The longest host name DNS holds (RFC 1035), without its final dot."""
MAX_LABEL_LENGTH: Final = 63
"""The longest label (the text between two dots) of a host name."""
_LABEL: Final = re.compile(r"[A-Za-z0-9_-]+")


def _ranges(*entries: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(network), label) for network, label in entries)


def _networks(*entries: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(entry) for entry in entries)


# First match names the range, so the narrower ranges come first.
V4_RANGES: Final = _ranges(
    ("0.0.0.0/32", "unspecified address"),
    ("0.0.0.0/8", "this-network address"),
    ("10.0.0.0/8", "private address"),
    ("100.64.0.0/10", "carrier-grade NAT address"),
    ("127.0.0.0/8", "loopback address"),
    ("169.254.0.0/16", "link-local address"),
    ("172.16.0.0/12", "private address"),
    ("192.0.0.0/24", "IETF protocol assignment address"),
    ("192.0.2.0/24", "documentation address"),
    ("192.88.99.0/24", "6to4 relay anycast address"),
    ("192.168.0.0/16", "private address"),
    ("198.18.0.0/15", "benchmarking address"),
    ("198.51.100.0/24", "documentation address"),
    ("203.0.113.0/24", "documentation address"),
    ("224.0.0.0/4", "multicast address"),
    ("255.255.255.255/32", "broadcast address"),
    ("240.0.0.0/4", "reserved address"),
)
V6_RANGES: Final = _ranges(
    ("::/128", "unspecified address"),
    ("::1/128", "loopback address"),
    ("::/96", "IPv4-compatible address (deprecated)"),
    ("64:ff9b:1::/48", "local-use NAT64 address"),
    ("100::/64", "discard-only address"),
    ("2001::/32", "Teredo address"),
    ("2001::/23", "IETF protocol assignment address"),
    ("2001:db8::/32", "documentation address"),
    ("3fff::/20", "documentation address"),
    ("fc00::/7", "unique local (private) address"),
    ("fe80::/10", "link-local address"),
    ("fec0::/10", "site-local address (deprecated)"),
    ("ff00::/8", "multicast address"),
)
NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
LOOPBACK_NETWORKS: Final = _networks("127.0.0.0/8", "::1/128")
"""This machine: what development mode (``ccpush serve --dev``) lets pushes reach."""
PRIVATE_NETWORKS: Final = _networks(
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"
)
"""Where on-premises receivers live: the networks a refusal says how to open."""
ALLOWED_NETWORKS_SETTING: Final = "CCPUSH_ALLOWED_TARGET_NETWORKS"
"""The setting that opens networks to pushes (``Settings.allowed_target_networks``)."""
DEV_MODE: Final = "ccpush serve --dev"
IN_6TO4: Final = "in 6to4"
"""How a 6to4 address holds its IPv4 one: reached through a relay, not at it."""
METADATA: Final[dict[IPAddress, str]] = {
    ipaddress.ip_address("169.254.169.254"): "cloud metadata",
    ipaddress.ip_address("169.254.170.2"): "container metadata",
    ipaddress.ip_address("100.100.100.200"): "cloud metadata",
    ipaddress.ip_address("fd00:ec2::254"): "cloud metadata",
}


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    """Which non-global addresses pushes may reach anyway: none unless opened here."""

    allowed_networks: tuple[IPNetwork, ...] = ()
    only_allowed: bool = False
    """Refuse global addresses too: pushes reach only ``allowed_networks`` (for platforms
    whose receivers are all on known networks, and for test runs that must stay local)."""

    @classmethod
    def parse(cls, text: str, *, only_allowed: bool = False) -> TargetPolicy:
        """A policy from a comma-separated CIDR list, e.g. ``"127.0.0.0/8, ::1/128"``."""
        entries = (entry.strip() for entry in text.split(","))
        return cls(tuple(_network(entry) for entry in entries if entry), only_allowed)

    def allows(self, address: IPAddress) -> bool:
        """True if an allowed network holds the address (or the IPv4 one it maps)."""
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(
            candidate.version == network.version and candidate in network
            for candidate in candidates
            for network in self.allowed_networks
        )


def _network(entry: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(entry)
    except ValueError as exc:
        raise ValueError(
            f"allowed target network {entry!r} is not a network in CIDR form"
            f" such as 10.0.0.0/8 or fd00::/8 ({exc})"
        ) from None


def check_address(ip: IPAddress | str, policy: TargetPolicy) -> str | None:
    """None if a push may connect to ``ip``, else why not ("loopback address 127.0.0.1")."""
    try:
        address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    except ValueError:
        return f"{ip!r} is not an IP address"
    if policy.allows(address):
        return None
    if policy.only_allowed:
        return (
            f"address {address} is outside the allowed target networks ({ALLOWED_NETWORKS_SETTING})"
        )
    if isinstance(address, ipaddress.IPv6Address):
        return _check_v6(address, policy)
    return _refusal(address, V4_RANGES)


def _check_v6(address: ipaddress.IPv6Address, policy: TargetPolicy) -> str | None:
    embedded = _embedded_v4(address)
    if embedded is not None:
        inner, how = embedded
        reason = check_address(inner, policy)
        if reason is not None:
            return f"{reason} ({how} {address})"
        if how != IN_6TO4:  # a mapped or NAT64 address reaches exactly the IPv4 one
            return None
    return _refusal(address, V6_RANGES)


def _embedded_v4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "as IPv4-mapped"
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "via NAT64"
    if address.sixtofour is not None:
        return address.sixtofour, IN_6TO4
    return None


def _refusal(address: IPAddress, ranges: Iterable[tuple[IPNetwork, str]]) -> str | None:
    for network, label in ranges:
        if address.version == network.version and address in network:
            return _named(label, address)
    if _non_global(address):
        return _named("non-global address", address)
    return None


def _non_global(address: IPAddress) -> bool:
    return (
        not address.is_global
        or address.is_private
        or address.is_reserved
        or address.is_multicast
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
    )


def _named(label: str, address: IPAddress) -> str:
    note = METADATA.get(address)
    return f"{label} {address}" + (f" ({note})" if note else "")


def how_to_allow(address: IPAddress) -> str | None:
    """How an operator lets pushes reach ``address``, refused as loopback or private: the
    setting that opens it, and development mode for loopback. None for every other address
    (metadata, multicast, documentation...): no receiver should live there."""
    embedded = _embedded_v4(address) if isinstance(address, ipaddress.IPv6Address) else None
    if embedded is not None and embedded[1] == IN_6TO4:
        return None
    inner = address if embedded is None else embedded[0]
    if inner in METADATA:
        return None
    if _within(inner, LOOPBACK_NETWORKS):
        loopback = next(net for net in LOOPBACK_NETWORKS if net.version == inner.version)
        return f"{ALLOWED_NETWORKS_SETTING}={loopback} allows it, or {DEV_MODE} for local testing"
    if _within(inner, PRIVATE_NETWORKS):
        exact = ipaddress.ip_network(inner)
        return f"{ALLOWED_NETWORKS_SETTING}={exact} (or a network holding it) allows it"
    return None


def _within(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


class AddressRefused(TargetRefused):
    """A ``TargetRefused`` for one address a host name resolved to, which it keeps."""

    def __init__(self, message: str, address: IPAddress) -> None:
        super().__init__(message)
        self.address = address


def literal_address(host: str) -> tuple[IPAddress, bool] | None:
    """The address a host written as an IP address names, and whether it is spelt unusually.

    Unusual spellings are the ones ``inet_aton`` (and so ``getaddrinfo``) still reads:
    decimal ``2130706433``, octal ``0177.0.0.1``, hex ``0x7f.0.0.1``, short ``127.1``.
    None for a host name.
    """
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.strip("[]")), False
        except ValueError:
            return None
    try:
        return ipaddress.IPv4Address(host), False
    except ValueError:
        pass
    try:
        packed = socket.inet_aton(host.removesuffix("."))
    except (OSError, ValueError):
        return None
    return ipaddress.IPv4Address(packed), True


def check_url(url: URL, policy: TargetPolicy) -> str | None:
    """Why a push may not go to ``url`` without looking anything up, or None.

    Refuses schemes other than http and https, host names DNS cannot hold, and hosts
    written as a forbidden IP address. Whether a host name's addresses are allowed is left
    to ``GuardedResolver``.
    """
    scheme = url.scheme.lower()
    if scheme not in SCHEMES:
        shown = f"scheme {url.scheme!r}" if scheme else "no scheme"
        return f"{shown}: a push address must be http or https"
    raw_host = url.raw_host  # as sent: IDNA-encoded
    if not raw_host:
        return None
    problem = host_problem(raw_host)
    if problem is not None:
        return problem
    try:
        host = url.host or raw_host  # decoded: an IPv6 zone as written (fe80::1%eth0)
    except UnicodeError:
        return f"the host name {_shown(raw_host)} is not valid IDNA"
    literal = literal_address(host)
    if literal is None:
        return None
    address, unusual = literal
    reason = check_address(address, policy)
    if reason is not None and unusual:
        return f"{reason} (written {host})"
    return reason


def host_problem(host: str) -> str | None:
    """Why ``host`` (a URL's host as sent: IDNA-encoded, an IPv6 address without brackets)
    names no host, or None.

    A name must fit DNS: at most 253 characters, labels of 1 to 63 letters, digits, hyphens
    and underscores, a label in ``xn--`` form valid punycode.
    """
    if literal_address(host) is not None:
        return None
    if ":" in host:
        return f"host {host!r} is not a valid IPv6 address"
    name = host.removesuffix(".")
    if len(name) > MAX_NAME_LENGTH:
        return f"the host name is longer than {MAX_NAME_LENGTH} characters"
    for label in name.split("."):
        problem = _label_problem(label)
        if problem is not None:
            return f"the host name {_shown(name)} {problem}"
    return None


def _label_problem(label: str) -> str | None:
    if not label:
        return "has an empty label (two dots in a row, or a dot first)"
    if len(label) > MAX_LABEL_LENGTH:
        return f"has a label of {len(label)} characters (at most {MAX_LABEL_LENGTH})"
    if not _LABEL.fullmatch(label):
        return "has a character no host name may hold"
    if label[:4].lower() == "xn--":
        try:
            URL.build(scheme="http", host=label).host  # noqa: B018 - decodes it as aiohttp does
        except UnicodeError:
            return f"has a label that is not valid IDNA ({label})"
    return None


def _shown(name: str) -> str:
    return repr(name if len(name) <= 40 else name[:37] + "...")


class GuardedResolver(AbstractResolver):
    """Resolves with another resolver and refuses the whole answer if any address is forbidden.

    aiohttp connects to the addresses returned here, and only to them, so what is checked is
    what is connected to. The wrapped resolver defaults to aiohttp's ``ThreadedResolver``.
    """

    def __init__(self, policy: TargetPolicy, resolver: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._resolver = resolver
        self._owns_resolver = resolver is None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            answers = await self._wrapped().resolve(host, port, family)
        except UnicodeError as exc:  # the system resolver cannot encode the name
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is not a valid host name") from exc
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} resolves to no address")
        for answer in answers:
            reason = check_address(answer["host"], self.policy)
            if reason is not None:
                raise _refusal_of(answer["host"], f"{host} resolves to {reason}")
        return answers

    async def close(self) -> None:
        if self._resolver is not None and self._owns_resolver:
            await self._resolver.close()

    def _wrapped(self) -> AbstractResolver:
        if self._resolver is None:  # made here: ThreadedResolver wants a running loop
            self._resolver = ThreadedResolver()
        return self._resolver


def _refusal_of(host: str, message: str) -> TargetRefused:
    try:
        return AddressRefused(message, ipaddress.ip_address(host))
    except ValueError:  # not an address at all: nothing an operator could open
        return TargetRefused(message)


def guarded_socket_factory(policy: TargetPolicy) -> SocketFactoryType:
    """An aiohttp ``socket_factory`` that refuses to open a socket to a forbidden address."""

    def open_socket(addr_info: AddrInfoType) -> socket.socket:
        family, kind, proto, _, sockaddr = addr_info
        reason = check_address(str(sockaddr[0]), policy)
        if reason is not None:
            raise TargetRefused(reason)
        return socket.socket(family=family, type=kind, proto=proto)

    return open_socket


def refusal_in(exc: BaseException) -> TargetRefused | None:
    """The ``TargetRefused`` behind an exception aiohttp raised, if the guard caused it."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if isinstance(current, TargetRefused):
            return current
        if id(current) in seen:
            continue
        seen.add(id(current))
        linked = (getattr(current, "os_error", None), current.__cause__, current.__context__)
        pending.extend(item for item in linked if isinstance(item, BaseException))
    return None


async def check_target(
    url: str,
    policy: TargetPolicy,
    resolver: AbstractResolver | None = None,
) -> str | None:
    """The check made when a push address is configured: None if fine, else what is wrong.

    Checks the scheme and host, resolves a host name (with ``resolver``, by default aiohttp's
    ``ThreadedResolver``) and refuses it unless every address is allowed. Nothing is
    connected to. Pushes are checked again when made: DNS answers change.
    """
    try:
        parsed = URL(url)
        port = parsed.port
    except (ValueError, TypeError) as exc:
        return f"not a valid URL: {exc}"
    reason = check_url(parsed, policy)
    if reason is not None:
        return _hinted(reason, _refused_literal(parsed, policy))
    host = parsed.raw_host
    if not host:
        return "the push address has no host"
    literal = literal_address(parsed.host or host)  # check_url made sure it decodes
    if literal is not None:
        return _unusual_spelling(host, literal)
    return await _check_name(host, port or 0, policy, resolver)


def _refused_literal(url: URL, policy: TargetPolicy) -> IPAddress | None:
    """The host of ``url`` if it is an IP address and the address is why ``check_url``
    refused it (not the scheme, nor the host's spelling)."""
    if url.scheme.lower() not in SCHEMES:
        return None
    try:
        literal = literal_address(url.host or "")
    except UnicodeError:
        return None
    if literal is None or check_address(literal[0], policy) is None:
        return None
    return literal[0]


def _hinted(reason: str, address: IPAddress | None) -> str:
    """A refusal, with how to allow the refused address when a setting can."""
    hint = None if address is None else how_to_allow(address)
    return reason if hint is None else f"{reason}; {hint}"


def _unusual_spelling(host: str, literal: tuple[IPAddress, bool]) -> str | None:
    address, unusual = literal
    if unusual:  # allowed, but aiohttp refuses some (2130706433, 127.1) as invalid URLs
        return f"host {host} is an unusual way to write {address}; write {address}"
    return None


async def _check_name(
    host: str,
    port: int,
    policy: TargetPolicy,
    resolver: AbstractResolver | None,
) -> str | None:
    guarded = GuardedResolver(policy, resolver)
    try:
        async with asyncio.timeout(RESOLVE_SECONDS):
            await guarded.resolve(host, port, socket.AF_UNSPEC)
    except AddressRefused as exc:
        return _hinted(str(exc), exc.address)
    except TargetRefused as exc:
        return str(exc)
    except TimeoutError:
        return f"{host} did not resolve within {RESOLVE_SECONDS:g}s"
    except OSError as exc:
        return f"{host} does not resolve: {exc}"
    finally:
        await guarded.close()
    return None
