"""The ``ccpush`` command, run as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ccpush.store.migrations import load_migrations
from tests.conftest import minimal_record
from tests.helpers import eventually
from tests.receiver import Receiver, always
from tests.served import free_port

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
    assert "invalid setting CCPUSH_RETRY_SCHEDULE: 'soon' is not a duration" in result.stderr


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
    assert "invalid setting CCPUSH_ADMIN_TOKEN: the admin token is a placeholder" in result.stderr


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
    assert "[default: (30m,30m,30m)]" in result.stdout  # as Settings has it


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
        assert token.startswith("ccpa_")
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
    process group as a terminal's Ctrl-C) and check it exited cleanly with its children.
    The admin token is read from its file: the output says where it is, never what."""
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ccpush",
        "serve",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert server.stdout is not None
    assert server.stderr is not None
    children: list[int] = []
    token_file = Path(env["CCPUSH_DATA_DIR"]) / "admin-token"
    output = b""
    try:
        async with asyncio.timeout(30):
            while b"serving the API at" not in (line := await server.stderr.readline()):
                assert line, "ccpush serve stopped before it listened"
                output += line
        generated = f"generated an admin token, kept in {token_file} (mode 0600)".encode()
        assert (generated in output) == (expect_token is None)
        token = token_file.read_text().strip()
        await _push_through(port, token, receiver)
        children = _children(server.pid)
        assert len(children) == int(env.get("CCPUSH_PUSH_PROCESSES", "0"))
    finally:
        if ctrl_c:
            os.killpg(server.pid, signal.SIGINT)
        else:
            server.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(server.stderr.read(), 30)
        rest += await asyncio.wait_for(server.stdout.read(), 30)
        await server.wait()
    assert server.returncode == 0
    assert b"Traceback" not in rest
    assert b"push process exited" not in rest  # stopped by the server, not by the signal
    await eventually(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children))
    assert token.encode() not in output + rest
    if expect_token is not None:
        assert token == expect_token
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


# Start-up that fails in one line, before anything is written or announced


def _unusable_data_dir(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "a-file").touch()
    return {"CCPUSH_DATA_DIR": str(tmp_path / "a-file" / "data")}


@pytest.mark.parametrize(
    ("command", "trouble", "says"),
    [
        ("serve", "port", "cannot listen on 127.0.0.1:{port}: Address already in use"
                          " (choose another CCPUSH_PORT"),
        ("serve", "database down", "cannot open the database postgresql://ccpush:***@127.0.0.1:"
                                   "{down}/ccpush (CCPUSH_DATABASE_URL): cannot connect to"
                                   " PostgreSQL"),
        ("migrate", "database down", "(CCPUSH_DATABASE_URL): cannot connect to PostgreSQL"),
        ("serve", "database url", "invalid setting CCPUSH_DATABASE_URL: unsupported database"
                                  " URL scheme 'mysql'"),
        ("serve", "data dir", "(CCPUSH_DATA_DIR) cannot be used: {tmp}/a-file is not a"
                              " directory"),
        ("migrate", "data dir", "(CCPUSH_DATA_DIR) cannot be used"),
    ],
)  # fmt: skip
def test_a_start_that_cannot_succeed_says_why_in_one_line_and_writes_nothing(
    tmp_path: Path, command: str, trouble: str, says: str
) -> None:
    down = free_port()  # nothing listens there
    data_dir = tmp_path / "data"
    env = {"CCPUSH_DATA_DIR": str(data_dir), "HOME": str(tmp_path / "home")}
    env |= {
        "port": {},
        "database down": {"CCPUSH_DATABASE_URL": f"postgresql://ccpush:pw@127.0.0.1:{down}/ccpush"},
        "database url": {"CCPUSH_DATABASE_URL": "mysql://db/ccpush"},
        "data dir": _unusable_data_dir(tmp_path),
    }[trouble]
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1] if trouble == "port" else free_port()
        result = ccpush(command, env={**env, "CCPUSH_PORT": str(port)})
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    expected = says.format(port=port, down=down, tmp=tmp_path)
    assert result.stderr.startswith("ccpush: ")
    assert expected in result.stderr
    assert ":pw@" not in result.stderr
    assert not data_dir.exists()  # no admin token, no SQLite file, not even the directory
    assert not (tmp_path / "home").exists()


def test_in_json_mode_a_failed_start_is_one_json_line(tmp_path: Path) -> None:
    down = free_port()
    env = {
        "CCPUSH_DATA_DIR": str(tmp_path / "data"),
        "CCPUSH_PORT": str(free_port()),
        "CCPUSH_DATABASE_URL": f"postgresql://127.0.0.1:{down}/ccpush",
        "CCPUSH_LOG_FORMAT": "json",
    }
    result = ccpush("serve", env=env)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    failure = json.loads(line)
    assert failure["level"] == "ERROR"
    assert "(CCPUSH_DATABASE_URL): cannot connect to PostgreSQL" in failure["message"]


def test_help_points_to_the_settings_table() -> None:
    for command in ("serve", "worker"):
        shown = " ".join(ccpush(command, "--help", env={"COLUMNS": "200"}).stdout.split())
        assert "README's Configuration table lists every setting" in shown
        assert "--allowed-target-networks" in shown
    assert "--dev" in ccpush("serve", "--help", env={"COLUMNS": "200"}).stdout


# Development mode, and logs that are only JSON in JSON mode


class Logged:
    """The lines a process prints on a stream, read as they come."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.lines: list[str] = []
        self._reading = asyncio.create_task(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.lines.append(line.decode())

    def json(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]  # every line, or it fails

    async def wait_for(self, message: str) -> dict[str, Any]:
        await eventually(lambda: any(message in entry["message"] for entry in self.json()), 30)
        return next(entry for entry in self.json() if message in entry["message"])

    async def finished(self) -> None:
        await asyncio.wait_for(self._reading, 30)


async def _start(
    *args: str, env: dict[str, str]
) -> tuple[asyncio.subprocess.Process, Logged, Logged]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ccpush", *args, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stderr is not None
    return process, Logged(process.stdout), Logged(process.stderr)


async def _stopped(process: asyncio.subprocess.Process, *streams: Logged) -> None:
    process.send_signal(signal.SIGTERM)
    for stream in streams:
        await stream.finished()
    assert await asyncio.wait_for(process.wait(), 30) == 0


async def test_dev_mode_pushes_to_this_machine_and_json_logs_are_only_json(
    tmp_path: Path,
) -> None:
    receiver = await Receiver(always(500)).start()
    port = free_port()
    env = {"CCPUSH_DATA_DIR": str(tmp_path), "CCPUSH_PORT": str(port), "CCPUSH_LOG_FORMAT": "json"}
    server, out, err = await _start("serve", "--dev", env=env)
    try:
        serving = await err.wait_for("serving the API at")
        assert serving["message"].endswith(f"http://127.0.0.1:{port}/console/")
        warning = await err.wait_for("development mode")
        assert warning["level"] == "WARNING"
        assert "127.0.0.0/8, ::1/128" in warning["message"]
        steps = (await err.wait_for("next steps"))["message"]
        assert f"TOKEN=$(cat {tmp_path}/admin-token)" in steps
        assert "ccpush listen --port 9000 --secret" in steps
        await _push_to_this_machine((tmp_path / "admin-token").read_text().strip(), port, receiver)
        failed = await err.wait_for("push failed")
    finally:
        await _stopped(server, out, err)
        await receiver.stop()
    assert failed["message"].startswith(f"push failed: app {failed['app_id']} delivery ")
    assert (failed["attempt"], failed["outcome"], failed["status_code"]) == (1, "retrying", 500)
    assert failed["call_session_id"] == "dev-push"
    assert isinstance(failed["delivery_id"], int)
    assert out.json() == []
    assert len(err.json()) == len(err.lines)


async def _push_to_this_machine(token: str, port: int, receiver: Receiver) -> None:
    """An app whose push address is on this machine (allowed in development mode), and a
    record for it."""
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=headers) as client:
        async with client.post("/v1/apps", json={"name": "dev", "pushUrl": receiver.url}) as made:
            assert made.status == 201, await made.text()
            app_id = (await made.json())["id"]
        record = minimal_record("dev-push")
        async with client.post(f"/v1/apps/{app_id}/call-records", json=record) as posted:
            assert posted.status == 202
    await receiver.wait_for(lambda r: "dev-push" in r.sessions())


async def test_a_worker_in_json_mode_prints_only_json(tmp_path: Path) -> None:
    env = {
        "CCPUSH_DATA_DIR": str(tmp_path),
        "CCPUSH_METRICS_PORT": str(free_port()),
        "CCPUSH_LOG_FORMAT": "json",
    }
    worker, out, err = await _start("worker", env=env)
    try:
        await err.wait_for("dispatching")
    finally:
        await _stopped(worker, out, err)
    assert out.json() == []
    assert all(entry["level"] in ("INFO", "WARNING") for entry in err.json())
