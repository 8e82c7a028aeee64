"""The audit log, on every backend: each change through the API, the console, upkeep and
the CLI kept once, with its actor and app, in the change's own transaction; filters and
pages; each account sees only its own; and no secret in any row."""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccpush.audit import (
    AUTOMATIC,
    REDACTED,
    AuditAction,
    AuditEntry,
    AuditFilter,
    app_changes,
    redact,
)
from ccpush.clock import ManualClock
from ccpush.errors import StoreRefusedValue
from ccpush.models import App
from ccpush.service import Service
from ccpush.store.postgres.store import PostgresStore
from ccpush.store.sqlite.store import SqliteStore
from ccpush.upkeep import Upkeep, UpkeepSettings
from tests.api_client import ADMIN, Api, ok
from tests.conftest import minimal_record
from tests.helpers import make_service
from tests.receiver import Receiver, always
from tests.test_operator_cli import Cli, row_of, served_cli

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)

# The rules, without a store


@pytest.mark.parametrize(
    ("values", "kept"),
    [
        ({"name": "Support"}, {"name": "Support"}),
        ({"secret": "whsec_x"}, {"secret": REDACTED}),
        ({"signingSecret": "whsec_x"}, {"signingSecret": REDACTED}),
        ({"pushAuth": {"type": "basic", "username": "u", "password": "p"}},
         {"pushAuth": {"type": "basic", "username": "u", "password": REDACTED}}),
        ({"pushAuth": {"type": "bearer", "token": "t"}},
         {"pushAuth": {"type": "bearer", "token": REDACTED}}),
        ({"pushHeaders": {"X-Tenant": "42", "X-Api-Key": "k"}},
         {"pushHeaders": ["X-Api-Key", "X-Tenant"]}),
        ({"headers": [("X-B", "1"), ("X-A", "2")]}, {"headers": ["X-A", "X-B"]}),
        ({"clientCertificate": {"certPem": "C", "keyPem": "K"}},
         {"clientCertificate": {"certPem": "C", "keyPem": REDACTED}}),
        ({"endpoint": "sealed-text"}, {"endpoint": REDACTED}),
        ({"credentials": "x"}, {"credentials": REDACTED}),
        ({"at": T0, "n": 3, "none": None}, {"at": T0.isoformat(), "n": 3, "none": None}),
    ],
)  # fmt: skip
def test_redaction_keeps_names_and_drops_secret_values(
    values: dict[str, Any], kept: dict[str, Any]
) -> None:
    assert redact(values) == kept
    assert redact(redact(values)) == kept  # redacting again changes nothing


def test_an_entry_is_redacted_whoever_makes_it() -> None:
    entry = AuditEntry(at=T0, actor="admin", after={"token": "ccpk_secret"})
    assert entry.after == {"token": REDACTED}


def _app(**changes: Any) -> App:
    values: dict[str, Any] = {
        "id": "app_1",
        "account_id": "acc_1",
        "name": "Support",
        "push_url": None,
        "paused": False,
        "signing": True,
        "created_at": T0,
        "updated_at": T0,
    }
    return App(**{**values, **changes})


@pytest.mark.parametrize(
    ("before", "after", "actor", "actions"),
    [
        ({}, {"name": "Sales"}, "admin", [AuditAction.APP_RENAMED]),
        ({}, {"push_url": "https://a.example/"}, "admin", [AuditAction.ADDRESS_SET]),
        ({"push_url": "https://a.example/"}, {"push_url": "https://b.example/"}, "admin",
         [AuditAction.ADDRESS_CHANGED]),
        ({"push_url": "https://a.example/"}, {}, "admin", [AuditAction.ADDRESS_CLEARED]),
        ({}, {"paused": True}, "key_1", [AuditAction.APP_PAUSED]),
        ({}, {"paused": True}, AUTOMATIC, [AuditAction.APP_AUTO_PAUSED]),
        ({"paused": True}, {}, "admin", [AuditAction.APP_RESUMED]),
        ({}, {"signing": False}, "admin", [AuditAction.SIGNING_OFF]),
        ({"signing": False}, {}, "admin", [AuditAction.SIGNING_ON]),
        ({}, {"name": "Sales", "signing": False}, "admin",
         [AuditAction.APP_RENAMED, AuditAction.SIGNING_OFF]),
        ({}, {"updated_at": T0 + timedelta(1), "failing_since": T0}, "admin", []),
    ],
)  # fmt: skip
def test_an_app_change_is_one_entry_per_thing_changed(
    before: dict[str, Any], after: dict[str, Any], actor: str, actions: list[AuditAction]
) -> None:
    entry = AuditEntry(at=T0, actor=actor)
    entries = app_changes(entry, _app(**before), _app(**after))
    assert [e.action for e in entries] == actions
    assert all(e.app_id == "app_1" and e.account_id == "acc_1" for e in entries)


# Through the API, on every backend


@pytest.fixture
async def service(tmp_path: Path, db_url: str, clock: ManualClock) -> AsyncIterator[Service]:
    service = make_service(tmp_path, db_url, clock, auth_failure_limit=3)
    await service.start(dispatch=False)
    yield service
    await service.stop()


@dataclass
class World:
    api: Api
    service: Service
    account: str
    other: str
    key: dict[str, Any]
    other_key: dict[str, Any]
    platform: dict[str, Any]


@pytest.fixture
async def world(service: Service) -> World:
    api = Api(service)
    async with api.client() as admin:
        account = (await ok(await admin.post("/v1/accounts", json={"name": "Acme"}), 201))["id"]
        other = (await ok(await admin.post("/v1/accounts", json={"name": "Globex"}), 201))["id"]
        key = await ok(
            await admin.post(f"/v1/accounts/{account}/keys", json={"name": "Acme ops"}), 201
        )
        other_key = await ok(
            await admin.post(f"/v1/accounts/{other}/keys", json={"name": "Globex ops"}), 201
        )
        platform = await ok(await admin.post("/v1/platform-keys", json={"name": "pbx"}), 201)
    return World(api, service, account, other, key, other_key, platform)


async def entries(w: World, token: str = ADMIN, **query: Any) -> list[dict[str, Any]]:
    """Every entry of the account (every entry, with ``account=None``), all pages."""
    account = query.pop("account", w.account)
    url = f"/v1/accounts/{account}/audit" if account else "/v1/audit"
    found: list[dict[str, Any]] = []
    async with w.api.client(token) as client:
        while True:
            page = await ok(await client.get(url, params=query))
            found += page["items"]
            if page["nextCursor"] is None:
                return found
            query["cursor"] = page["nextCursor"]


async def raw_rows(service: Service) -> str:
    """Every row of the audit log as the database holds it, as one text."""
    store = service.store
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as db:
            rows = db.execute("SELECT * FROM audit_log").fetchall()
    else:
        assert isinstance(store, PostgresStore)
        rows = [tuple(row) for row in await store.pool.fetch("SELECT * FROM audit_log")]
    assert rows
    return "\n".join(repr(row) for row in rows)


async def test_every_api_change_is_kept_once_with_its_actor_and_no_secret(
    world: World, receiver: Receiver, clock: ManualClock
) -> None:
    w, key = world, world.key
    async with w.api.client(key["secret"]) as client:
        app = (await ok(await client.post("/v1/apps", json={"name": "Support"}), 201))["id"]
        base = f"/v1/apps/{app}"
        await ok(await client.patch(base, json={"name": "Support line"}))
        await ok(await client.patch(base, json={"pushUrl": receiver.url}))
        await ok(await client.patch(base, json={"pushUrl": receiver.url + "/v2"}))
        await ok(await client.post(f"{base}/pause"))
        await ok(await client.post(f"{base}/resume"))
        await ok(await client.patch(base, json={"signing": False}))
        await ok(await client.patch(base, json={"signing": True}))
        old_secret = (await ok(await client.get(f"{base}/signing-secret")))["secret"]
        await ok(await client.post(f"{base}/signing-secret/rotate"))
        new_secret = (await ok(await client.get(f"{base}/signing-secret")))["secret"]
        second = await ok(
            await client.post(f"/v1/accounts/{w.account}/keys", json={"name": "CRM"}), 201
        )
        await ok(await client.delete(f"/v1/accounts/{w.account}/keys/{second['id']}"))
    async with w.api.client(w.platform["secret"]) as pbx:
        await ok(await pbx.post(f"{base}/call-records", json=minimal_record("c1")), 202)
    async with w.api.client(key["secret"]) as client:
        await ok(await client.post(f"{base}/call-records/c1/resend"), 202)
        replay = {"from": "2023-01-01 00:00:00", "to": "2024-01-01 00:00:00"}
        await ok(await client.post(f"{base}/replays", json=replay), 202)
        await ok(await client.patch(base, json={"pushUrl": None}))
        await ok(await client.delete(base), 204)
    async with w.api.client("ccpk_" + "x" * 43) as stranger:
        assert (await stranger.get("/v1/apps")).status_code == 401

    found = await entries(w, key["secret"])
    actions = Counter(entry["action"] for entry in found)
    assert actions == Counter(
        {
            "account.created": 1, "key.created": 2, "app.created": 1, "app.renamed": 1,
            "address.set": 1, "address.changed": 1, "address.cleared": 1, "app.paused": 1,
            "app.resumed": 1, "signing.off": 1, "signing.on": 1, "signing_secret.rotated": 1,
            "key.revoked": 1, "record.resent": 1, "replay.requested": 1, "app.deleted": 1,
        }
    )  # fmt: skip
    by_action = {entry["action"]: entry for entry in reversed(found)}  # the newest of each
    assert by_action["account.created"]["actor"] == "admin"
    assert by_action["key.created"]["actor"] == key["id"]  # the newest: made by the key
    for entry in found:
        if entry["action"] not in ("account.created", "key.created"):
            assert (entry["actor"], entry["actorName"]) == (key["id"], "Acme ops"), entry
        assert entry["source"] == "127.0.0.1"
        assert entry["accountId"] == w.account
        if entry["action"].startswith(("app.", "address.", "signing", "record.", "replay.")):
            assert entry["appId"] == app, entry
    assert by_action["address.changed"]["before"] == {"pushUrl": receiver.url}
    assert by_action["address.changed"]["after"] == {"pushUrl": receiver.url + "/v2"}
    assert by_action["record.resent"]["target"] == "c1"
    assert by_action["key.revoked"]["target"] == second["id"]

    failed = await entries(w, account=None, action="sign_in.failed")
    assert [(e["actor"], e["accountId"], e["after"]) for e in failed] == [
        ("unknown", None, {"via": "api"})
    ]
    raw = await raw_rows(w.service)
    for secret in (old_secret, new_secret, key["secret"], second["secret"], w.platform["secret"],
                   w.other_key["secret"], ADMIN, "x" * 43):  # fmt: skip
        assert secret not in raw


async def test_failed_sign_ins_past_the_limit_are_not_written(world: World) -> None:
    async with world.api.client("ccpk_" + "y" * 43) as stranger:
        statuses = [(await stranger.get("/v1/apps")).status_code for _ in range(6)]
    assert statuses == [401, 401, 401, 429, 429, 429]
    assert len(await entries(world, account=None, action="sign_in.failed")) == 3


async def test_a_refused_change_keeps_no_entry(world: World, receiver: Receiver) -> None:
    async with world.api.client(world.other_key["secret"]) as other:
        app = (await ok(await other.post("/v1/apps", json={"name": "Theirs"}), 201))["id"]
    before = await entries(world, account=None)
    async with world.api.client(world.key["secret"]) as client:
        stolen = {"pushUrl": receiver.url}
        assert (await client.patch(f"/v1/apps/{app}", json=stolen)).status_code == 404
        assert (await client.post(f"/v1/apps/{app}/pause")).status_code == 404
        assert (await client.delete(f"/v1/apps/{app}")).status_code == 404
        bad = {"name": "Mine", "pushUrl": "ftp://nowhere"}
        assert (await client.post("/v1/apps", json=bad)).status_code == 422
    assert await entries(world, account=None) == before


async def test_an_entry_the_store_refuses_undoes_the_change(
    service: Service, clock: ManualClock
) -> None:
    app = await service.store.create_app(name="Support", push_url=None, now=clock.now())
    unstorable = AuditEntry(at=clock.now(), actor="admin", source="\ud800")  # a lone surrogate
    with pytest.raises(StoreRefusedValue):
        await service.store.update_app(app.id, now=clock.now(), name="Sales", audit=unstorable)
    with pytest.raises(StoreRefusedValue):
        await service.store.delete_app(app.id, audit=unstorable)
    assert (await service.store.get_app(app.id)).name == "Support"
    assert await service.store.list_audit(AuditFilter()) == []


async def test_another_accounts_log_is_not_found(world: World) -> None:
    async with world.api.client(world.other_key["secret"]) as other:
        response = await other.get(f"/v1/accounts/{world.account}/audit")
        assert response.status_code == 404
        assert (await other.get("/v1/audit")).status_code == 403
        await ok(await other.post("/v1/apps", json={"name": "Theirs"}), 201)
    mine = await entries(world, world.key["secret"])
    assert {entry["accountId"] for entry in mine} == {world.account}
    assert "app.created" not in {entry["action"] for entry in mine}
    theirs = await entries(world, world.other_key["secret"], account=world.other)
    assert [entry["action"] for entry in theirs][:1] == ["app.created"]


async def test_filters_and_pages(world: World, clock: ManualClock) -> None:
    async with world.api.client(world.key["secret"]) as client:
        apps = []
        for number in range(3):
            clock.advance(timedelta(hours=1))
            body = {"name": f"App {number}"}
            apps.append((await ok(await client.post("/v1/apps", json=body), 201))["id"])
            await ok(await client.patch(f"/v1/apps/{apps[-1]}", json={"name": f"App {number}!"}))
        everything = await entries(world)
        paged = await entries(world, limit=2)
        assert [e["id"] for e in paged] == [e["id"] for e in everything]
        ids = [e["id"] for e in everything]
        assert ids == sorted(ids, reverse=True)  # newest first
        of_one = await entries(world, appId=apps[1])
        assert [e["action"] for e in of_one] == ["app.renamed", "app.created"]
        renamed = await entries(world, action="app.renamed,app.created", limit=1)
        assert len(renamed) == 6
        window = {"from": (T0 + timedelta(hours=1.5)).isoformat(),
                  "to": (T0 + timedelta(hours=2.5)).isoformat()}  # fmt: skip
        assert {e["appId"] for e in await entries(world, **window)} == {apps[1]}
        refused = await client.get(f"/v1/accounts/{world.account}/audit?action=app.eaten")
        assert refused.status_code == 422
        assert refused.json()["error"]["problems"][0]["field"] == "action"


async def test_upkeep_auto_pauses_as_ccpush_and_retention_purges_old_entries(
    world: World, service: Service, clock: ManualClock, receiver: Receiver
) -> None:
    receiver.responder = always(503)
    async with world.api.client(world.key["secret"]) as client:
        body = {"name": "Down", "pushUrl": receiver.url}
        app = (await ok(await client.post("/v1/apps", json=body), 201))["id"]
        await ok(await client.post(f"/v1/apps/{app}/call-records", json=minimal_record("d1")), 202)
    await service.dispatcher.run_until_idle()
    clock.advance(timedelta(days=3, minutes=1))
    upkeep = Upkeep(service.store, clock, UpkeepSettings(retention=timedelta(days=30)))
    assert (await upkeep.run_once()).paused == [app]
    paused = await entries(world, action="app.auto_paused")
    assert [(e["actor"], e["appId"], e["source"]) for e in paused] == [("ccpush", app, None)]
    assert len(await entries(world, action="app.paused")) == 0

    kept = len(await entries(world, account=None))
    clock.advance(timedelta(days=30))
    async with world.api.client(world.key["secret"]) as client:
        await ok(await client.patch(f"/v1/apps/{app}", json={"name": "Still down"}))
    report = await upkeep.run_once()
    assert report.audit_entries == kept - 1  # the pause, 30 days ago to the minute, is kept
    left = [e["action"] for e in await entries(world, account=None)]
    assert left == ["app.renamed", "app.auto_paused"]


# Through the console


async def console_sign_in(client: httpx.AsyncClient, token: str) -> tuple[str, int]:
    page = await client.get("/console/sign-in")
    csrf = CSRF.search(page.text)
    assert csrf is not None
    response = await client.post("/console/sign-in", data={"csrf": csrf.group(1), "key": token})
    after = await client.get("/console/apps")
    found = CSRF.search(after.text)
    return (found.group(1) if found else csrf.group(1)), response.status_code


def log_table(page: str) -> str:
    """The entries' table of an audit page (the filters name every action)."""
    start = page.index('data-testid="audit-log"')
    return page[start : page.index("</table>", start)]


async def test_console_changes_and_sign_ins_are_kept_and_shown(
    world: World, receiver: Receiver
) -> None:
    transport = httpx.ASGITransport(world.api.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ccpush.test") as browser:
        _, status = await console_sign_in(browser, "ccpk_" + "z" * 43)
        assert status == 401
        csrf, status = await console_sign_in(browser, world.key["secret"])
        assert status == 303
        created = await browser.post(
            "/console/apps", data={"csrf": csrf, "name": "Desk", "push_url": receiver.url}
        )
        app = created.headers["location"].split("/apps/")[1].split("?")[0]
        for action in ("pause", "resume", "signing-secret/rotate", "address/clear"):
            response = await browser.post(f"/console/apps/{app}/{action}", data={"csrf": csrf})
            assert response.status_code == 303, response.text
        page = await browser.get(f"/console/accounts/{world.account}/audit")
        assert page.status_code == 200
        for shown in ("app.created", "app.paused", "app.resumed", "signing_secret.rotated",
                      "address.cleared", "sign_in.succeeded", "Acme ops"):  # fmt: skip
            assert shown in log_table(page.text)
        filtered = await browser.get(
            f"/console/accounts/{world.account}/audit", params={"action": "app.paused"}
        )
        assert "app.paused" in log_table(filtered.text)
        assert "app.resumed" not in log_table(filtered.text)
        other = await browser.get(f"/console/accounts/{world.other}/audit")
        assert other.status_code == 404

    found = await entries(world)
    by_action = Counter(entry["action"] for entry in found)
    for action in ("app.created", "app.paused", "app.resumed", "signing_secret.rotated",
                   "address.cleared", "sign_in.succeeded"):  # fmt: skip
        assert by_action[action] == 1, action
    for entry in found:
        if entry["action"] != "account.created" and entry["action"] != "key.created":
            assert entry["actor"] == world.key["id"], entry
    failed = await entries(world, account=None, action="sign_in.failed")
    assert [e["after"] for e in failed] == [{"via": "console"}]
    assert world.key["secret"] not in await raw_rows(world.service)


# Through the command line


@pytest.fixture
def cli(tmp_path: Path, db_url: str) -> Iterator[Cli]:
    yield from served_cli(tmp_path, db_url)


@pytest.mark.slow
async def test_command_line_changes_are_kept_and_listed(cli: Cli) -> None:
    account = (await cli("accounts", "create", "Acme", "--json")).json["id"]
    create = ("apps", "create", "Support", "--account", account, "--json")
    app = (await cli(*create)).json["id"]
    await cli("apps", "pause", app, "--json")
    await cli("apps", "rotate-secret", app, "--json")
    found = (await cli("audit", "--account", account, "--json")).json["items"]
    assert [(e["action"], e["actor"], e["appId"]) for e in found] == [
        ("signing_secret.rotated", "admin", app),
        ("app.paused", "admin", app),
        ("app.created", "admin", app),
        ("account.created", "admin", None),
    ]
    lines = (await cli("audit", "--account", account, "--action", "app.paused")).lines
    assert lines[0].split() == ["AT", "ACTION", "APP", "ACTOR", "FROM", "CHANGE"]
    assert row_of(lines, found[1]["at"])[1:] == [
        "app.paused",
        app,
        "admin",
        "127.0.0.1",
        "paused: false → true",
    ]
    everything = (await cli("audit", "--json")).json["items"]
    assert len(everything) == 4
    refused = await cli("audit", "--action", "app.eaten")
    assert refused.code == 1
    assert "action" in refused.err


async def test_headers_credentials_and_pace_are_kept_by_name_only(
    world: World, receiver: Receiver
) -> None:
    header_value, password, token = "hdr-9b1e44", "pw-5c0d2a", "tok-77ae01"
    async with world.api.client(world.key["secret"]) as client:
        body = {
            "name": "CRM",
            "pushUrl": receiver.url,
            "pushHeaders": {"X-Api-Key": header_value},
            "pushAuth": {"type": "basic", "username": "alice", "password": password},
        }
        app = (await ok(await client.post("/v1/apps", json=body), 201))["id"]
        patch = {"pushAuth": {"type": "bearer", "token": token}, "rateLimit": 5}
        await ok(await client.patch(f"/v1/apps/{app}", json=patch))
        same = {"pushHeaders": {"X-Api-Key": header_value}}  # sealed anew: no change
        await ok(await client.patch(f"/v1/apps/{app}", json=same))
        await ok(await client.patch(f"/v1/apps/{app}", json={"pushHeaders": None}))
    found = await entries(world, appId=app)
    assert [(e["action"], e["before"], e["after"]) for e in found] == [
        ("app.headers_changed", {"headerNames": ["X-Api-Key"]}, {"headerNames": []}),
        ("app.settings_changed", {"rateLimit": None}, {"rateLimit": 5.0}),
        ("app.credentials_changed",
         {"auth": "basic", "username": "alice", "certificate": None},
         {"auth": "bearer", "username": None, "certificate": None}),
        ("app.created", None, found[-1]["after"]),
    ]  # fmt: skip
    created = found[-1]["after"]  # made with its settings, in one transaction
    assert (created["headerNames"], created["auth"], created["username"]) == (
        ["X-Api-Key"], "basic", "alice",
    )  # fmt: skip
    assert "endpoint" not in created
    raw = await raw_rows(world.service)
    for secret in (header_value, password, token):
        assert secret not in raw


async def test_the_console_log_is_paged(world: World, clock: ManualClock) -> None:
    entry = AuditEntry(at=clock.now(), actor="admin", account_id=world.account)
    made = [entry.about(AuditAction.APP_RENAMED, after={"name": f"name {n}"}) for n in range(60)]
    await world.service.store.record_audit(made)
    transport = httpx.ASGITransport(world.api.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ccpush.test") as browser:
        await console_sign_in(browser, world.key["secret"])
        first = await browser.get(f"/console/accounts/{world.account}/audit")
        older = re.search(r'href="([^"]+)">Older entries', first.text)
        assert older is not None
        second = await browser.get(older.group(1).replace("&amp;", "&"))
    shown = [re.findall(r"\"name (\d+)\"", log_table(page.text)) for page in (first, second)]
    # 50 a page, newest first: the sign-in, then the renames from the 60th down
    assert shown[0] == [str(n) for n in range(59, 10, -1)]
    assert shown[1][:11] == [str(n) for n in range(10, -1, -1)]
