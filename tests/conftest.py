from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from ccpush.clock import ManualClock
from ccpush.secret_box import new_key
from ccpush.service import Service
from ccpush.store import Store, open_store
from tests.api_client import Api
from tests.helpers import make_service
from tests.receiver import Receiver

POSTGRES_URL = os.environ.get(
    "CCPUSH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# One secret key for the whole run: stores a test opens without a box, services and the
# workers tests start (which inherit the environment) all seal and open with it.
os.environ.setdefault("CCPUSH_SECRET_KEY", new_key())
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def sample_record(session_id: str = "23111713424802472", **changes: Any) -> dict[str, Any]:
    """The seed document's sample push, every field filled."""
    record: dict[str, Any] = {
        "callId": "23111714122312000001",
        "callSessionId": session_id,
        "called": "918613237978737",
        "calledInfo": "Mumbai mobile",
        "caller": "8613800138000",
        "ccode": "91",
        "ccodeName": "India",
        "agentName": "Li Na",
        "agentGroupName": "TAOTAO",
        "agentAccount": "lina@taotao",
        "callDuration": 15,
        "callType": 3,
        "hangupCode": "200",
        "hangupReason": 1,
        "hangingDirection": 0,
        "labels": ["Intended customers", "High level"],
        "baseCost": "0.0100",
        "cost": "0.0150",
        "remark": "call back on Monday",
        "callStartTime": "2023-11-17 13:42:30",
        "answerTime": "2023-11-17 13:42:33",
        "callEndTime": "2023-11-17 13:42:48",
        "voiceUrl": "https://records.example.com/23111713424802472.mp3",
    }
    record.update(changes)
    return record


def minimal_record(session_id: str, **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "callSessionId": session_id,
        "callType": 2,
        "callDuration": 0,
        "callStartTime": "2023-11-17 13:42:30",
        "callEndTime": "2023-11-17 13:42:40",
    }
    record.update(changes)
    return record


_postgres_checked: list[str | None] = []


async def postgres_unavailable() -> str | None:
    """None if the test PostgreSQL answers, else why not (cached)."""
    if not _postgres_checked:
        try:
            conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
            await conn.close()
            _postgres_checked.append(None)
        except (OSError, asyncpg.PostgresError) as exc:
            _postgres_checked.append(f"PostgreSQL at {POSTGRES_URL} is not reachable: {exc}")
    return _postgres_checked[0]


async def require_postgres() -> None:
    reason = await postgres_unavailable()
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"{reason} (PostgreSQL tests are required in CI)")
    pytest.skip(reason)


async def store_url(backend: str, tmp_path: Path) -> tuple[str, str | None]:
    """A fresh store's URL, and the PostgreSQL schema to drop afterwards."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'ccpush.db'}", None
    await require_postgres()
    schema = "test_" + secrets.token_hex(6)
    separator = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{separator}schema={schema}", schema


async def drop_schema(schema: str | None) -> None:
    if schema is not None:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def db_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    url, schema = await store_url(backend, tmp_path)
    yield url
    await drop_schema(schema)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    store = open_store(db_url)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC))


@pytest.fixture
async def service(tmp_path: Path, db_url: str, clock: ManualClock) -> AsyncIterator[Service]:
    """A service on a fresh store, its clock injected, not dispatching by itself: tests
    push what is due with ``service.dispatcher.run_until_idle()``."""
    service = make_service(tmp_path, db_url, clock)
    await service.start(dispatch=False)
    yield service
    await service.stop()


@pytest.fixture
async def admin(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    """The API of ``service``, called in-process with the operator's token."""
    async with Api(service).client() as client:
        yield client


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = await Receiver().start()
    yield receiver
    await receiver.stop()
