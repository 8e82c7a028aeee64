"""What every sender shares: the ``Pushes`` interface, its limits, and how an answer is judged.

How an answer is judged, by every sender alike (aiohttp's ``ccpush.senders.aiohttp.Sender``
and reqwest's ``ccpush.senders.reqwest.ReqwestSender``):

* An answer whose status line and headers are valid HTTP/1.x is judged by its status alone:
  2xx delivered, anything else a failure (``judge_status``). Its body is only excerpted:
  the first bytes that arrive, up to ``SenderLimits.excerpt_bytes``. A body cut short of
  its Content-Length or its last chunk, or that stops coming until the push times out,
  changes nothing: the receiver said what became of the record before it, and a 2xx is
  delivered (pushing again would give the receiver a record it took).
* A head that is not valid HTTP is ``ErrorKind.PROTOCOL``: a control character (but tab)
  in the reason phrase or in a header's value (NUL included), a status below 100, a
  version other than HTTP/1.0 or 1.1, more than ``HEADERS_MAX`` headers, both
  Transfer-Encoding and Content-Length. Each client refuses most of these itself; its
  ``_read`` refuses the ones it lets through and the other does not. A status line of up
  to about ``HEAD_BYTES`` is read by both; a longer one both refuse.
* The connection closed before the head is complete is ``ErrorKind.CONNECT``.
* Everything kept of an answer is made storable text in ``make_outcome``
  (``ccpush.answers``).

Where the two may still differ: bytes that break the body's framing (an invalid chunk-size
line, bytes beyond the Content-Length or after a 204) are judged by the status with
reqwest, while aiohttp's parser drops the whole answer (``PROTOCOL``) if they arrive in the
same read as the head; and a header line longer than ``FIELD_BYTES``
(``ccpush.senders.aiohttp``) is refused by aiohttp only (reqwest takes any head up to
``HEAD_BYTES``).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, Self

from aiohttp.abc import AbstractResolver

from ccpush.answers import answer_text
from ccpush.clock import Clock
from ccpush.endpoint import ClientCertificate
from ccpush.guard import TargetPolicy
from ccpush.models import ErrorKind, Outcome
from ccpush.pacing import BACK_OFF_STATUSES, retry_after_seconds
from ccpush.senders.egress import PushProxy
from ccpush.wire import HTTP_HEADERS

Answer = tuple[int | None, ErrorKind | None, str | None, bytes | None]
"""What an answer says: its status, the error kind and text, its body's first bytes."""
HttpClient = Literal["aiohttp", "reqwest"]
"""What makes the HTTP requests: aiohttp (``Sender``) or reqwest (``ReqwestSender``)."""
TARGETS_KEPT: Final = 4096
HEAD_BYTES: Final = 8192 + 4096 * 100
"""The longest head (status line and headers) reqwest reads, and so the longest status line
aiohttp is let read."""
HEADERS_MAX: Final = 100
"""The most headers an answer may have (reqwest's number)."""
ERROR_CHARS: Final = 500
"""The longest error text kept of an attempt."""
QUOTED_CHARS: Final = 200
"""The most of a reason phrase or Location an error text quotes."""


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
    """How much of a response body the attempt log keeps, in bytes read (kept as text: a
    control character among them is written as an escape, ``\\x00``)."""
    idle_seconds: float = 15.0
    """How long an idle connection is kept open for the next push to its host (at most
    ``per_host`` of them per host)."""
    ca_bundle: str | None = None
    """A PEM file of CAs that pushes trust besides the system's (``CCPUSH_CA_BUNDLE``)."""
    ca_bundle_only: bool = False
    """Trust ``ca_bundle`` instead of the system's CAs (``CCPUSH_CA_BUNDLE_ONLY``)."""
    client_cert: str | None = None
    """The platform-wide client certificate's PEM file (``CCPUSH_CLIENT_CERT``), presented
    to receivers that ask for one unless a push brings its own."""
    client_key: str | None = None
    """Its unencrypted PEM key's file (``CCPUSH_CLIENT_KEY``)."""
    proxy: PushProxy | None = None
    """The forward proxy every push goes through (``CCPUSH_PUSH_PROXY``)."""


class Pushes(ABC):
    """What makes push attempts: a ``LocalPushes`` (``Sender`` with aiohttp,
    ``ReqwestSender`` with reqwest), or a ``ProcessSender``
    (``ccpush.senders.processes``) whose child processes each run one of those. Started and
    closed around its use."""

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
        client_certificate: ClientCertificate | None = None,
    ) -> Outcome:
        """POST ``body`` to ``url`` once. A 2xx answer is success; anything else is not.

        ``headers`` are sent as ``with_push_headers`` makes them. ``started_at``: when the
        attempt started, if the caller just read the clock (default: now).
        ``client_certificate``: the one to present if the receiver asks (an app's own),
        instead of the platform's (``SenderLimits.client_cert``)."""


class LocalPushes(Pushes):
    """Pushes made by an HTTP client in this process.

    ``policy`` says which non-global addresses pushes may reach (by default none);
    ``resolver`` is the DNS resolver the guard wraps (by default aiohttp's threaded one)."""

    def __init__(
        self,
        clock: Clock,
        limits: SenderLimits | None = None,
        *,
        policy: TargetPolicy | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        super().__init__(clock, limits, policy=policy)
        self.resolver = resolver


def make_outcome(
    started_at: datetime,
    began: float,
    kind: ErrorKind | None,
    error: str | None,
    status: int | None = None,
    excerpt: bytes | None = None,
    retry_after: float | None = None,
) -> Outcome:
    """An attempt's outcome; ``began`` is its ``time.perf_counter()`` at the start,
    ``excerpt`` the body's first bytes, ``retry_after`` what ``back_off_seconds`` read.
    Every sender's outcomes are made here, so that nothing of a receiver's answer leaves a
    sender but as ``answer_text`` makes it."""
    return Outcome(
        started_at=started_at,
        duration_ms=round((time.perf_counter() - began) * 1000, 3),
        status_code=status,
        error_kind=kind,
        error=None if error is None else answer_text(error, ERROR_CHARS),
        response_excerpt=answer_text(excerpt, lines=True) if excerpt else None,
        retry_after=retry_after,
    )


def back_off_seconds(status: int | None, value: str | None, now: datetime) -> float | None:
    """The seconds a 429 or 503 answer's ``Retry-After`` (``value``) asks to wait, capped
    (``ccpush.pacing.retry_after_seconds``); None for any other answer, or without one."""
    if status not in BACK_OFF_STATUSES:
        return None
    return retry_after_seconds(value, now)


def judge_status(
    status: int, reason: str | None, location: str | None
) -> tuple[ErrorKind | None, str | None]:
    """What an answer's status says of the push: 2xx is success; a redirect is a failure,
    not followed; anything else a failure with its status."""
    if 200 <= status < 300:
        return None, None
    if 300 <= status < 400:
        where = location or "(no Location)"
        return (
            ErrorKind.HTTP_STATUS,
            f"HTTP {status}: redirect to {where[:QUOTED_CHARS]} not followed",
        )
    return ErrorKind.HTTP_STATUS, f"HTTP {status} {(reason or '')[:QUOTED_CHARS]}".rstrip()


def connect_refused(host: str, port: int | None) -> str:
    return f"connect refused by {host}:{port}" if port else f"connect refused by {host}"


def connect_timeout(seconds: float) -> str:
    return f"connect timeout: no connection within {seconds:g} s"


def read_timeout(seconds: float) -> str:
    return f"read timeout: no answer within {seconds:g} s"


def untrusted_certificate(reason: str) -> str:
    return f"tls: certificate verify failed ({reason})"


def no_such_host(host: str) -> str:
    return f"dns: no such host {host}"


def with_push_headers(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` with ``ccpush.wire.HTTP_HEADERS`` unless they hold them already (the
    dispatcher's do: one dictionary per push, not two). Given per request rather than as
    a client's defaults, which the client would merge header by header."""
    return headers if "User-Agent" in headers else {**HTTP_HEADERS, **headers}
