"""A database that drops every connection (a PostgreSQL restart or failover) costs the API
a 503 that changed nothing, and the dispatcher a retry; never a record."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import httpx
import pytest

from ccpush.errors import StoreError
from ccpush.store.sqlite import SqliteStore
from tests.api_client import Api, ok
from tests.conftest import POSTGRES_URL, minimal_record
from tests.helpers import make_service
from tests.receiver import Receiver


async def drop_other_connections() -> int:
    """Terminate every other connection to the test database, as a restart would."""
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return len(rows)
    finally:
        await conn.close()


@pytest.mark.parametrize("backend", ["postgres"])  # the server drops the connections
async def test_dropped_connections_cost_a_503_and_lose_nothing(
    tmp_path: Path, db_url: str, receiver: Receiver
) -> None:
    service = make_service(tmp_path, db_url)
    await service.start()
    try:
        async with Api(service).client() as admin:
            app = await ok(
                await admin.post("/v1/apps", json={"name": "a", "pushUrl": receiver.url}), 201
            )
            url = f"/v1/apps/{app['id']}/call-records"
            await ok(await admin.post(url, json=minimal_record("before")), 202)
            await receiver.wait_for(lambda r: "before" in r.sessions())
            assert await drop_other_connections() > 0
            answers: dict[str, httpx.Response] = {}
            for n in range(20):
                answers[f"after{n}"] = await admin.post(url, json=minimal_record(f"after{n}"))
            statuses = {answer.status_code for answer in answers.values()}
            assert statuses <= {202, 503}
            assert 202 in statuses  # the store reconnects
            for answer in answers.values():
                if answer.status_code == 503:
                    assert answer.json()["error"]["code"] == "store_unavailable"
            accepted = {sid for sid, answer in answers.items() if answer.status_code == 202}
            refused = set(answers) - accepted
            # Every accepted record is pushed (the dispatcher got over it), no refused one is.
            await receiver.wait_for(lambda r: accepted <= r.sessions(), timeout=30)
            for sid in refused:
                page = await admin.get(f"{url}/{sid}/deliveries")
                assert page.status_code == 404
        assert service.dispatching
    finally:
        await service.stop()


async def test_the_drivers_failures_reach_callers_as_store_errors(tmp_path: Path) -> None:
    """Callers (the API, the dispatcher) see one error for a failing database, whatever the
    backend's driver raised (here SQLite's, on a connection that is gone)."""
    store = SqliteStore.from_url(f"sqlite:///{tmp_path / 'gone.db'}")
    await store.open()
    try:
        await store._run(store._db.close)
        with pytest.raises(StoreError, match="ProgrammingError"):
            await store.count_by_state()
    finally:
        await store.close()
