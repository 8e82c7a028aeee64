"""Several ccpush dispatchers on one PostgreSQL store, each in its own process: how ccpush
scales out (``ccpush worker`` run more than once), for ``bench/throughput.py``.

Each process runs the real ``Service`` with its own settings, opens its store and HTTP
client, says it is ready, and starts dispatching only when told to go: so the clock starts
when every one of them can push. The processes count what they write in shared memory
(one slot each), which the benchmark reads without a query that would load the store.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import time
from collections.abc import Sequence
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import uvloop

from ccpush.models import Completion, DeliveryState
from ccpush.service import Service
from ccpush.settings import Settings

START_SECONDS = 60.0
"""At most this long for every process to open its store and its client."""
POLL_SECONDS = 0.005
"""How often the benchmark reads the counts: the end of a run is known to this much."""


class DispatcherProcesses:
    """``len(settings)`` dispatcher processes, started ready and idle; ``go()`` starts them."""

    def __init__(self, settings: Sequence[Settings]) -> None:
        context = multiprocessing.get_context("spawn")
        self._go, self._stop = context.Event(), context.Event()
        self._ready = [context.Event() for _ in settings]
        self._delivered = [context.Value("q", 0, lock=False) for _ in settings]
        self._failed = [context.Value("q", 0, lock=False) for _ in settings]
        self._processes = [
            context.Process(
                target=dispatcher_main,
                args=(
                    one,
                    self._ready[n],
                    self._go,
                    self._stop,
                    self._delivered[n],
                    self._failed[n],
                ),
                daemon=True,
                name=f"bench-dispatcher-{n}",
            )
            for n, one in enumerate(settings)
        ]

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self._processes if process.pid is not None]

    @property
    def delivered(self) -> int:
        return sum(int(slot.value) for slot in self._delivered)

    @property
    def failed(self) -> int:
        return sum(int(slot.value) for slot in self._failed)

    async def __aenter__(self) -> DispatcherProcesses:
        for process in self._processes:
            process.start()
        deadline = time.monotonic() + START_SECONDS
        for ready, process in zip(self._ready, self._processes, strict=True):
            left = max(deadline - time.monotonic(), 0.0)
            if not await asyncio.to_thread(ready.wait, left):
                await self.__aexit__()
                raise RuntimeError(f"{process.name} did not start (exit code {process.exitcode})")
        return self

    def go(self) -> None:
        self._go.set()

    async def wait_delivered(self, target: int, within: float) -> None:
        """Until ``target`` deliveries are written as delivered, looking every
        ``POLL_SECONDS``; a failed attempt or a process that died ends the wait with an
        error (such a run is not a measurement)."""
        async with asyncio.timeout(within):
            for look in itertools.count():
                if self.delivered >= target:
                    return
                if self.failed or (look % 20 == 0 and not self._all_alive()):
                    raise RuntimeError(f"{self.failed} attempts failed, or a dispatcher died")
                await asyncio.sleep(POLL_SECONDS)

    def _all_alive(self) -> bool:
        return all(process.is_alive() for process in self._processes)

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        self._go.set()  # a process still waiting to go stops at once
        for process in self._processes:
            await asyncio.to_thread(process.join, 30)
            if process.is_alive():
                process.kill()


def dispatcher_main(
    settings: Settings,
    ready: Any,
    go: Any,
    stop: Any,
    delivered: Synchronized[int],
    failed: Synchronized[int],
) -> None:
    """A child process: one ``Service``, on every CPU (not the benchmark's pinning)."""
    os.sched_setaffinity(0, range(os.cpu_count() or 1))

    def count(done: Completion) -> None:
        if done.next_state is DeliveryState.DELIVERED:
            delivered.value += 1
        else:
            failed.value += 1

    async def dispatch() -> None:
        service = Service(settings, listeners=[count])
        await service.store.open()
        await service.sender.start()
        ready.set()
        await asyncio.to_thread(go.wait)
        if not stop.is_set():
            await service.start()
            await asyncio.to_thread(stop.wait)
        await service.stop()

    uvloop.run(dispatch())
