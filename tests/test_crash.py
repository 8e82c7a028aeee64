"""A worker killed with SIGKILL mid-flight loses nothing: another run delivers every record."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
from pathlib import Path

import pytest

from ccpush.clock import SystemClock
from ccpush.models import DeliveryState
from ccpush.store import Store, open_store
from tests.conftest import minimal_record
from tests.helpers import eventually, new_record
from tests.receiver import Receiver, Reply

RECORDS = 3000
ANSWERED = 1200
"""Pushes answered at once before the receiver starts to hang: a host's in-flight limit
starts small and grows with each answer (``ccpush.pacing``)."""
IN_FLIGHT = 800
"""Pushes the first worker must be holding, hung, when it is killed."""

pytestmark = pytest.mark.slow


def start_worker(db_url: str, tmp_path: Path) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "CCPUSH_DATABASE_URL": db_url,
        "CCPUSH_DATA_DIR": str(tmp_path),
        "CCPUSH_CONCURRENCY": "2000",
        "CCPUSH_PER_HOST_CONCURRENCY": "2000",
        "CCPUSH_BATCH_SIZE": "500",
        "CCPUSH_PUSH_TIMEOUT": "8",
        "CCPUSH_LEASE": "9s",
        "CCPUSH_POLL_INTERVAL": "0.2",
        "CCPUSH_LOG_LEVEL": "WARNING",
        "CCPUSH_ALLOWED_TARGET_NETWORKS": "127.0.0.0/8",
        "CCPUSH_METRICS_PORT": "0",  # any free port: tests run side by side
    }
    return asyncio.create_subprocess_exec(  # type: ignore[return-value]
        sys.executable, "-m", "ccpush", "worker", env=env, stderr=asyncio.subprocess.PIPE
    )


async def test_sigkill_mid_flight_loses_no_record(db_url: str, tmp_path: Path) -> None:
    held = asyncio.Event()  # then the first worker's pushes hang until it is dead
    answered = itertools.count()
    receiver = Receiver(
        lambda push, seen: Reply(delay=0 if next(answered) < ANSWERED or held.is_set() else 30)
    )
    await receiver.start()
    store = open_store(db_url)
    await store.open()
    try:
        now = SystemClock().now()
        app = await store.create_app(name="crash", push_url=receiver.url, now=now)
        records = [new_record(minimal_record(f"c{i}")) for i in range(RECORDS)]
        await store.ingest(app.id, records, now=now)

        first = await start_worker(db_url, tmp_path)
        await receiver.wait_for(lambda r: len(r.pushes) >= ANSWERED + IN_FLIGHT, timeout=60)
        assert (await store.count_by_state())[DeliveryState.SENDING] >= IN_FLIGHT
        first.send_signal(signal.SIGKILL)
        await first.wait()
        assert first.returncode == -signal.SIGKILL
        held.set()

        # Nothing but the expiry of the dead worker's lease (9 s) brings its deliveries back.
        second = await start_worker(db_url, tmp_path)
        try:
            await eventually(lambda: _delivered(store, RECORDS), timeout=90)
        finally:
            second.send_signal(signal.SIGTERM)
            await asyncio.wait_for(second.wait(), 30)
        assert receiver.sessions() == {f"c{i}" for i in range(RECORDS)}
        counts = await store.count_by_state()
        assert counts[DeliveryState.DELIVERED] == RECORDS
        assert second.returncode == 0
    finally:
        await store.close()
        await receiver.stop()


async def _delivered(store: Store, count: int) -> bool:
    return (await store.count_by_state())[DeliveryState.DELIVERED] == count
