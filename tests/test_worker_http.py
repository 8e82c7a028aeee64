"""``/healthz``, ``/readyz`` and ``/metrics`` on the metrics port: a ``ccpush worker``'s (it
serves no API), and ``serve``'s when the port is set."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from ccpush.operations_server import serve_address, worker_address
from ccpush.settings import WORKER_METRICS_PORT, Settings
from ccpush.store import open_store
from tests.helpers import eventually
from tests.served import free_port

CCPUSH = str(Path(sys.executable).with_name("ccpush"))


@pytest.mark.parametrize(
    ("given", "worker", "serve"),
    [
        ({}, ("127.0.0.1", WORKER_METRICS_PORT), None),
        ({"metrics_port": 9200}, ("127.0.0.1", 9200), ("127.0.0.1", 9200)),
        ({"metrics_host": "::1"}, ("::1", WORKER_METRICS_PORT), None),
        ({"metrics_host": "0.0.0.0", "metrics_port": 0}, ("0.0.0.0", 0), ("0.0.0.0", 0)),  # noqa: S104
    ],
)
def test_where_each_command_answers_the_probes(
    given: dict[str, object], worker: tuple[str, int], serve: tuple[str, int] | None
) -> None:
    settings = Settings(**given)  # type: ignore[arg-type]
    assert worker_address(settings) == worker
    assert serve_address(settings) == serve


def _env(tmp_path: Path, **settings: str) -> dict[str, str]:
    kept = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("CCPUSH_") or name == "CCPUSH_SECRET_KEY"
    }
    return {**kept, "CCPUSH_DATA_DIR": str(tmp_path), "CCPUSH_LOG_LEVEL": "WARNING", **settings}


@asynccontextmanager
async def running(*args: str, env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    """``ccpush *args`` while in the ``async with``; then SIGTERM, and it must exit cleanly."""
    process = await asyncio.create_subprocess_exec(
        CCPUSH, *args, env=env, stderr=asyncio.subprocess.PIPE, start_new_session=True
    )
    assert process.stderr is not None
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        errors = await asyncio.wait_for(process.stderr.read(), 30)
        await asyncio.wait_for(process.wait(), 30)
    assert process.returncode == 0, errors.decode()
    assert b"Traceback" not in errors


async def answer(client: aiohttp.ClientSession, url: str) -> tuple[int, str] | None:
    """The status and body at ``url``; None while nothing listens there."""
    try:
        async with client.get(url) as response:
            return response.status, await response.text()
    except aiohttp.ClientConnectionError:
        return None


async def first_answer(client: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    found: list[tuple[int, str]] = []

    async def answered() -> bool:
        result = await answer(client, url)
        if result is not None:
            found.append(result)
        return result is not None

    await eventually(answered, timeout=30)
    return found[-1]


async def ready(client: aiohttp.ClientSession, base: str) -> bool:
    result = await answer(client, base + "/readyz")
    return result is not None and result[0] == 200


@pytest.mark.slow
async def test_a_worker_is_alive_at_once_and_ready_once_it_dispatches(tmp_path: Path) -> None:
    database = tmp_path / "ccpush.db"
    store = open_store(f"sqlite:///{database}")
    await store.open()
    await store.close()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # Holding the database's write lock keeps the worker from starting: it waits to migrate.
    lock = sqlite3.connect(database, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        async with (
            running("worker", env=_env(tmp_path, CCPUSH_METRICS_PORT=str(port))),
            aiohttp.ClientSession() as client,
        ):
            assert await first_answer(client, base + "/healthz") == (200, '{"status":"ok"}')
            for probe in ("/readyz", "/metrics"):
                status, body = await first_answer(client, base + probe)
                assert status == 503
                assert '"code":"not_running"' in body
            lock.execute("ROLLBACK")
            await eventually(lambda: ready(client, base), timeout=30)
            status, metrics = await first_answer(client, base + "/metrics")
            assert status == 200
            assert 'ccpush_deliveries{state="pending"} 0.0' in metrics
    finally:
        lock.close()


@pytest.mark.slow
async def test_a_worker_whose_port_is_taken_says_so_and_stops(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            CCPUSH,
            "worker",
            env=_env(tmp_path, CCPUSH_METRICS_PORT=str(port)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, errors = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    assert errors.decode().splitlines() == [
        f"ccpush: cannot listen on 127.0.0.1:{port} for /healthz, /readyz and /metrics: Address"
        " already in use (choose another CCPUSH_METRICS_PORT or CCPUSH_METRICS_HOST;"
        " --metrics-port, --metrics-host)"
    ]
    assert not out
    assert not (tmp_path / "ccpush.db").exists()  # it stopped before opening the store


@pytest.mark.slow
async def test_serve_answers_the_probes_on_both_ports_when_the_metrics_port_is_set(
    tmp_path: Path,
) -> None:
    api_port, metrics_port = free_port(), free_port()
    env = _env(tmp_path, CCPUSH_PORT=str(api_port), CCPUSH_METRICS_PORT=str(metrics_port))
    async with running("serve", env=env), aiohttp.ClientSession() as client:
        for port in (api_port, metrics_port):
            base = f"http://127.0.0.1:{port}"
            await eventually(lambda base=base: ready(client, base), timeout=30)
            status, metrics = await first_answer(client, base + "/metrics")
            assert status == 200
            assert "ccpush_oldest_due_age_seconds" in metrics
        not_the_api = await answer(client, f"http://127.0.0.1:{metrics_port}/v1/apps")
        assert not_the_api is not None
        assert not_the_api[0] == 404
