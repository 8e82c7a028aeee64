"""The ``ccpush`` command, run as a user runs it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from ccpush.store.base import load_migrations
from tests.conftest import minimal_record
from tests.helpers import eventually
from tests.receiver import Receiver

pytestmark = pytest.mark.slow


def ccpush(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ccpush", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_migrate_creates_then_reports_an_up_to_date_schema(
    backend: str, db_url: str, tmp_path: Path
) -> None:
    env = {"CCPUSH_DATABASE_URL": db_url, "CCPUSH_DATA_DIR": str(tmp_path)}
    first = ccpush("migrate", env=env)
    assert first.returncode == 0, first.stderr
    names = [f"{m.version:04d}_{m.name}" for m in load_migrations(backend)]
    assert names[0] == "0001_initial"
    assert first.stdout.strip() == "applied: " + ", ".join(names)
    assert ccpush("migrate", env=env).stdout.strip() == "the schema is up to date"


def test_bad_settings_are_reported_by_name(tmp_path: Path) -> None:
    result = ccpush(
        "migrate", env={"CCPUSH_DATA_DIR": str(tmp_path), "CCPUSH_RETRY_SCHEDULE": "soon"}
    )
    assert result.returncode == 2
    assert "retry_schedule" in result.stderr
    assert "is not a duration" in result.stderr


def test_an_unknown_http_client_is_refused_by_name(tmp_path: Path) -> None:
    env = {"CCPUSH_DATA_DIR": str(tmp_path), "CCPUSH_HTTP_CLIENT": "curl"}
    result = ccpush("worker", env=env)
    assert result.returncode == 2
    assert "aiohttp" in result.stderr
    assert "reqwest" in result.stderr


def test_placeholder_admin_tokens_are_refused(tmp_path: Path) -> None:
    env = {"CCPUSH_DATA_DIR": str(tmp_path), "CCPUSH_ADMIN_TOKEN": "changeme"}
    result = ccpush("serve", env=env)
    assert result.returncode == 2
    assert "placeholder" in result.stderr


def test_every_option_names_its_environment_variable() -> None:
    result = ccpush("serve", "--help", env={"COLUMNS": "200"})
    for variable in (
        "CCPUSH_DATABASE_URL",
        "CCPUSH_HOST",
        "CCPUSH_PORT",
        "CCPUSH_RETRY_SCHEDULE",
        "CCPUSH_HTTP_CLIENT",
    ):
        assert variable in result.stdout


async def test_serve_generates_a_token_once_accepts_and_pushes(tmp_path: Path) -> None:
    receiver = await Receiver().start()
    port = free_port()
    env = {
        **os.environ,
        "CCPUSH_DATA_DIR": str(tmp_path),
        "CCPUSH_PORT": str(port),
        "CCPUSH_ALLOWED_TARGET_NETWORKS": "127.0.0.0/8",
    }
    try:
        token = await _serve_and_push(env, port, receiver)
        assert (tmp_path / "admin-token").read_text().strip() == token
        assert (tmp_path / "admin-token").stat().st_mode & 0o077 == 0
        assert (tmp_path / "ccpush.db").exists()
        # Again, pushing from a push process with reqwest, stopped by Ctrl-C: the signal
        # reaches the whole process group, and the child waits for the server to stop it.
        with_child = {**env, "CCPUSH_PUSH_PROCESSES": "1", "CCPUSH_HTTP_CLIENT": "reqwest"}
        second = await _serve_and_push(with_child, port, receiver, expect_token=token, ctrl_c=True)
        assert second == token
    finally:
        await receiver.stop()


async def _serve_and_push(
    env: dict[str, str],
    port: int,
    receiver: Receiver,
    expect_token: str | None = None,
    *,
    ctrl_c: bool = False,
) -> str:
    """Run ``ccpush serve``, push a record through it, stop it (SIGTERM, or SIGINT to its
    process group as a terminal's Ctrl-C) and check it exited cleanly with its children."""
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ccpush",
        "serve",
        env=env,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert server.stderr is not None
    children: list[int] = []
    try:
        token = expect_token
        async with asyncio.timeout(30):
            while b"Uvicorn running" not in (line := await server.stderr.readline()):
                assert line, "ccpush serve stopped before it listened"
                if line.startswith(b"  ccpa_"):
                    token = line.decode().strip()
        assert token is not None, "the generated admin token was not printed"
        await _push_through(port, token, receiver)
        children = _children(server.pid)
        assert len(children) == int(env.get("CCPUSH_PUSH_PROCESSES", "0"))
    finally:
        if ctrl_c:
            os.killpg(server.pid, signal.SIGINT)
        else:
            server.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(server.stderr.read(), 30)
        await server.wait()
    assert server.returncode == 0
    assert b"Traceback" not in rest
    assert b"push process exited" not in rest  # stopped by the server, not by the signal
    await eventually(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children))
    if expect_token is not None:
        assert expect_token.encode() not in rest
    return token


def _children(pid: int) -> list[int]:
    """The process ids of ``pid``'s children (Linux)."""
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in found]


async def _push_through(port: int, token: str, receiver: Receiver) -> None:
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(base, headers=headers) as client:
        async with client.post("/v1/apps", json={"name": "cli", "pushUrl": receiver.url}) as made:
            assert made.status == 201
            app_id = (await made.json())["id"]
        session_id = f"cli-{app_id}"
        record = minimal_record(session_id)
        async with client.post(f"/v1/apps/{app_id}/call-records", json=record) as posted:
            assert posted.status == 202
    await receiver.wait_for(lambda r: session_id in r.sessions())


def test_the_demo_ends_by_itself_with_a_summary(tmp_path: Path) -> None:
    result = ccpush("demo", env={"HOME": str(tmp_path)}, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "30 minutes" in out  # it says the schedule is shortened
    assert "Summary after" in out
    counts = {
        label: int(line.rsplit(maxsplit=1)[-1])
        for line in out.splitlines()
        for label in ("records ingested", "delivered at the first attempt",
                      "delivered after retries", "failed after 4 attempts", "still pending")
        if line.strip().startswith(label + ":")
    }  # fmt: skip
    assert counts["records ingested"] == 40
    assert counts["still pending"] == 0
    assert counts["delivered after retries"] > 0
    assert counts["failed after 4 attempts"] > 0
    assert sum(counts[k] for k in ("delivered at the first attempt", "delivered after retries",
                                   "failed after 4 attempts")) == 40  # fmt: skip
