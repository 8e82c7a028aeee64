"""One HTTP attempt made by reqwest, the Rust client, through pyreqwest: ``ReqwestSender``.

The same contract as aiohttp's ``ccpush.senders.aiohttp.Sender``: the same outcomes, error
kinds, headers, excerpt and target policy, at about half the CPU per push
(``bench/throughput.py``), the HTTP work running in reqwest's own thread. Chosen with
``CCPUSH_HTTP_CLIENT=reqwest``.

The guard. reqwest resolves names and opens sockets in Rust, where no Python resolver or
socket factory can look, so the one address each request may reach is decided here, before
it is sent, by ``_route``:

* a host written as an IP address, as reqwest's own URL parser reads it (so that what is
  checked is what it connects to), is checked with ``check_address``;
* a host name is resolved through ``GuardedResolver`` (every address in the answer
  checked) and its client is built pinned to one checked address, IPv4 if the name has
  one (``ClientBuilder.resolve``), so reqwest never asks DNS for it. An answer is kept
  ``ANSWER_LIFETIME`` (by the sender's clock); a refusal is not.

Each destination host has its own client (one per client certificate presented to it):
its pool is the host's kept-alive connections, and its request limit is the per-host cap.
Redirects are not followed, no proxy but ``SenderLimits.proxy`` is used, no cookie is kept
and nothing is decompressed.

Through the egress proxy the guard's decision holds as it does without: an http push is
sent to the checked address (``Host`` keeps the name), an https one through a
``TunnelRelay`` (``ccpush.senders.tunnel``) that asks the proxy for the checked address.

Trusting ``CCPUSH_CA_BUNDLE`` alone (``ca_bundle_only``) takes the process's environment:
reqwest reads its system store from ``SSL_CERT_FILE``, which a push process is given
(``ccpush.senders.processes``), so with reqwest it needs push processes.

An answer is judged as ``ccpush.senders.base`` says: by its status once its head is read
(the response is handed over as soon as it is: ``streamed_read_buffer_limit(0)``, so that
what befalls the body after cannot fail the attempt), its body only excerpted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Final

from aiohttp.abc import AbstractResolver
from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import (
    ConnectError,
    ConnectTimeoutError,
    NetworkError,
    PyreqwestError,
    RequestTimeoutError,
)
from pyreqwest.http import Url
from pyreqwest.proxy import ProxyBuilder
from pyreqwest.response import Response, ResponseBodyReader
from yarl import URL

from ccpush.clock import Clock
from ccpush.endpoint import ClientCertificate
from ccpush.guard import GuardedResolver, TargetPolicy, check_address, check_url, refusal_in
from ccpush.models import ErrorKind, Outcome
from ccpush.senders.base import (
    TARGETS_KEPT,
    Answer,
    LocalPushes,
    SenderLimits,
    back_off_seconds,
    connect_refused,
    connect_timeout,
    judge_status,
    make_outcome,
    no_such_host,
    read_timeout,
    untrusted_certificate,
    with_push_headers,
)
from ccpush.senders.egress import (
    HOSTS_KEPT,
    UnusableCertificate,
    certificate_id,
    host_header,
    platform_identity,
    proxy_unreachable,
    trusted_context,
    without_certificate,
)
from ccpush.senders.tunnel import TunnelRelay

ANSWER_LIFETIME: Final = timedelta(seconds=60)
"""How long an allowed DNS answer is used before the name is resolved (and checked) again."""
FOREVER: Final = datetime.max.replace(tzinfo=UTC)
ROUTES_KEPT: Final = 1024
TRUST: Final = "SSL_CERT_FILE"
"""Where reqwest reads the system's CAs from, if set (rustls-native-certs)."""
_RouteKey = tuple[str, str | None]
"""A route's host, and the digest of the client certificate presented there (if any)."""


@dataclass(frozen=True, slots=True)
class _Target:
    """A push address, read once: the guard's verdict on its spelling, and reqwest's URL."""

    refused: str | None
    invalid: str | None = None
    url: Url | None = None
    host: str = ""
    port: int = 0
    literal: bool = False
    parsed: URL | None = None


@dataclass(frozen=True, slots=True)
class _Route:
    """The client for one host, and the one address it connects to."""

    client: Client
    address: str
    until: datetime
    """When the host name is to be resolved again."""


class ReqwestSender(LocalPushes):
    """Makes push attempts with reqwest, a client per host reusing its connections."""

    def __init__(
        self,
        clock: Clock,
        limits: SenderLimits | None = None,
        *,
        policy: TargetPolicy | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        super().__init__(clock, limits, policy=policy, resolver=resolver)
        self._guarded: GuardedResolver | None = None
        self._targets: dict[str, _Target] = {}
        self._routes: dict[_RouteKey, _Route] = {}
        self._lookups: dict[_RouteKey, asyncio.Future[_Route]] = {}
        limits = self.limits
        bundle = limits.ca_bundle
        if bundle is not None and limits.ca_bundle_only and os.environ.get(TRUST) != bundle:
            raise ValueError(
                "reqwest trusts only CCPUSH_CA_BUNDLE in push processes: set"
                " CCPUSH_PUSH_PROCESSES to 1 or more, or use CCPUSH_HTTP_CLIENT=aiohttp"
            )
        self._trusted = Path(bundle).read_bytes() if bundle is not None else None
        """The CAs of ``limits.ca_bundle``, trusted besides the system's."""
        self._platform = platform_identity(limits.client_cert, limits.client_key)
        self._platform_id = certificate_id(self._platform)
        self._checked: dict[str, str] = {}
        """The address the guard passed last for each host name (for the tunnel relay)."""
        self._relay: TunnelRelay | None = None

    async def start(self) -> None:
        if self._guarded is None:
            self._guarded = GuardedResolver(self.policy, self.resolver)
        proxy = self.limits.proxy
        if proxy is not None and self._relay is None:
            limits = self.limits
            trusted = trusted_context(limits.ca_bundle, limits.ca_bundle_only)
            self._relay = TunnelRelay(
                proxy, self._checked.get, self.policy, limits.connect_timeout, trusted
            )
            await self._relay.start()

    async def close(self) -> None:
        routes, self._routes = self._routes, {}
        for route in routes.values():  # a client per host: each closed once
            await route.client.close()
        if self._relay is not None:
            await self._relay.close()
            self._relay = None
        if self._guarded is not None:
            await self._guarded.close()
            self._guarded = None

    async def send(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        *,
        started_at: datetime | None = None,
        client_certificate: ClientCertificate | None = None,
    ) -> Outcome:
        """``Pushes.send``; a host name's answer is used until ``ANSWER_LIFETIME`` after it
        was read, by ``started_at``."""
        if self._guarded is None:
            raise RuntimeError("the sender is not started")
        if started_at is None:
            started_at = self.clock.now()
        began = time.perf_counter()
        target = self._targets.get(url) or self._new_target(url)
        if target.refused is not None:
            return make_outcome(started_at, began, ErrorKind.BLOCKED, target.refused)
        if target.url is None:
            return make_outcome(started_at, began, ErrorKind.INVALID_URL, target.invalid)
        status: int | None = None
        excerpt: bytes | None = None
        kind: ErrorKind | None = None
        error: str | None = None
        retry_after: float | None = None
        certificate = client_certificate or self._platform
        key = (target.host, certificate_id(client_certificate) or self._platform_id)
        try:
            route = self._routes.get(key)
            if route is None or route.until <= started_at:
                route = await self._route(target, started_at, key, certificate)
            url_to, sent = self._request(target, route, with_push_headers(headers))
            request = route.client.post(url_to).headers(sent)
            streamed = request.body_bytes(body).streamed_read_buffer_limit(0).build_streamed()
            async with streamed as response:
                status, kind, error, excerpt = await _read(response, self.limits.excerpt_bytes)
                if kind is not None:
                    wait = _header(response, "Retry-After")
                    retry_after = back_off_seconds(status, wait, started_at)
        except (PyreqwestError, OSError, TimeoutError) as exc:
            took = time.perf_counter() - began
            kind, error = self._proxy_failure(exc, target) or _classify(
                exc, target, self.limits, took
            )
            https = target.url.scheme == "https"
            error = without_certificate(error, https, certificate is not None)
        except UnusableCertificate as exc:
            kind, error = ErrorKind.TLS, f"tls: {exc}"
        return make_outcome(started_at, began, kind, error, status, excerpt, retry_after)

    def _new_target(self, url: str) -> _Target:
        if len(self._targets) >= TARGETS_KEPT:
            self._targets.clear()
        self._targets[url] = target = _read_target(url, self.policy)
        return target

    def _request(
        self, target: _Target, route: _Route, headers: dict[str, str]
    ) -> tuple[Url, dict[str, str]]:
        """The URL a request goes to and its headers: through the proxy, an http push goes
        to the checked address, its ``Host`` the name."""
        assert target.url is not None
        if self._relay is None or target.literal or target.url.scheme != "http":
            return target.url, headers
        assert target.parsed is not None
        at_address = Url(str(target.parsed.with_host(route.address)))
        return at_address, {**headers, "Host": host_header(target.parsed)}

    def _proxy_failure(self, exc: BaseException, target: _Target) -> tuple[ErrorKind, str] | None:
        """What the proxy did to a push, if it failed it: unreachable, or refused the tunnel
        (which the relay knows)."""
        proxy = self.limits.proxy
        if proxy is None or self._relay is None or not isinstance(exc, ConnectError):
            return None
        if target.url is not None and target.url.scheme == "https":
            asked = f"{target.host}:{target.port}"
            failure = self._relay.failures.get(asked)
            return None if failure is None else (ErrorKind.CONNECT, failure)
        causes = _causes(exc)
        if any("tcp connect" in cause for cause in causes):
            refused = any("Connection refused" in cause for cause in causes)
            reason = "connection refused" if refused else "no connection"
            return ErrorKind.CONNECT, proxy_unreachable(proxy, reason)
        return None

    async def _route(
        self,
        target: _Target,
        now: datetime,
        key: _RouteKey,
        certificate: ClientCertificate | None,
    ) -> _Route:
        """The client for ``target``'s host and the certificate presented to it, made (and
        the host's name resolved) if need be: the one place that decides where reqwest
        connects."""
        if target.literal:
            client = self._client(None, certificate)
            return self._keep(key, client, target.host, FOREVER)
        pending = self._lookups.get(key)
        if pending is None:  # one lookup per host, however many pushes wait for it
            pending = asyncio.ensure_future(self._resolve(target, now, key, certificate))
            self._lookups[key] = pending
            pending.add_done_callback(lambda _: self._lookups.pop(key, None))
        return await asyncio.shield(pending)

    async def _resolve(
        self,
        target: _Target,
        now: datetime,
        key: _RouteKey,
        certificate: ClientCertificate | None,
    ) -> _Route:
        assert self._guarded is not None
        async with asyncio.timeout(self.limits.connect_timeout):
            answers = await self._guarded.resolve(target.host, target.port, socket.AF_UNSPEC)
        # The guard checked them all. reqwest takes one address per name: an IPv4 one if
        # any, the family every network reaches (no fallback to the others, as aiohttp has).
        address = min((answer["host"] for answer in answers), key=lambda host: ":" in host)
        until = now + ANSWER_LIFETIME
        if len(self._checked) >= HOSTS_KEPT and target.host not in self._checked:
            del self._checked[next(iter(self._checked))]
        self._checked[target.host] = address
        known = self._routes.get(key)
        client = known.client if known and known.address == address else None
        client = client or self._client((target.host, address, target.port), certificate)
        return self._keep(key, client, address, until)

    def _keep(self, key: _RouteKey, client: Client, address: str, until: datetime) -> _Route:
        if len(self._routes) >= ROUTES_KEPT and key not in self._routes:
            del self._routes[next(iter(self._routes))]  # the longest kept
        self._routes[key] = route = _Route(client, address, until)
        return route

    def _client(
        self,
        pinned: tuple[str, str, int] | None = None,
        certificate: ClientCertificate | None = None,
    ) -> Client:
        limits = self.limits
        builder = (
            ClientBuilder()
            .max_connections(limits.per_host)
            .pool_max_idle_per_host(limits.per_host)
            .pool_idle_timeout(timedelta(seconds=limits.idle_seconds))
            .timeout(timedelta(seconds=limits.timeout))
            .connect_timeout(timedelta(seconds=limits.connect_timeout))
            .follow_redirects(False)
            .http1_allow_obsolete_multiline_headers_in_responses(True)  # as aiohttp reads them
            .referer(False)
            .gzip(False)
            .brotli(False)
            .zstd(False)
            .deflate(False)
        )
        if pinned is not None:
            builder = builder.resolve(*pinned)
        if self._trusted is not None:
            builder = builder.add_root_certificate_pem(self._trusted)
        if certificate is not None:
            builder = _with_identity(builder, certificate)
        return self._with_proxy(builder).build()

    def _with_proxy(self, builder: ClientBuilder) -> ClientBuilder:
        proxy = self.limits.proxy
        if proxy is None or self._relay is None:
            return builder.no_proxy()
        http = ProxyBuilder.http(proxy.url)
        if proxy.username is not None:
            http = http.basic_auth(proxy.username, proxy.password or "")
        return builder.proxy(http).proxy(ProxyBuilder.https(self._relay.url))


def _with_identity(builder: ClientBuilder, certificate: ClientCertificate) -> ClientBuilder:
    identity = f"{certificate.cert_pem.strip()}\n{certificate.key_pem.strip()}\n"
    try:
        return builder.identity_pem(identity.encode())
    except (ValueError, PyreqwestError) as exc:  # its class only: never the PEM
        reason = type(exc).__name__
        raise UnusableCertificate(f"the client certificate cannot be used ({reason})") from None


def _read_target(url: str, policy: TargetPolicy) -> _Target:
    try:
        parsed = URL(url)
        refused = check_url(parsed, policy) if parsed.scheme else None
        if refused is not None:
            return _Target(refused)
        read = Url(url)
    except (ValueError, TypeError) as exc:
        return _Target(None, f"invalid push address: {exc}")
    host = read.host_str or ""
    if not host:
        return _Target(None, "invalid push address: no host")
    literal = _is_address(host)
    if literal:
        refused = check_address(host.strip("[]"), policy)
        if refused is not None:
            return _Target(refused)
    port = read.port_or_known_default or 0
    return _Target(None, url=read, host=host, port=port, literal=literal, parsed=parsed)


def _is_address(host: str) -> bool:
    """Whether reqwest reads ``host`` as an IP address (its parser writes them canonically)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


async def _read(response: Response, excerpt_bytes: int) -> Answer:
    # reqwest refuses every other head that aiohttp refuses (see ccpush.senders.base)
    headers = response.headers
    if "transfer-encoding" in headers and "content-length" in headers:
        return None, ErrorKind.PROTOCOL, _BOTH_LENGTHS, None
    status = response.status
    excerpt = await _first_bytes(response.body_reader, excerpt_bytes)
    if 200 <= status < 300:  # a success needs no look at the rest
        return status, None, None, excerpt
    kind, error = judge_status(status, _reason(status), _location(response))
    return status, kind, error, excerpt


_BOTH_LENGTHS: Final = "invalid answer: both Transfer-Encoding and Content-Length"


async def _first_bytes(body: ResponseBodyReader, limit: int) -> bytes:
    """The first bytes of a body that arrive, up to ``limit``; none if it is cut short,
    broken or late (the status alone judges the attempt)."""
    if not limit:
        return b""
    try:
        chunk = await body.read_chunk()
    except (PyreqwestError, TimeoutError):
        return b""
    return bytes(memoryview(chunk)[:limit]) if chunk else b""


UNREADABLE_LOCATION: Final = "(a Location not in visible ASCII)"


def _location(response: Response) -> str | None:
    try:
        return response.get_header("Location")
    except ValueError:  # reqwest gives a header as text only if it is visible ASCII
        return UNREADABLE_LOCATION


def _header(response: Response, name: str) -> str | None:
    """A header's value, None if absent or not visible ASCII (so unreadable)."""
    try:
        return response.get_header(name)
    except ValueError:
        return None


def _reason(status: int) -> str | None:
    """The status's standard phrase (reqwest does not give the one the receiver sent)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return None


def _classify(
    exc: BaseException, target: _Target, limits: SenderLimits, took: float
) -> tuple[ErrorKind, str]:
    refused = refusal_in(exc)
    if refused is not None:
        return ErrorKind.BLOCKED, str(refused)
    if isinstance(exc, socket.gaierror):
        return ErrorKind.CONNECT, no_such_host(target.host)
    if isinstance(exc, ConnectTimeoutError) and took < limits.timeout:
        return ErrorKind.TIMEOUT, connect_timeout(limits.connect_timeout)
    if isinstance(exc, TimeoutError | RequestTimeoutError | ConnectTimeoutError):
        # reqwest calls the whole request's timeout a connection timeout: it is not one
        return ErrorKind.TIMEOUT, read_timeout(limits.timeout)
    causes = _causes(exc)
    if isinstance(exc, PyreqwestError):  # the first cause repeats the URL: left out
        detail = ": ".join([f"{type(exc).__name__}: {exc.message}", *causes[1:]])
    else:
        detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, ConnectError):
        return _connect_failure(causes, target, detail)
    if isinstance(exc, NetworkError | OSError):
        return ErrorKind.CONNECT, detail
    return ErrorKind.PROTOCOL, detail


_CERTIFICATE: Final = "invalid peer certificate: "


def _connect_failure(causes: list[str], target: _Target, detail: str) -> tuple[ErrorKind, str]:
    # reqwest names a TCP failure so; any other failure to connect over https is TLS's
    if any("tcp connect" in cause for cause in causes):
        if any("Connection refused" in cause for cause in causes):
            return ErrorKind.CONNECT, connect_refused(target.host, target.port)
        return ErrorKind.CONNECT, detail
    if target.url is None or target.url.scheme != "https":
        return ErrorKind.CONNECT, detail
    for cause in causes:
        if _CERTIFICATE in cause:
            return ErrorKind.TLS, untrusted_certificate(cause.partition(_CERTIFICATE)[2])
    return ErrorKind.TLS, f"tls: {detail}"


def _causes(exc: BaseException) -> list[str]:
    details = getattr(exc, "details", None)
    causes = details.get("causes") if isinstance(details, dict) else None
    if not isinstance(causes, list):
        return []
    return [str(cause.get("message", "")) for cause in causes if isinstance(cause, dict)]
