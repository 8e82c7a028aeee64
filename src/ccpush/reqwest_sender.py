"""One HTTP attempt made by reqwest, the Rust client, through pyreqwest: ``ReqwestSender``.

The same contract as ``ccpush.sender.Sender``: the same outcomes, error kinds, headers,
excerpt and target policy, at about half the CPU per push (``bench/throughput.py``), the
HTTP work running in reqwest's own thread. Chosen with ``CCPUSH_HTTP_CLIENT=reqwest``.

The guard. reqwest resolves names and opens sockets in Rust, where no Python resolver or
socket factory can look, so the one address each request may reach is decided here, before
it is sent, by ``_route``:

* a host written as an IP address, as reqwest's own URL parser reads it (so that what is
  checked is what it connects to), is checked with ``check_address``;
* a host name is resolved through ``GuardedResolver`` (every address in the answer
  checked) and its client is built pinned to one checked address, IPv4 if the name has
  one (``ClientBuilder.resolve``), so reqwest never asks DNS for it. An answer is kept
  ``ANSWER_LIFETIME`` (by the sender's clock); a refusal is not.

Each destination host has its own client: its pool is the host's kept-alive connections,
and its request limit is the per-host cap. Redirects are not followed, no proxy is used,
no cookie is kept and nothing is decompressed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Final

from aiohttp.abc import AbstractResolver
from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import (
    ConnectError,
    NetworkError,
    PyreqwestError,
    RequestTimeoutError,
)
from pyreqwest.http import Url
from yarl import URL

from ccpush.clock import Clock
from ccpush.guard import GuardedResolver, TargetPolicy, check_address, check_url, refusal_in
from ccpush.models import ErrorKind, Outcome
from ccpush.sender import (
    TARGETS_KEPT,
    Pushes,
    SenderLimits,
    judge_status,
    make_outcome,
    with_push_headers,
)

ANSWER_LIFETIME: Final = timedelta(seconds=60)
"""How long an allowed DNS answer is used before the name is resolved (and checked) again."""
FOREVER: Final = datetime.max.replace(tzinfo=UTC)
ROUTES_KEPT: Final = 1024
KEEPALIVE: Final = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class _Target:
    """A push address, read once: the guard's verdict on its spelling, and reqwest's URL."""

    refused: str | None
    invalid: str | None = None
    url: Url | None = None
    host: str = ""
    port: int = 0
    literal: bool = False


@dataclass(frozen=True, slots=True)
class _Route:
    """The client for one host, and the one address it connects to."""

    client: Client
    address: str
    until: datetime
    """When the host name is to be resolved again."""


class ReqwestSender(Pushes):
    """Makes push attempts with reqwest, a client per host reusing its connections.

    ``policy`` and ``resolver`` are as for ``ccpush.sender.Sender``.
    """

    def __init__(
        self,
        clock: Clock,
        limits: SenderLimits | None = None,
        *,
        policy: TargetPolicy | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        super().__init__(clock, limits, policy=policy)
        self._resolver = resolver
        self._guarded: GuardedResolver | None = None
        self._targets: dict[str, _Target] = {}
        self._routes: dict[str, _Route] = {}
        self._lookups: dict[str, asyncio.Future[_Route]] = {}

    async def start(self) -> None:
        if self._guarded is None:
            self._guarded = GuardedResolver(self.policy, self._resolver)

    async def close(self) -> None:
        routes, self._routes = self._routes, {}
        for route in routes.values():  # a client per host: each closed once
            await route.client.close()
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
    ) -> Outcome:
        """POST ``body`` to ``url`` once. A 2xx answer is success; anything else is not.

        ``headers`` and ``started_at`` as for ``ccpush.sender.Sender.send``; a host name's
        answer is used until ``ANSWER_LIFETIME`` after it was read, by ``started_at``."""
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
        excerpt: str | None = None
        kind: ErrorKind | None = None
        error: str | None = None
        try:
            route = self._routes.get(target.host)
            if route is None or route.until <= started_at:
                route = await self._route(target, started_at)
            request = route.client.post(target.url).headers(with_push_headers(headers))
            async with request.body_bytes(body).build_streamed() as response:
                status = response.status
                data = await response.body_reader.read(self.limits.excerpt_bytes)
                if data:
                    excerpt = bytes(data).decode("utf-8", errors="replace")
                if not 200 <= status < 300:  # a success needs no look at the rest
                    location = response.get_header("Location")
                    kind, error = judge_status(status, _reason(status), location)
        except (PyreqwestError, OSError, TimeoutError) as exc:
            kind, error = _classify(exc, target)
        return make_outcome(started_at, began, kind, error, status, excerpt)

    def _new_target(self, url: str) -> _Target:
        if len(self._targets) >= TARGETS_KEPT:
            self._targets.clear()
        self._targets[url] = target = _read_target(url, self.policy)
        return target

    async def _route(self, target: _Target, now: datetime) -> _Route:
        """The client for ``target``'s host, made (and its name resolved) if need be: the
        one place that decides where reqwest connects."""
        if target.literal:
            return self._keep(target.host, self._client(), target.host, FOREVER)
        pending = self._lookups.get(target.host)
        if pending is None:  # one lookup per host, however many pushes wait for it
            pending = asyncio.ensure_future(self._resolve(target, now))
            self._lookups[target.host] = pending
            pending.add_done_callback(lambda _: self._lookups.pop(target.host, None))
        return await asyncio.shield(pending)

    async def _resolve(self, target: _Target, now: datetime) -> _Route:
        assert self._guarded is not None
        async with asyncio.timeout(self.limits.connect_timeout):
            answers = await self._guarded.resolve(target.host, target.port, socket.AF_UNSPEC)
        # The guard checked them all. reqwest takes one address per name: an IPv4 one if
        # any, the family every network reaches (no fallback to the others, as aiohttp has).
        address = min((answer["host"] for answer in answers), key=lambda host: ":" in host)
        until = now + ANSWER_LIFETIME
        known = self._routes.get(target.host)
        client = known.client if known and known.address == address else None
        client = client or self._client((target.host, address, target.port))
        return self._keep(target.host, client, address, until)

    def _keep(self, host: str, client: Client, address: str, until: datetime) -> _Route:
        if len(self._routes) >= ROUTES_KEPT and host not in self._routes:
            del self._routes[next(iter(self._routes))]  # the longest kept
        self._routes[host] = route = _Route(client, address, until)
        return route

    def _client(self, pinned: tuple[str, str, int] | None = None) -> Client:
        limits = self.limits
        builder = (
            ClientBuilder()
            .max_connections(limits.per_host)
            .pool_max_idle_per_host(limits.per_host)
            .pool_idle_timeout(KEEPALIVE)
            .timeout(timedelta(seconds=limits.timeout))
            .connect_timeout(timedelta(seconds=limits.connect_timeout))
            .follow_redirects(False)
            .referer(False)
            .no_proxy()
            .gzip(False)
            .brotli(False)
            .zstd(False)
            .deflate(False)
        )
        if pinned is not None:
            builder = builder.resolve(*pinned)
        return builder.build()


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
    return _Target(None, url=read, host=host, port=port, literal=literal)


def _is_address(host: str) -> bool:
    """Whether reqwest reads ``host`` as an IP address (its parser writes them canonically)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _reason(status: int) -> str | None:
    """The status's standard phrase (reqwest does not give the one the receiver sent)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return None


def _classify(exc: BaseException, target: _Target) -> tuple[ErrorKind, str]:
    refused = refusal_in(exc)
    if refused is not None:
        return ErrorKind.BLOCKED, str(refused)
    causes = _causes(exc)
    if isinstance(exc, PyreqwestError):  # the first cause repeats the URL: left out
        detail = ": ".join([f"{type(exc).__name__}: {exc.message}", *causes[1:]])[:500]
    else:
        detail = f"{type(exc).__name__}: {exc}".rstrip(": ")[:500]
    if isinstance(exc, TimeoutError | RequestTimeoutError):
        return ErrorKind.TIMEOUT, detail
    if isinstance(exc, ConnectError):
        # reqwest names a TCP failure so; any other failure to connect over https is TLS's
        tcp = any("tcp connect" in cause for cause in causes)
        https = target.url is not None and target.url.scheme == "https"
        return (ErrorKind.TLS if https and not tcp else ErrorKind.CONNECT), detail
    if isinstance(exc, NetworkError | OSError):
        return ErrorKind.CONNECT, detail
    return ErrorKind.PROTOCOL, detail


def _causes(exc: BaseException) -> list[str]:
    details = getattr(exc, "details", None)
    causes = details.get("causes") if isinstance(details, dict) else None
    if not isinstance(causes, list):
        return []
    return [str(cause.get("message", "")) for cause in causes if isinstance(cause, dict)]
