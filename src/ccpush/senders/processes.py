"""Pushes made in child processes: the HTTP work of pushing moved off the dispatcher's core.

A Python process runs one thread of Python at a time, and a push's HTTP work is most of a
dispatcher's CPU. ``ProcessSender`` has every sender's interface (``send`` one attempt,
get its ``Outcome``) but hands each attempt to one of ``processes`` child processes, each
running a sender of its own (aiohttp's or reqwest's). Claims, retry decisions and outcome
writes stay in the dispatcher's process, so the two halves run on different cores.

    dispatcher ── send(url, body, headers) ──► ProcessSender ── the child holding fewest
                                                                 │ attempts, in batches
                                                                 ▼ over a socket pair
                                          child: sender ── POST ──► receiver
                                                                 │
               Outcome ◄── in batches ◄──────────────────────────┘

The dispatcher keeps each host within its cap whichever child pushes; each child reuses its
own connections per host. A child that exits fails the attempts it held with
``ErrorKind.INTERRUPTED`` (the receiver may have had them; they are retried on the schedule,
under the same ``webhook-id``), and another is started for the next push.

A child is ``python -m ccpush.senders FD`` (``main`` here), FD its end of the socket pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import struct
import sys
from datetime import datetime
from typing import Final

from ccpush.clock import Clock, SystemClock
from ccpush.endpoint import ClientCertificate
from ccpush.guard import TargetPolicy
from ccpush.loop import run
from ccpush.models import ErrorKind, Outcome
from ccpush.senders.aiohttp import Sender
from ccpush.senders.base import LocalPushes, Pushes, SenderLimits

log = logging.getLogger(__name__)

# Frames are pickles, read only from the socket pair between this process and its own child.
FRAME_HEADER: Final = struct.Struct("!I")
CHILD_MODULE: Final = "ccpush.senders"
"""What a child runs (its ``__main__``: ``main`` here). Not this module: the package
imports it, and ``python -m`` would run it a second time."""
STOP_MARGIN: Final = 5.0
"""Seconds beyond the push timeout a child may take to finish its attempts once told to
stop, before it is killed."""

Request = tuple[int, str, bytes, dict[str, str], ClientCertificate | None]
"""An attempt, to a child: (number, url, body, headers, client certificate)."""
Reply = tuple[int, float, int | None, str | None, str | None, str | None, float | None]
"""Its outcome, from the child: (number, duration_ms, status, error kind, error, excerpt,
Retry-After seconds); the texts as the child's sender made them
(``ccpush.senders.base.make_outcome``): storable, so the parent takes them as they come."""


class ProcessSender(Pushes):
    """Push attempts made by ``processes`` child processes, each with a ``sender`` of its
    own (aiohttp's ``Sender`` by default)."""

    def __init__(
        self,
        clock: Clock,
        limits: SenderLimits | None = None,
        *,
        policy: TargetPolicy | None = None,
        processes: int = 1,
        sender: type[LocalPushes] = Sender,
    ) -> None:
        if processes < 1:
            raise ValueError("a ProcessSender needs at least one process")
        super().__init__(clock, limits, policy=policy)
        self.processes = processes
        self._config = pickle.dumps((self.limits, self.policy, sender))
        self._environment = child_environment(self.limits)
        self._children: list[_Child] = []
        self._replacing: dict[int, asyncio.Task[_Child]] = {}

    async def start(self) -> None:
        if not self._children:
            spawning = (
                _Child.spawn(self._config, self._environment) for _ in range(self.processes)
            )
            self._children = list(await asyncio.gather(*spawning))

    async def close(self) -> None:
        children, self._children = self._children, []
        within = self.limits.timeout + STOP_MARGIN
        await asyncio.gather(*(child.close(within) for child in children))

    @property
    def pids(self) -> list[int]:
        """The process ids of the children running (one that exited is replaced when an
        attempt needs it)."""
        return [child.pid for child in self._children if child.alive]

    async def send(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        *,
        started_at: datetime | None = None,
        client_certificate: ClientCertificate | None = None,
    ) -> Outcome:
        """What ``Sender.send`` does, done by the child that holds the fewest attempts."""
        if not self._children:
            raise RuntimeError("the sender is not started")
        if started_at is None:
            started_at = self.clock.now()
        child = min(self._children, key=_Child.load)
        if not child.alive:
            try:
                child = await self._replace(self._children.index(child))
            except (OSError, RuntimeError) as exc:
                return _interrupted(started_at, f"no push process could be started: {exc}")
        return await child.send(url, body, headers, started_at, client_certificate)

    async def _replace(self, slot: int) -> _Child:
        """A new child in place of the one in ``slot``, which exited: started once, however
        many attempts wait for it."""
        replacing = self._replacing.get(slot)
        if replacing is None:
            replacing = self._replacing[slot] = asyncio.create_task(self._spawn_into(slot))
        return await asyncio.shield(replacing)

    async def _spawn_into(self, slot: int) -> _Child:
        try:
            child = await _Child.spawn(self._config, self._environment)
        finally:
            del self._replacing[slot]
        if slot < len(self._children):
            self._children[slot] = child
        else:  # closed meanwhile
            await child.close(STOP_MARGIN)
        return child


class _Child:
    """One child process, from its start to its exit, and the attempts it holds."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.process = process
        self.alive = True
        self._writer = writer
        self._held: dict[int, tuple[asyncio.Future[Outcome], datetime]] = {}
        self._outbox: list[Request] = []
        self._numbers = 0
        self._stopping = False
        self._reading = asyncio.create_task(self._read(reader), name=f"ccpush-push-{self.pid}")

    @classmethod
    async def spawn(cls, config: bytes, environment: dict[str, str] | None = None) -> _Child:
        ours, theirs = socket.socketpair()
        with theirs:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                CHILD_MODULE,
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                env=environment,
            )
        reader, writer = await asyncio.open_connection(sock=ours)
        writer.write(_frame(config))
        try:
            await _read_frame(reader)  # the child is ready: an empty batch of outcomes
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            code = await process.wait()
            raise RuntimeError(f"a push process failed to start (exit code {code})") from None
        return cls(process, reader, writer)

    @property
    def pid(self) -> int:
        return self.process.pid

    def load(self) -> int:
        """Attempts held; one that exited counts as holding none, to be replaced first."""
        return len(self._held) if self.alive else -1

    async def send(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        started_at: datetime,
        certificate: ClientCertificate | None = None,
    ) -> Outcome:
        if not self.alive:
            return _interrupted(started_at, "the push process has exited")
        loop = asyncio.get_running_loop()
        self._numbers += 1
        number = self._numbers
        future: asyncio.Future[Outcome] = loop.create_future()
        self._held[number] = (future, started_at)
        self._outbox.append((number, url, body, headers, certificate))
        if len(self._outbox) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        if self._outbox:
            outbox, self._outbox = self._outbox, []
            self._writer.write(_frame(pickle.dumps(outbox, pickle.HIGHEST_PROTOCOL)))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                replies: list[Reply] = pickle.loads(await _read_frame(reader))  # noqa: S301
                for number, duration, status, kind, error, excerpt, wait in replies:
                    future, started_at = self._held.pop(number)
                    if not future.done():  # else its caller gave up waiting
                        error_kind = None if kind is None else ErrorKind(kind)
                        outcome = Outcome(
                            started_at, duration, status, error_kind, error, excerpt, wait
                        )
                        future.set_result(outcome)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            await self._exited()

    async def _exited(self) -> None:
        self.alive = False
        self._writer.close()
        code = await self.process.wait()
        if not self._stopping:
            log.error("a push process exited (pid %d, code %s)", self.pid, code)
        reason = f"the push process stopped during the attempt (exit code {code})"
        held, self._held = self._held, {}
        for future, started_at in held.values():
            if not future.done():
                future.set_result(_interrupted(started_at, reason))

    async def close(self, within: float) -> None:
        """Let the child finish the attempts it holds and exit; kill it after ``within``
        seconds."""
        self._stopping = True
        if self.alive:
            self._flush()
            self._writer.write_eof()
        try:
            await asyncio.wait_for(asyncio.shield(self._reading), within)
        except TimeoutError:
            self.process.kill()
            await self._reading


def child_environment(limits: SenderLimits) -> dict[str, str] | None:
    """A child's environment: this process's, but for trusting ``CCPUSH_CA_BUNDLE`` alone,
    the system store it reads (reqwest's: ``SSL_CERT_FILE``) being that bundle."""
    if not limits.ca_bundle_only or limits.ca_bundle is None:
        return None
    environment = {**os.environ, "SSL_CERT_FILE": limits.ca_bundle}
    environment.pop("SSL_CERT_DIR", None)
    return environment


def _interrupted(started_at: datetime, reason: str) -> Outcome:
    return Outcome(started_at, 0.0, None, ErrorKind.INTERRUPTED, reason, None)


def _frame(data: bytes) -> bytes:
    return FRAME_HEADER.pack(len(data)) + data


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = FRAME_HEADER.unpack(await reader.readexactly(FRAME_HEADER.size))
    return await reader.readexactly(size)


# The child's side


async def serve(sock: socket.socket) -> None:
    """Push the attempts read from ``sock`` and write their outcomes back, both in batches;
    once the parent closes its side, finish the attempts held and return."""
    reader, writer = await asyncio.open_connection(sock=sock)
    limits, policy, sender_type = pickle.loads(await _read_frame(reader))  # noqa: S301
    loop = asyncio.get_running_loop()
    outbox: list[Reply] = []
    pushing: set[asyncio.Task[None]] = set()

    def flush() -> None:
        if outbox:
            writer.write(_frame(pickle.dumps(outbox, pickle.HIGHEST_PROTOCOL)))
            outbox.clear()

    async def push(sender: Pushes, request: Request) -> None:
        number, url, body, headers, certificate = request
        # its start: the parent's is kept
        done = await sender.send(url, body, headers, client_certificate=certificate)
        kind = None if done.error_kind is None else done.error_kind.value
        outbox.append(
            (
                number,
                done.duration_ms,
                done.status_code,
                kind,
                done.error,
                done.response_excerpt,
                done.retry_after,
            )
        )
        if len(outbox) == 1:
            loop.call_soon(flush)

    async with sender_type(SystemClock(), limits, policy=policy) as sender:
        writer.write(_frame(pickle.dumps([])))
        while True:
            try:
                requests: list[Request] = pickle.loads(await _read_frame(reader))  # noqa: S301
            except asyncio.IncompleteReadError:
                break
            for request in requests:
                task = loop.create_task(push(sender, request))
                pushing.add(task)
                task.add_done_callback(pushing.discard)
        await asyncio.gather(*pushing)
    flush()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


def main() -> None:
    """A child's entry point: ``python -m ccpush.senders FD``."""
    # The parent handles signals, and stops its children by closing its side of the socket.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    run(serve(socket.socket(fileno=int(sys.argv[1]))))
