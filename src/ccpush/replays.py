"""The replay runner: turns queued replays into new deliveries, a chunk per transaction.

A replay is leased like a delivery, and its cursor moves with each chunk in the same
transaction as the deliveries it creates, so a runner that dies mid-way loses nothing and
repeats nothing: the next one carries on from the cursor when the lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Final

from ccpush.clock import Clock
from ccpush.errors import ReplayNotFound
from ccpush.models import ReplayJob, ReplayState
from ccpush.store.base import Store

log = logging.getLogger(__name__)

MAX_REPLAY_RECORDS: Final = 100_000
"""The most records one replay may push again; a larger range must be split."""


class ReplayRunner:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        owner: str,
        on_enqueued: Callable[[], None],
        lease: timedelta,
        poll_interval: float,
        chunk: int = 1000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.owner = owner
        self.on_enqueued = on_enqueued
        self.chunk = chunk
        self.lease = lease
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()
        self.on_finished: Callable[[ReplayJob], Awaitable[None]] | None = None
        """Called when a replay has queued all its records (operational notifications)."""

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Run replays until ``stop`` is set; a failure of the store is logged and the
        replay taken up again (its lease runs out) after ``poll_interval``."""
        while not stop.is_set():
            try:
                found = await self.run_one()
            except Exception:
                log.exception("running replays failed; trying again")
                found = False
            if not found:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
                self._wake.clear()

    async def run_until_idle(self) -> int:
        """Run every replay there is to the end; how many were run."""
        count = 0
        while await self.run_one():
            count += 1
        return count

    async def run_one(self) -> bool:
        """Lease one replay and run it to its end; False if there was none."""
        now = self.clock.now()
        job = await self.store.claim_replay(now=now, lease_until=now + self.lease, owner=self.owner)
        if job is None:
            return False
        log.info("replay %s of app %s: %d records", job.id, job.app_id, job.total)
        current: ReplayJob | None = job
        while current is not None and current.state is ReplayState.RUNNING:
            now = self.clock.now()
            try:
                current = await self.store.advance_replay(
                    job.id,
                    owner=self.owner,
                    chunk=self.chunk,
                    now=now,
                    lease_until=now + self.lease,
                )
            except ReplayNotFound:
                log.info("replay %s ended: its app was deleted", job.id)
                return True
            self.on_enqueued()
        if current is None:
            log.warning("replay %s was taken over by another runner", job.id)
        elif self.on_finished is not None:
            await self.on_finished(current)
        return True
