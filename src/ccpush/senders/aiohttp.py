"""One HTTP attempt made by aiohttp: POST a record to a push address and say what happened.

aiohttp's exceptions are translated into an ``Outcome`` here and nowhere else: a failed
push is data (an error kind and a message), never an exception that travels up.

Every push goes through the target guard (``ccpush.guard``): the URL is checked before the
request, and the connector resolves through ``GuardedResolver`` and opens sockets through
``guarded_socket_factory``, so a push to an address the policy forbids is refused
(``ErrorKind.BLOCKED``) before any connection is opened. Redirects are never followed.

Through the egress proxy (``SenderLimits.proxy``) the connector only ever connects to the
proxy, an operator's setting the guard does not judge; the guard's decision is made in
``send`` instead: the target's name is resolved and checked (``CheckedAddresses``), and the
request is made to that address, so the proxy is asked for exactly it (``CONNECT ip:port``
for https, an absolute-form request to the ip for http), while ``Host`` and TLS (SNI and
the certificate's check) keep the name.

An answer is judged as ``ccpush.senders.base`` says, alike with reqwest's sender.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from datetime import datetime
from typing import Any, Final

import aiohttp
from aiohttp import encode_basic_auth
from aiohttp.abc import AbstractResolver
from yarl import URL

from ccpush.clock import Clock
from ccpush.endpoint import ClientCertificate
from ccpush.guard import (
    GuardedResolver,
    TargetPolicy,
    check_url,
    guarded_socket_factory,
    literal_address,
    refusal_in,
)
from ccpush.models import ErrorKind, Outcome
from ccpush.senders.base import (
    HEAD_BYTES,
    HEADERS_MAX,
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
    CheckedAddresses,
    PushProxy,
    TlsContexts,
    UnusableCertificate,
    host_header,
    platform_identity,
    proxy_refused,
    proxy_unreachable,
    without_certificate,
)

FIELD_BYTES: Final = 65_536
"""The longest header line aiohttp is let read (it holds up to ``HEADERS_MAX`` of them)."""
NEVER_ROUNDED: Final = float("inf")
"""aiohttp rounds timeouts above this up to whole seconds: none is."""


class Sender(LocalPushes):
    """Makes push attempts with aiohttp over one connection pool, reusing connections per
    host."""

    def __init__(
        self,
        clock: Clock,
        limits: SenderLimits | None = None,
        *,
        policy: TargetPolicy | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        super().__init__(clock, limits, policy=policy, resolver=resolver)
        self._targets: dict[str, tuple[str | None, URL | str]] = {}
        self._guarded: GuardedResolver | None = None
        self._session: aiohttp.ClientSession | None = None
        self._checked: CheckedAddresses | None = None
        limits = self.limits
        platform = platform_identity(limits.client_cert, limits.client_key)
        self._tls = TlsContexts(limits.ca_bundle, limits.ca_bundle_only, platform)

    async def start(self) -> None:
        if self._session is not None:
            return
        limits = self.limits
        self._guarded = GuardedResolver(self.policy, self.resolver)
        if limits.proxy is None:
            guards: dict[str, Any] = {
                "resolver": self._guarded,
                "socket_factory": guarded_socket_factory(self.policy),
            }
        else:  # it connects to the proxy alone: the guard checks targets in send
            self._checked = CheckedAddresses(self._guarded)
            guards = {"resolver": self.resolver} if self.resolver is not None else {}
        connector = aiohttp.TCPConnector(
            limit=limits.concurrency,
            limit_per_host=limits.per_host,
            ttl_dns_cache=60,  # caches only answers the guard passed
            keepalive_timeout=limits.idle_seconds,
            timeout_ceil_threshold=NEVER_ROUNDED,
            ssl=self._tls.context(None),
            **guards,
        )
        timeout = aiohttp.ClientTimeout(
            total=limits.timeout, connect=limits.connect_timeout, ceil_threshold=NEVER_ROUNDED
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,  # see wire.HTTP_HEADERS: answers come uncompressed
            max_line_size=HEAD_BYTES,  # the heads reqwest reads: see senders.base
            max_field_size=FIELD_BYTES,
            max_headers=HEADERS_MAX,
            cookie_jar=aiohttp.DummyCookieJar(),  # no state from one push to the next
            trust_env=False,  # no proxy from the environment: the guard checks the target
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
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
        session = self._session
        if session is None:
            raise RuntimeError("the sender is not started")
        if started_at is None:
            started_at = self.clock.now()
        began = time.perf_counter()
        status: int | None = None
        excerpt: bytes | None = None
        kind: ErrorKind | None = None
        error: str | None = None
        retry_after: float | None = None
        refused, address = self._targets.get(url) or self._new_target(url)
        if refused is not None:
            return make_outcome(started_at, began, ErrorKind.BLOCKED, refused)
        try:
            address, options = await self._request(address, headers, client_certificate)
            async with session.post(address, data=body, **options) as response:
                status, kind, error, excerpt = await _read(response, self.limits.excerpt_bytes)
                if kind is not None:
                    wait = response.headers.get("Retry-After")
                    retry_after = back_off_seconds(status, wait, started_at)
        except aiohttp.InvalidURL as exc:
            kind, error = ErrorKind.INVALID_URL, f"invalid push address: {exc}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            kind, error = _classify(exc, self.limits)
            https = isinstance(address, URL) and address.scheme.lower() == "https"
            presented = client_certificate is not None or self._tls.has_platform
            error = without_certificate(error, https, presented)
        except UnusableCertificate as exc:
            kind, error = ErrorKind.TLS, f"tls: {exc}"
        return make_outcome(started_at, began, kind, error, status, excerpt, retry_after)

    async def _request(
        self,
        address: URL | str,
        headers: dict[str, str],
        certificate: ClientCertificate | None,
    ) -> tuple[URL | str, dict[str, Any]]:
        """Where a request goes and how: its TLS context, and through the proxy, the checked
        address with the name kept for ``Host`` and TLS."""
        options: dict[str, Any] = {
            "headers": with_push_headers(headers),
            "allow_redirects": False,
        }
        https = isinstance(address, URL) and address.scheme.lower() == "https"
        if https and certificate is not None:
            options["ssl"] = self._tls.context(certificate)
        proxy = self.limits.proxy
        if proxy is None or not isinstance(address, URL) or not address.raw_host:
            return address, options
        options["proxy"] = proxy.url
        if proxy.username is not None:
            credentials = encode_basic_auth(proxy.username, proxy.password or "")
            if https:  # on CONNECT; aiohttp changes the dictionary: one per request
                options["proxy_headers"] = {"Proxy-Authorization": credentials}
            else:  # on the request itself, which the proxy reads
                options["headers"] = {**options["headers"], "Proxy-Authorization": credentials}
        name = address.raw_host
        if literal_address(address.host or name) is not None:
            return address, options  # check_url checked it
        assert self._checked is not None
        try:
            async with asyncio.timeout(self.limits.connect_timeout):
                checked = await self._checked.address(name, address.port or 0)
        except socket.gaierror:
            raise _NoSuchHost(name) from None
        except TimeoutError:
            raise aiohttp.ConnectionTimeoutError(f"{name} did not resolve in time") from None
        options["headers"] = {**options["headers"], "Host": host_header(address)}
        if https:
            options["server_hostname"] = name
        return address.with_host(checked), options

    def _new_target(self, url: str) -> tuple[str | None, URL | str]:
        """The guard's verdict on a URL not seen yet, and the URL parsed, both kept: the
        verdict depends on the URL alone (``send`` looks it up first). A malformed URL is
        kept as it is, for aiohttp to report."""
        if len(self._targets) >= TARGETS_KEPT:
            self._targets.clear()
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            target: tuple[str | None, URL | str] = (None, url)
        else:
            target = (check_url(parsed, self.policy) if parsed.scheme else None, parsed)
        self._targets[url] = target
        return target


async def _read(response: aiohttp.ClientResponse, excerpt_bytes: int) -> Answer:
    fault = _head_fault(response)
    if fault is not None:
        return None, ErrorKind.PROTOCOL, fault, None
    status = response.status
    excerpt = await _first_bytes(response.content, excerpt_bytes)
    if 200 <= status < 300:  # a success needs no look at the rest
        return status, None, None, excerpt
    kind, error = judge_status(status, response.reason, response.headers.get("Location"))
    return status, kind, error, excerpt


_CONTROL_IN_REASON: Final = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
_CONTROL_IN_VALUE: Final = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
"""What HTTP (RFC 9112) allows in neither: a control character other than tab."""


def _head_fault(response: aiohttp.ClientResponse) -> str | None:
    """What makes an answer's head invalid HTTP that aiohttp lets through and reqwest
    refuses (see ``ccpush.senders.base``), if anything: it is checked on every answer, for
    reqwest would refuse it whatever its status."""
    version = response.version
    if version is None or version.major != 1:
        return f"invalid answer: HTTP version {version}"
    if response.status < 100:
        return f"invalid answer: status {response.status}"
    reason = response.reason
    if reason and _CONTROL_IN_REASON.search(reason):
        return "invalid answer: a control character in the reason phrase"
    for name, value in response.raw_headers:
        if _CONTROL_IN_VALUE.search(value):
            header = name.decode("ascii", "replace")
            return f"invalid answer: a control character in the value of {header}"
    return None


async def _first_bytes(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The first bytes of a body that arrive, up to ``limit``; none if it is cut short,
    broken or late (the status alone judges the attempt: see ``ccpush.senders.base``)."""
    try:
        return await content.read(limit) if limit else b""
    except (aiohttp.ClientError, TimeoutError):
        return b""


class _NoSuchHost(OSError):
    """A push address's name that does not resolve, found before asking the proxy."""

    def __init__(self, host: str) -> None:
        super().__init__(host)
        self.host = host


def _classify(exc: BaseException, limits: SenderLimits) -> tuple[ErrorKind, str]:
    refused = refusal_in(exc)
    if refused is not None:
        return ErrorKind.BLOCKED, str(refused)
    if isinstance(exc, _NoSuchHost):
        return ErrorKind.CONNECT, no_such_host(exc.host)
    if limits.proxy is not None:
        by_proxy = _proxy_failure(exc, limits.proxy)
        if by_proxy is not None:
            return ErrorKind.CONNECT, by_proxy
    detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ErrorKind.TIMEOUT, connect_timeout(limits.connect_timeout)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return ErrorKind.TIMEOUT, read_timeout(limits.timeout)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        failure = exc.certificate_error
        reason = getattr(failure, "verify_message", None) or str(failure)
        return ErrorKind.TLS, untrusted_certificate(reason)
    if isinstance(exc, aiohttp.ClientSSLError):
        return ErrorKind.TLS, f"tls: {detail}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return ErrorKind.CONNECT, no_such_host(exc.host)
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(
        exc.os_error, ConnectionRefusedError
    ):
        return ErrorKind.CONNECT, connect_refused(exc.host, exc.port)
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ServerDisconnectedError | OSError):
        return ErrorKind.CONNECT, detail
    return ErrorKind.PROTOCOL, detail


def _proxy_failure(exc: BaseException, proxy: PushProxy) -> str | None:
    """What the proxy did to a push, if it failed it: unreachable, or refused the tunnel."""
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return proxy_unreachable(proxy, exc.strerror or type(exc.os_error).__name__)
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        url = exc.request_info.url
        return proxy_refused(proxy, exc.status, exc.message, f"{url.raw_host}:{url.port}")
    return None
