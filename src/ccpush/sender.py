"""One HTTP attempt: POST a record to a push address and say what happened.

aiohttp's exceptions are translated into an ``Outcome`` here and nowhere else: a failed
push is data (an error kind and a message), never an exception that travels up.

Every push goes through the target guard (``ccpush.guard``): the URL is checked before the
request, and the connector resolves through ``GuardedResolver`` and opens sockets through
``guarded_socket_factory``, so a push to an address the policy forbids is refused
(``ErrorKind.BLOCKED``) before any connection is opened. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, Self

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from ccpush import __version__
from ccpush.clock import Clock
from ccpush.guard import (
    GuardedResolver,
    TargetPolicy,
    check_url,
    guarded_socket_factory,
    refusal_in,
)
from ccpush.models import ErrorKind, Outcome
from ccpush.record import CONTENT_TYPE

HttpClient = Literal["aiohttp", "reqwest"]
"""What makes the HTTP requests: aiohttp (``Sender``) or reqwest (``ReqwestSender``)."""
TARGETS_KEPT: Final = 4096
USER_AGENT: Final = f"ccpush/{__version__}"
PUSH_HEADERS: Final = {
    "Content-Type": CONTENT_TYPE,
    "User-Agent": USER_AGENT,
    # The answer is only excerpted, never decompressed: ask for it as is. (Given per
    # request rather than as session defaults, which the client merges header by header.)
    "Accept-Encoding": "identity",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderLimits:
    timeout: float = 15.0
    """Seconds for the whole request, connecting included."""
    connect_timeout: float = 5.0
    concurrency: int = 128
    """Pushes in flight at once, over all hosts."""
    per_host: int = 64
    """Pushes in flight at once to one host, so one customer cannot take every slot."""
    excerpt_bytes: int = 2048
    """How much of a response body the attempt log keeps."""


class Pushes(ABC):
    """What makes push attempts: a ``Sender`` (aiohttp), a ``ReqwestSender``
    (``ccpush.reqwest_sender``), or a ``ProcessSender`` (``ccpush.push_processes``) whose
    child processes each run one of those. Started and closed around its use."""

    def __init__(
        self,
        clock: Clock,
        limits: SenderLimits | None = None,
        *,
        policy: TargetPolicy | None = None,
    ) -> None:
        self.clock = clock
        self.limits = limits or SenderLimits()
        self.policy = policy if policy is not None else TargetPolicy()
        """Which non-global addresses pushes may reach (by default none)."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def send(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        *,
        started_at: datetime | None = None,
    ) -> Outcome:
        """POST ``body`` to ``url`` once. A 2xx answer is success; anything else is not."""


class Sender(Pushes):
    """Makes push attempts over one connection pool, reusing connections per host.

    ``policy`` says which non-global addresses pushes may reach (by default none);
    ``resolver`` is the DNS resolver the guard wraps (by default aiohttp's threaded one).
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
        self._targets: dict[str, tuple[str | None, URL | str]] = {}
        self._guarded: GuardedResolver | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        limits = self.limits
        self._guarded = GuardedResolver(self.policy, self._resolver)
        connector = aiohttp.TCPConnector(
            limit=limits.concurrency,
            limit_per_host=limits.per_host,
            ttl_dns_cache=60,  # caches only answers the guard passed
            keepalive_timeout=30,
            resolver=self._guarded,
            socket_factory=guarded_socket_factory(self.policy),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=limits.timeout, connect=limits.connect_timeout),
            auto_decompress=False,  # see PUSH_HEADERS: answers come uncompressed
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
    ) -> Outcome:
        """POST ``body`` to ``url`` once. A 2xx answer is success; anything else is not.

        ``headers`` are sent as ``with_push_headers`` makes them. ``started_at``: when the
        attempt started, if the caller just read the clock (default: now)."""
        session = self._session
        if session is None:
            raise RuntimeError("the sender is not started")
        if started_at is None:
            started_at = self.clock.now()
        began = time.perf_counter()
        status: int | None = None
        excerpt: str | None = None
        kind: ErrorKind | None = None
        error: str | None = None
        refused, address = self._targets.get(url) or self._new_target(url)
        if refused is not None:
            return make_outcome(started_at, began, ErrorKind.BLOCKED, refused)
        try:
            async with session.post(
                address, data=body, headers=with_push_headers(headers), allow_redirects=False
            ) as response:
                status = response.status
                data = await response.content.read(self.limits.excerpt_bytes)
                if data:
                    excerpt = data.decode("utf-8", errors="replace")
                if not 200 <= status < 300:  # a success needs no look at the rest
                    kind, error = judge_status(
                        status, response.reason, response.headers.get("Location")
                    )
        except aiohttp.InvalidURL as exc:
            kind, error = ErrorKind.INVALID_URL, f"invalid push address: {exc}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            kind, error = _classify(exc)
        return make_outcome(started_at, began, kind, error, status, excerpt)

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


def local_sender(
    client: HttpClient,
    clock: Clock,
    limits: SenderLimits,
    *,
    policy: TargetPolicy,
    resolver: AbstractResolver | None = None,
) -> Pushes:
    """The sender that makes pushes in this process with ``client``."""
    if client == "reqwest":
        from ccpush.reqwest_sender import ReqwestSender  # its module imports this one

        return ReqwestSender(clock, limits, policy=policy, resolver=resolver)
    return Sender(clock, limits, policy=policy, resolver=resolver)


def make_outcome(
    started_at: datetime,
    began: float,
    kind: ErrorKind | None,
    error: str | None,
    status: int | None = None,
    excerpt: str | None = None,
) -> Outcome:
    """An attempt's outcome; ``began`` is its ``time.perf_counter()`` at the start."""
    return Outcome(
        started_at=started_at,
        duration_ms=round((time.perf_counter() - began) * 1000, 3),
        status_code=status,
        error_kind=kind,
        error=error,
        response_excerpt=excerpt,
    )


def judge_status(
    status: int, reason: str | None, location: str | None
) -> tuple[ErrorKind | None, str | None]:
    """What an answer's status says of the push: 2xx is success; a redirect is a failure,
    not followed; anything else a failure with its status."""
    if 200 <= status < 300:
        return None, None
    if 300 <= status < 400:
        where = location or "(no Location)"
        return ErrorKind.HTTP_STATUS, f"HTTP {status}: redirect to {where[:200]} not followed"
    return ErrorKind.HTTP_STATUS, f"HTTP {status} {reason or ''}".rstrip()


def with_push_headers(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` with ``PUSH_HEADERS`` unless they hold them already (the dispatcher's
    do: one dictionary per push, not two)."""
    return headers if "User-Agent" in headers else {**PUSH_HEADERS, **headers}


def _classify(exc: BaseException) -> tuple[ErrorKind, str]:
    refused = refusal_in(exc)
    if refused is not None:
        return ErrorKind.BLOCKED, str(refused)
    detail = f"{type(exc).__name__}: {exc}".rstrip(": ")[:500]
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return ErrorKind.TIMEOUT, detail or "timed out"
    if isinstance(exc, aiohttp.ClientSSLError):
        return ErrorKind.TLS, detail
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ServerDisconnectedError | OSError):
        return ErrorKind.CONNECT, detail
    return ErrorKind.PROTOCOL, detail
