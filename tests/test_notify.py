"""A worker on PostgreSQL is woken by NOTIFY when another process makes deliveries due:
its poll interval (60 s here) is only the fallback, so each push must arrive in seconds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from ccpush.service import Service
from ccpush.store import Store, open_store
from ccpush.store.postgres import PostgresStore
from tests.conftest import POSTGRES_URL, drop_schema, minimal_record, store_url
from tests.helpers import eventually, make_service, new_record
from tests.receiver import Receiver

pytestmark = pytest.mark.postgres

ARRIVAL = 5.0
"""Seconds a push may take to arrive: far less than the worker's 60 s poll."""


@pytest.fixture
async def pg_url(tmp_path: Path) -> AsyncIterator[str]:
    url, schema = await store_url("postgres", tmp_path)
    yield url
    await drop_schema(schema)


@pytest.fixture
async def ingester(pg_url: str) -> AsyncIterator[Store]:
    """The store as the process that ingests (``ccpush serve``) uses it."""
    store = open_store(pg_url)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def worker(tmp_path: Path, pg_url: str, ingester: Store) -> AsyncIterator[Service]:
    """A separate worker, dispatching on the real clock, polling once a minute."""
    service = make_service(tmp_path, pg_url, poll_interval=60)
    await service.start()
    await eventually(lambda: listening(channel_of(service)))
    yield service
    service.request_stop()
    service.replays.wake()  # it naps a poll interval (60 s here) before it sees the stop
    await service.stop()


def channel_of(service: Service) -> str:
    assert isinstance(service.store, PostgresStore)
    return service.store.channel


async def listening_backends(channel: str) -> list[int]:
    """The server processes of the connections whose last statement was LISTEN on ``channel``."""
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE query = $1", f'LISTEN "{channel}"'
        )
    finally:
        await conn.close()
    return [row[0] for row in rows]


async def listening(channel: str) -> bool:
    return bool(await listening_backends(channel))


async def ingest(store: Store, app_id: str, session_id: str) -> None:
    record = new_record(minimal_record(session_id))
    await store.ingest(app_id, [record], now=datetime.now(UTC))


async def test_a_worker_is_woken_by_records_ingested_elsewhere(
    worker: Service, ingester: Store, receiver: Receiver
) -> None:
    app = await ingester.create_app(name="crm", push_url=receiver.url, now=datetime.now(UTC))
    for n in range(3):
        await ingest(ingester, app.id, f"call-{n}")
        await receiver.wait_for(lambda r, n=n: len(r.pushes) == n + 1, timeout=ARRIVAL)


async def test_a_worker_is_woken_by_an_app_resumed_elsewhere(
    worker: Service, ingester: Store, receiver: Receiver
) -> None:
    now = datetime.now(UTC)
    app = await ingester.create_app(name="crm", push_url=receiver.url, now=now)
    await ingester.update_app(app.id, paused=True, now=now)
    await ingest(ingester, app.id, "held-call")
    await ingester.update_app(app.id, paused=False, now=datetime.now(UTC))
    await receiver.wait_for(lambda r: r.sessions() == {"held-call"}, timeout=ARRIVAL)


async def test_a_worker_is_woken_by_a_resend_elsewhere(
    worker: Service, ingester: Store, receiver: Receiver
) -> None:
    app = await ingester.create_app(name="crm", push_url=receiver.url, now=datetime.now(UTC))
    await ingest(ingester, app.id, "call")
    await receiver.wait_for(lambda r: len(r.pushes) == 1, timeout=ARRIVAL)
    await ingester.resend(app.id, "call", now=datetime.now(UTC))
    await receiver.wait_for(lambda r: len(r.pushes) == 2, timeout=ARRIVAL)


async def test_the_worker_listens_again_when_its_connection_drops(
    worker: Service, ingester: Store, receiver: Receiver
) -> None:
    channel = channel_of(worker)
    [first] = await listening_backends(channel)
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", first)
    finally:
        await conn.close()
    await eventually(lambda: _listening_anew(channel, first))
    app = await ingester.create_app(name="crm", push_url=receiver.url, now=datetime.now(UTC))
    await ingest(ingester, app.id, "after-the-drop")
    await receiver.wait_for(lambda r: r.sessions() == {"after-the-drop"}, timeout=ARRIVAL)
    assert worker.dispatching


async def _listening_anew(channel: str, dropped: int) -> bool:
    return bool(set(await listening_backends(channel)) - {dropped})
