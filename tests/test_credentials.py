"""Credentials handled as credentials: failed sign-ins never lock out a valid token, a
signed-out session stays ended, the data on disk is private, and tokens sent in a query
string do not reach the access log."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from ccpush.clock import ManualClock
from ccpush.logs import LogFormat, configure_logging, redact_query
from ccpush.service import Service, resolve_admin_token
from ccpush.web.session import MAX_AGE, EndedSessions
from tests.api_client import ADMIN, Api, ok
from tests.conftest import minimal_record
from tests.helpers import make_service, make_settings
from tests.served import ServerThread, _Server, served_api

LIMIT = 20


@pytest.fixture
async def service(tmp_path: Path, db_url: str, clock: ManualClock) -> AsyncIterator[Service]:
    service = make_service(tmp_path, db_url, clock, auth_failure_limit=LIMIT)
    await service.start(dispatch=False)
    yield service
    await service.stop()


def client_from(api: Api, address: str, token: str | None) -> httpx.AsyncClient:
    """A client of ``api`` calling from ``address``, with ``token`` (None: no token)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    transport = httpx.ASGITransport(api.app, client=(address, 40_000))
    return httpx.AsyncClient(transport=transport, base_url="http://ccpush.test", headers=headers)


async def status_of(api: Api, address: str, token: str | None) -> int:
    """The status of listing the apps from ``address`` with ``token``."""
    async with client_from(api, address, token) as client:
        return (await client.get("/v1/apps")).status_code


async def ingest(api: Api, address: str, token: str, app_id: str, session_id: str) -> int:
    async with client_from(api, address, token) as client:
        records = f"/v1/apps/{app_id}/call-records"
        return (await client.post(records, json=minimal_record(session_id))).status_code


async def keys_and_app(admin: httpx.AsyncClient) -> tuple[Any, Any, str]:
    """A platform key and a manage key (as created: id and secret), neither used yet, and
    an app."""
    platform = await ok(await admin.post("/v1/platform-keys", json={"name": "call center"}), 201)
    account = await ok(await admin.post("/v1/accounts", json={"name": "Acme"}), 201)
    keys = f"/v1/accounts/{account['id']}/keys"
    manage = await ok(await admin.post(keys, json={"name": "ops", "scope": "manage"}), 201)
    app = await ok(await admin.post("/v1/apps", json={"name": "line"}), 201)
    return platform, manage, app["id"]


# Failed sign-ins


async def test_failures_from_an_address_never_refuse_a_valid_token(service: Service) -> None:
    api = Api(service)
    async with api.client() as admin:
        platform, manage, app_id = await keys_and_app(admin)
    nat = "203.0.113.7"
    codes = [await status_of(api, nat, f"ccpk_wrong{n}") for n in range(LIMIT + 5)]
    assert codes == [401] * LIMIT + [429] * 5
    assert await ingest(api, nat, platform["secret"], app_id, "s1") == 202
    assert await status_of(api, nat, ADMIN) == 200
    assert await status_of(api, nat, manage["secret"]) == 200
    async with client_from(api, nat, "ccpk_one_more") as guesser:
        refused = await guesser.get("/v1/apps")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    assert await status_of(api, nat, None) == 429  # no token at all is no better
    assert await status_of(api, "203.0.113.8", "ccpk_wrong0") == 401  # another address


async def test_a_bad_key_sent_from_many_addresses_is_refused(service: Service) -> None:
    api = Api(service)
    async with api.client() as admin:
        platform, _, _ = await keys_and_app(admin)
        await ok(await admin.delete(f"/v1/platform-keys/{platform['id']}"))
    addresses = [f"198.51.100.{n}" for n in range(1, LIMIT + 6)]
    codes = [await status_of(api, address, platform["secret"]) for address in addresses]
    assert codes == [401] * LIMIT + [429] * 5
    assert await status_of(api, addresses[-1], "ccpk_another_wrong") == 401
    assert await status_of(api, addresses[-1], ADMIN) == 200


async def test_a_flood_of_invalid_keys_does_not_keep_a_valid_one_out(service: Service) -> None:
    api = Api(service)
    async with api.client() as admin:
        platform, _, app_id = await keys_and_app(admin)
    flooder = "192.0.2.66"
    for n in range(LIMIT):
        await status_of(api, flooder, f"ccpk_flood{n}")
    flood = [status_of(api, flooder, f"ccpk_more{n}") for n in range(40)]
    valid = ingest(api, flooder, platform["secret"], app_id, "during-the-flood")
    *flooded, ingested = await asyncio.gather(*flood, valid)
    assert set(flooded) == {429}
    assert ingested == 202


# Console sessions after sign-out (the console's HTTP tests are in test_console_http.py)


# One step on an EndedSessions that keeps 2 ids, at a time in hours, and what it answers:
#   "end SID" -> None;  "ended SID WRITTEN_AT_HOUR" -> True or False
ENDED_SESSIONS = {
    "a signed-out session, and no other": [
        ("at 0", None), ("end s1", None), ("ended s1 0", True), ("ended s2 0", False),
    ],
    "kept as long as a copy of its cookie could be accepted": [
        ("at 0", None), ("end s1", None), ("at 11", None), ("end s2", None),
        ("ended s1 0", True), ("at 12", None), ("end s3", None), ("ended s1 0", False),
        ("ended s2 11", True), ("ended s3 12", True),
    ],
    "a full list refuses too many, never too few": [
        ("at 1", None), ("end s1", None), ("at 2", None), ("end s2", None),
        ("at 3", None), ("end s3", None), ("ended s1 1", True), ("ended s2 2", True),
        ("ended s4 1", True), ("ended s4 2", False),
    ],
}  # fmt: skip


@pytest.mark.parametrize("steps", ENDED_SESSIONS.values(), ids=list(ENDED_SESSIONS))
def test_ended_sessions(steps: list[tuple[str, object]]) -> None:
    hour = 0.0
    ended = EndedSessions(now=lambda: hour * 3600, size=2)
    for step, expected in steps:
        match step.split():
            case ["at", when]:
                hour, answer = float(when), None
            case ["end", sid]:
                ended.end(sid)
                answer = None
            case ["ended", sid, written]:
                answer = ended.ended(sid, float(written) * 3600)
        assert answer == expected, step
    assert MAX_AGE == 12 * 3600  # the hours above


# Files on disk


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The common umask, under which files are made readable by everyone."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask_022")
async def test_a_fresh_data_dir_and_its_database_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    service = make_service(data, f"sqlite:///{data / 'ccpush.db'}")
    await service.start(dispatch=False)
    try:
        async with Api(service).client() as admin:
            app = await ok(await admin.post("/v1/apps", json={"name": "line"}), 201)
            records = f"/v1/apps/{app['id']}/call-records"
            await ok(await admin.post(records, json=minimal_record("s1")), 202)
        assert mode_of(data) == 0o700
        for name in ("ccpush.db", "ccpush.db-wal", "ccpush.db-shm"):
            assert mode_of(data / name) == 0o600, name
    finally:
        await service.stop()
    secrets_dir = tmp_path / "secrets"
    resolve_admin_token(make_settings(secrets_dir, "sqlite:///unused.db", admin_token=None))
    assert (mode_of(secrets_dir), mode_of(secrets_dir / "admin-token")) == (0o700, 0o600)


@pytest.mark.usefixtures("umask_022")
async def test_an_earlier_runs_open_files_are_made_private_and_its_dir_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    earlier = sqlite3.connect(data / "ccpush.db")  # still open: its -wal and -shm stay
    try:
        earlier.execute("PRAGMA journal_mode=WAL")
        earlier.execute("CREATE TABLE left_over (x)")
        assert mode_of(data / "ccpush.db-wal") == 0o644
        service = make_service(data, f"sqlite:///{data / 'ccpush.db'}")
        with caplog.at_level(logging.WARNING, logger="ccpush.service"):
            await service.start(dispatch=False)
        await service.stop()
        for name in ("ccpush.db", "ccpush.db-wal", "ccpush.db-shm"):
            assert mode_of(data / name) == 0o600, name
    finally:
        earlier.close()
    assert f"chmod 700 {data}" in caplog.text
    assert "mode 755" in caplog.text


# The access log


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        ("/v1/apps", "/v1/apps"),
        ("/v1/apps?access_token=ccpk_x", "/v1/apps?access_token=[redacted]"),
        ("/v1/apps?state=failed&since=", "/v1/apps?state=[redacted]&since=[redacted]"),
        ("/v1/apps?key=a=b", "/v1/apps?key=[redacted]"),
        ("/v1/apps?ccpk_x", "/v1/apps?[redacted]"),
        ("/v1/apps?a=1&ccpk_x&b=2", "/v1/apps?a=[redacted]&[redacted]&b=[redacted]"),
        ("127.0.0.1:50000", "127.0.0.1:50000"),
    ],
)
def test_query_values_are_redacted(target: str, logged: str) -> None:
    assert redact_query(target) == logged


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """Whatever ``configure_logging`` changes, put back after the test."""
    names = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "httpx")
    loggers = [logging.getLogger(name) for name in names]
    saved = [(log, log.handlers[:], log.filters[:], log.level, log.propagate) for log in loggers]
    yield
    for log, handlers, filters, level, propagate in saved:
        log.handlers[:], log.filters[:] = handlers, filters
        log.setLevel(level)
        log.propagate = propagate


class ServedLikeServe(ServerThread):
    """Served as ``ccpush serve`` serves: uvicorn's logs go through ccpush's handler."""

    async def _main(self) -> None:
        async with self.app_factory() as app:
            config = uvicorn.Config(
                app, host="127.0.0.1", port=0, log_level="info", log_config=None
            )
            self.server = _Server(config, self.ready)
            await self.server.serve()


@pytest.mark.usefixtures("logging_restored")
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_query_values_do_not_reach_the_access_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], log_format: LogFormat
) -> None:
    configure_logging("INFO", log_format)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # this test's client: not ccpush
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'ccpush.db'}")
    with ServedLikeServe(served_api(settings, dispatch=False)) as server:
        target = "/v1/apps?access_token=ccpk_secret&limit=5&ccpk_bare"
        answer = httpx.get(server.url + target)
        assert answer.status_code == 401
    logged = capsys.readouterr().err
    assert 'GET /v1/apps?access_token=[redacted]&limit=[redacted]&[redacted] HTTP/1.1" 401' in (
        logged.replace('\\"', '"')
    )
    assert "ccpk_secret" not in logged
    assert "ccpk_bare" not in logged
