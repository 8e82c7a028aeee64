"""The HTTP server of ``ccpush serve``: uvicorn, with limits that hostile clients cannot get
round.

uvicorn (with httptools, as installed by ``uvicorn[standard]``) reads a request's head with
no limit on its size and no limit on its time: a client can swell the process by sending an
endless header, or hold a connection open for ever by sending it a byte at a time, until
the process runs out of files and no one is served. ``GuardedProtocol`` is uvicorn's
httptools protocol with these limits (``ServerLimits``, from the ``CCPUSH_*`` settings):

* a request's head (request line and header fields) may have ``max_header_bytes`` bytes and
  ``max_headers`` fields: beyond, ``431 Request Header Fields Too Large`` and the connection
  is closed, having held at most the limit and one read (256 KiB) of it;
* the head must be complete ``header_timeout`` seconds after its first byte (or after the
  connection opened, for a connection's first request): else ``408 Request Timeout`` and
  the connection is closed, an idle new connection included;
* the body must be complete ``body_timeout`` seconds after the head: else 408 and close;
* an idle connection between requests is closed after ``keepalive_timeout`` (uvicorn's own);
* at most ``max_connections`` connections are open: one more is answered ``503 Service
  Unavailable`` with ``Retry-After`` at once, without reading its request, and closed, so
  the process never holds more sockets than that (RFC 9110 15.6.4: 503 is the answer of a
  server temporarily overloaded; a server may answer before reading the request).

Refusals have the API's error shape, ``{"error": {"code", "message", "problems"}}``.

Time limits cost no timer per request: each connection keeps one deadline, set by a float
addition as a request moves on, and one timer that, when it fires early, sleeps again
until the deadline it finds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar, Final

import httptools
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from ccpush.errors import ConfigurationError
from ccpush.settings import Settings

log = logging.getLogger(__name__)

BUSY_RETRY_AFTER: Final = 1
"""Seconds a client refused for too many connections is told to wait (``Retry-After``)."""
REQUEST_LINE_BYTES: Final = 16
"""What a request line adds to its target: method, spaces, version, line end (about)."""
FIELD_LINE_BYTES: Final = 4
"""What a header field line adds to its name and value: ``": "`` and the line end."""
CAP_WARNING_INTERVAL: Final = 60.0
"""Seconds between two warnings that the connection cap refuses clients."""
OTHER_OPEN_FILES: Final = 64
"""Files a ``serve`` process holds besides its clients' connections and its pushes': the
listening socket, the store, the event loop, the log, name resolution."""
UNLIMITED: Final = -1
"""``resource.RLIM_INFINITY`` on Linux."""


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one client may make the server hold: bytes, header fields, time, connections."""

    max_header_bytes: int
    max_headers: int
    header_timeout: float
    body_timeout: float
    keepalive_timeout: int
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            keepalive_timeout=settings.keepalive_timeout,
            max_connections=settings.max_connections,
        )


def refusal(status: HTTPStatus, code: str, message: str, *headers: bytes) -> bytes:
    """A whole HTTP answer that ends its connection, with the API's error body."""
    body = json.dumps({"error": {"code": code, "message": message, "problems": []}}).encode()
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}".encode(),
        b"content-type: application/json",
        b"content-length: %d" % len(body),
        b"connection: close",
        *headers,
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@dataclass(frozen=True, slots=True)
class Refusals:
    """The answers of a server with these limits, made once."""

    timeout: bytes
    head_too_large: bytes
    too_many_headers: bytes
    busy: bytes

    @classmethod
    def for_limits(cls, limits: ServerLimits) -> Refusals:
        return cls(
            timeout=refusal(
                HTTPStatus.REQUEST_TIMEOUT,
                "request_timeout",
                "the request did not arrive in time: its head within"
                f" {limits.header_timeout:g} s, its body within {limits.body_timeout:g} s",
            ),
            head_too_large=refusal(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                f"the request line and header fields are larger than {limits.max_header_bytes}"
                " bytes",
            ),
            too_many_headers=refusal(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too_many_headers",
                f"the request has more than {limits.max_headers} header fields",
            ),
            busy=refusal(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "too_many_connections",
                f"the server has {limits.max_connections} connections open; try again",
                b"retry-after: %d" % BUSY_RETRY_AFTER,
            ),
        )


def head_size(target: bytes, fields: list[tuple[bytes, bytes]]) -> int:
    """The size of a request's head, its request line and header field lines (about)."""
    size = len(target) + REQUEST_LINE_BYTES
    for name, value in fields:
        size += len(name) + len(value) + FIELD_LINE_BYTES
    return size


class Throttle:
    """Says yes at most once every ``interval`` seconds."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = float("-inf")

    def ready(self, now: float) -> bool:
        if now < self._next:
            return False
        self._next = now + self.interval
        return True


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request that is refused."""


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol within ``limits`` (see the module's description).

    A connection is in one of three states: reading a request's head (``_reading_head``),
    reading its body, or neither (the application works on it, or the connection waits
    between requests under uvicorn's keep-alive timer). The first two have a deadline.
    """

    limits: ClassVar[ServerLimits]
    refusals: ClassVar[Refusals]
    cap_warning: ClassVar[Throttle]

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._reading_head = True
        self._head_bytes = 0
        self._deadline: float | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._refusal: bytes | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            if self.cap_warning.ready(time.monotonic()):
                log.warning(
                    "%d connections are open (CCPUSH_MAX_CONNECTIONS): new ones are answered 503",
                    self.limits.max_connections,
                )
            self._refuse(self.refusals.busy)
            return
        self._set_deadline(self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn's, counting the bytes of a head and refusing one over the limits."""
        self._unset_keepalive_if_required()
        if self._reading_head:
            self._head_bytes += len(data)
            if self._deadline is None:  # the first byte of a request after an idle time
                self._set_deadline(self.limits.header_timeout)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # websockets are off: the request was taken as a plain one
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(self._refusal)
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        if self._reading_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(self.refusals.head_too_large)

    def on_headers_complete(self) -> None:
        limits = self.limits
        if len(self.headers) > limits.max_headers:
            self._refusal = self.refusals.too_many_headers
        elif (
            self._head_bytes > limits.max_header_bytes  # this read may hold some body too
            and head_size(self.url, self.headers) > limits.max_header_bytes
        ):
            self._refusal = self.refusals.head_too_large
        if self._refusal is not None:
            raise _Refused
        self._reading_head = False
        self._set_deadline(limits.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading_head = True
        self._head_bytes = 0
        self._deadline = None
        super().on_message_complete()

    def _set_deadline(self, seconds: float) -> None:
        deadline = self.loop.time() + seconds
        self._deadline = deadline
        watch = self._watch
        if watch is None or watch.when() > deadline:
            if watch is not None:
                watch.cancel()
            self._watch = self.loop.call_later(seconds, self._on_watch)

    def _on_watch(self) -> None:
        self._watch = None
        if self._deadline is None or self.transport.is_closing():
            return
        remaining = self._deadline - self.loop.time()
        if remaining > 0:
            self._watch = self.loop.call_later(remaining, self._on_watch)
        elif self.flow.read_paused:  # uvicorn stopped reading: the wait is not the client's
            timeout = self.limits.header_timeout if self._reading_head else self.limits.body_timeout
            self._set_deadline(timeout)
        else:
            self._refuse(self.refusals.timeout)

    def _refuse(self, answer: bytes) -> None:
        """Send ``answer`` and close the connection; only close it if an answer now would cut
        into another (to an earlier request, or to this one, begun before its body ended)."""
        self._deadline = None
        cycle = self.cycle
        if self._reading_head:
            may_answer = cycle is None or cycle.response_complete
        else:
            may_answer = not cycle.response_started
        if may_answer:
            self.transport.write(answer)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("refused %s: %s", self.client, answer.split(b"\r\n", 1)[0].decode())
        self.transport.close()


def guarded_protocol(limits: ServerLimits) -> type[GuardedProtocol]:
    """``GuardedProtocol`` for these limits (uvicorn makes one instance per connection)."""
    attributes = {
        "limits": limits,
        "refusals": Refusals.for_limits(limits),
        "cap_warning": Throttle(CAP_WARNING_INTERVAL),
    }
    return type("GuardedProtocol", (GuardedProtocol,), attributes)


class HttpServer(uvicorn.Server):
    """uvicorn's server, leaving signals to its caller: uvicorn would re-raise SIGTERM after
    its own shutdown, killing the process before the dispatcher has finished or released
    what it holds."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def server_config(
    app: ASGIApp, settings: Settings, *, log_level: str | None = None
) -> uvicorn.Config:
    """uvicorn's configuration for ``app`` on ``settings.host``/``port``, within the limits
    of ``settings``, logging through ccpush's handler (text or JSON) at ``log_level``
    (default ``settings.log_level``)."""
    limits = ServerLimits.from_settings(settings)
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=guarded_protocol(limits),
        ws="none",
        timeout_keep_alive=limits.keepalive_timeout,
        log_level=(log_level or settings.log_level).lower(),
        log_config=None,
    )


def make_server(app: ASGIApp, settings: Settings, *, log_level: str | None = None) -> HttpServer:
    return HttpServer(server_config(app, settings, log_level=log_level))


def open_files_needed(settings: Settings, *, serving: bool = True) -> int:
    """The open files a process with ``settings`` may need at once: ``serve`` (``serving``)
    or a worker, which answers no API (its probes' few connections are in the margin)."""
    return (
        (settings.max_connections if serving else 0)
        + settings.concurrency
        + 2 * settings.push_processes  # a socket pair to each push process
        + OTHER_OPEN_FILES
    )


def soft_file_limit(needed: int, soft: int, hard: int) -> int:
    """The soft ``RLIMIT_NOFILE`` for ``needed`` open files: ``soft`` if it allows them,
    else ``needed`` if the hard limit allows it (a process may raise its soft limit that far).
    """
    if soft == UNLIMITED or soft >= needed:
        return soft
    if hard != UNLIMITED and hard < needed:
        raise ConfigurationError(
            f"{needed} open files are needed (the connections, the pushes in flight and"
            f" {OTHER_OPEN_FILES} more) but the open-file limit is {hard}: lower"
            " CCPUSH_MAX_CONNECTIONS or CCPUSH_CONCURRENCY, or raise the hard limit (ulimit -Hn)"
        )
    return needed


def raise_open_file_limit(settings: Settings, *, serving: bool = True) -> None:
    """Let this process open the files ``settings`` need, or raise ConfigurationError."""
    if sys.platform == "win32":  # pragma: no cover - no RLIMIT_NOFILE there
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = soft_file_limit(open_files_needed(settings, serving=serving), soft, hard)
    if wanted != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
