"""The dispatcher: claims due deliveries under a lease, pushes them, writes the outcomes.

    claim (a batch, as many as there are free slots)
      └─ push each one concurrently (``Sender``)
           └─ decide: delivered, retry at the schedule's time, or failed
                └─ write outcomes back in batches (group commit)

A worker that dies loses nothing: what it held is claimed again when its lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from ccpush.clock import Clock
from ccpush.models import Claimed, Completion, DeliveryState, Outcome
from ccpush.retry import RetrySchedule
from ccpush.sender import Sender
from ccpush.signing import push_headers
from ccpush.store.base import Store

log = logging.getLogger(__name__)

AttemptListener = Callable[[Completion], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatchSettings:
    schedule: RetrySchedule
    lease: timedelta = timedelta(seconds=60)
    """How long a claim holds; must outlast a push's timeout."""
    concurrency: int = 128
    batch_size: int = 256
    poll_interval: float = 1.0
    """Seconds between looks at the store when nothing woke the dispatcher."""
    record_timezone: str = "+08:00"


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Dispatcher:
    def __init__(
        self,
        store: Store,
        sender: Sender,
        clock: Clock,
        settings: DispatchSettings,
        *,
        listeners: Sequence[AttemptListener] = (),
    ) -> None:
        self.store = store
        self.sender = sender
        self.clock = clock
        self.settings = settings
        self.owner = worker_name()
        self.listeners = list(listeners)
        self._wake = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._in_flight = 0
        # Claim in batches of at least a quarter of the slots: fewer, larger transactions.
        self._min_claim = max(1, min(settings.concurrency // 4, settings.batch_size))
        self._done: list[Completion] = []
        self._done_ready = asyncio.Event()
        self._queue: asyncio.Queue[Claimed] = asyncio.Queue()
        self._drained = asyncio.Event()

    def wake(self) -> None:
        """Look for due work now (called after ingestion)."""
        self._wake.set()

    # The running loop

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until ``stop`` is set, then finish the pushes in flight."""
        writer = asyncio.create_task(self._write_loop(stop), name="ccpush-completion-writer")
        pushers = [
            asyncio.create_task(self._pusher(), name=f"ccpush-pusher-{n}")
            for n in range(self.settings.concurrency)
        ]
        last_sweep = -float("inf")
        try:
            while not stop.is_set():
                if time.monotonic() - last_sweep > self.settings.lease.total_seconds() / 4:
                    await self._release_expired()
                    last_sweep = time.monotonic()
                free = self.settings.concurrency - self._in_flight
                if free < self._min_claim and self._in_flight:
                    await _wait_any(stop, self._slot_freed, within=self.settings.poll_interval)
                    self._slot_freed.clear()
                    continue
                claimed = await self._claim(min(free, self.settings.batch_size))
                self._in_flight += len(claimed)
                for item in claimed:
                    self._queue.put_nowait(item)
                if len(claimed) < min(free, self.settings.batch_size):
                    await _wait_any(stop, self._wake, within=await self._idle_timeout())
                    self._wake.clear()
        finally:
            # What was claimed is pushed (each push is bounded by its timeout) and written.
            if self._in_flight:
                self._drained.clear()
                await self._drained.wait()
            for pusher in pushers:
                pusher.cancel()
            await asyncio.gather(*pushers, return_exceptions=True)
            self._done_ready.set()
            await writer

    async def _idle_timeout(self) -> float:
        due = await self.store.next_due_at()
        if due is None:
            return self.settings.poll_interval
        wait = (due - self.clock.now()).total_seconds()
        return min(max(wait, 0.0), self.settings.poll_interval)

    async def _pusher(self) -> None:
        """One of ``concurrency`` loops: take a claimed delivery, push it, hand over the result."""
        while True:
            item = await self._queue.get()
            try:
                outcome = await self.sender.send(item.push_url, item.body, self.headers_for(item))
                self._done.append(self.decide(item, outcome))
                self._done_ready.set()
            finally:
                self._in_flight -= 1
                if self.settings.concurrency - self._in_flight >= self._min_claim:
                    self._slot_freed.set()
                if not self._in_flight:
                    self._drained.set()

    async def _write_loop(self, stop: asyncio.Event) -> None:
        while True:
            await self._done_ready.wait()
            self._done_ready.clear()
            if self._done:
                batch, self._done = self._done, []
                await self._write(batch)
            if stop.is_set() and not self._in_flight and not self._done:
                return

    # One pass, for tests and tools: everything due now, until nothing is

    async def run_until_idle(self) -> int:
        """Push everything due at the clock's current time; the number of attempts made."""
        made = 0
        await self._release_expired()
        while claimed := await self._claim(self.settings.batch_size):
            outcomes = await asyncio.gather(
                *(self.sender.send(c.push_url, c.body, self.headers_for(c)) for c in claimed)
            )
            await self._write([self.decide(c, o) for c, o in zip(claimed, outcomes, strict=True)])
            made += len(claimed)
        return made

    # Shared steps

    async def _claim(self, limit: int) -> list[Claimed]:
        now = self.clock.now()
        return await self.store.claim_due(
            now=now, limit=limit, lease_until=now + self.settings.lease, owner=self.owner
        )

    async def _release_expired(self) -> None:
        released = await self.store.release_expired(now=self.clock.now())
        if released:
            log.warning("reclaimed %d deliveries whose worker lease expired", released)

    def headers_for(self, item: Claimed) -> dict[str, str]:
        """The Standard Webhooks headers (``webhook-id`` the same on every attempt of a
        delivery) and ccpush's own."""
        timestamp = int(self.clock.now().timestamp())
        return {
            **push_headers(item.signing_keys, f"dlv_{item.delivery_id}", timestamp, item.body),
            "ccpush-sequence": str(item.sequence),
            "ccpush-record-version": str(item.version),
            "ccpush-attempt": str(item.attempt),
            "ccpush-record-timezone": self.settings.record_timezone,
        }

    def test_headers(self, keys: tuple[str, ...], body: bytes) -> dict[str, str]:
        """Headers of a test push: signed like a real one, and marked as a test."""
        timestamp = int(self.clock.now().timestamp())
        return {
            **push_headers(keys, "test_" + secrets.token_hex(8), timestamp, body),
            "ccpush-attempt": "1",
            "ccpush-record-timezone": self.settings.record_timezone,
            "ccpush-test": "true",
        }

    def decide(self, item: Claimed, outcome: Outcome) -> Completion:
        """What follows an attempt: delivered, another try at the scheduled time, or failed."""
        if outcome.ok:
            state, next_at = DeliveryState.DELIVERED, None
        else:
            next_at = self.settings.schedule.next_attempt_at(item.attempt, outcome.started_at)
            state = DeliveryState.FAILED if next_at is None else DeliveryState.PENDING
        return Completion(claimed=item, outcome=outcome, next_state=state, next_attempt_at=next_at)

    async def _write(self, batch: list[Completion]) -> None:
        await self.store.complete(batch, owner=self.owner)
        for done in batch:
            for listener in self.listeners:
                try:
                    listener(done)
                except Exception:
                    log.exception("attempt listener failed")


async def _wait_any(stop: asyncio.Event, event: asyncio.Event, *, within: float) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(event.wait())]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waiters, return_exceptions=True)
