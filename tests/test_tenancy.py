"""Who may do what: every endpoint, tried with another account's key, a revoked key and an
ingest-only key. Another account's objects answer 404 and stay as they were."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccpush.service import Service
from tests.api_client import Api, ok
from tests.conftest import minimal_record
from tests.receiver import Receiver


@dataclass
class World:
    api: Api
    a: str
    b: str
    key_a: str
    key_a_id: str
    key_b: str
    ingest_a: str
    platform: str
    app_a: str
    app_b: str
    replay_a: str


async def make_key(admin: httpx.AsyncClient, account: str, scope: str = "manage") -> dict[str, Any]:
    body = {"name": f"{scope} key", "scope": scope}
    key: dict[str, Any] = await ok(await admin.post(f"/v1/accounts/{account}/keys", json=body), 201)
    return key


@pytest.fixture
async def world(service: Service, receiver: Receiver) -> World:
    api = Api(service)
    async with api.client() as admin:
        a = (await ok(await admin.post("/v1/accounts", json={"name": "Acme"}), 201))["id"]
        b = (await ok(await admin.post("/v1/accounts", json={"name": "Globex"}), 201))["id"]
        key_a, key_b = await make_key(admin, a), await make_key(admin, b)
        ingest_a = await make_key(admin, a, "ingest")
        platform = await ok(await admin.post("/v1/platform-keys", json={"name": "pbx"}), 201)
    async with api.client(key_a["secret"]) as client:
        app_a = (
            await ok(
                await client.post("/v1/apps", json={"name": "A", "pushUrl": receiver.url}), 201
            )
        )["id"]
        await ok(
            await client.post(f"/v1/apps/{app_a}/call-records", json=minimal_record("a1")), 202
        )
        replay = {"from": "2023-01-01 00:00:00", "to": "2024-01-01 00:00:00"}
        replay_a = (await ok(await client.post(f"/v1/apps/{app_a}/replays", json=replay), 202))[
            "id"
        ]
    async with api.client(key_b["secret"]) as client:
        app_b = (await ok(await client.post("/v1/apps", json={"name": "B"}), 201))["id"]
    return World(
        api, a, b, key_a["secret"], key_a["id"], key_b["secret"], ingest_a["secret"],
        platform["secret"], app_a, app_b, replay_a,
    )  # fmt: skip


def account_a_routes(w: World) -> list[tuple[str, str, Any]]:
    """Every route on account A's objects (method, path, body)."""
    app = f"/v1/apps/{w.app_a}"
    return [
        ("GET", f"/v1/accounts/{w.a}", None),
        ("GET", f"/v1/accounts/{w.a}/keys", None),
        ("POST", f"/v1/accounts/{w.a}/keys", {"name": "sneaky"}),
        ("DELETE", f"/v1/accounts/{w.a}/keys/{w.key_a_id}", None),
        ("GET", f"/v1/accounts/{w.a}/audit", None),
        ("GET", f"/v1/accounts/{w.a}/notifications", None),
        ("PUT", f"/v1/accounts/{w.a}/notifications", {"email": "thief@example.com"}),
        ("POST", f"/v1/accounts/{w.a}/notifications/secret/rotate", None),
        ("GET", f"/v1/accounts/{w.a}/notifications/deliveries", None),
        ("POST", f"/v1/accounts/{w.a}/portal-links", {"expiresIn": 600}),
        ("GET", app, None),
        ("PATCH", app, {"pushUrl": "http://127.0.0.1:1/stolen"}),
        ("DELETE", app, None),
        ("POST", f"{app}/pause", None),
        ("POST", f"{app}/resume", None),
        ("POST", f"{app}/test-push", None),
        ("GET", f"{app}/signing-secret", None),
        ("POST", f"{app}/signing-secret/rotate", None),
        ("POST", f"{app}/call-records", minimal_record("planted")),
        ("GET", f"{app}/call-records", None),
        ("GET", f"{app}/call-records/a1/deliveries", None),
        ("POST", f"{app}/call-records/a1/resend", None),
        ("GET", f"{app}/deliveries", None),
        ("GET", f"{app}/lag", None),
        ("POST", f"{app}/replays", {"failedSince": "2023-01-01 00:00:00"}),
        ("GET", f"{app}/replays/{w.replay_a}", None),
        ("POST", f"/v1/sources/freeswitch?appId={w.app_a}", FREESWITCH_CDR),
    ]


FREESWITCH_CDR = json.loads(
    (
        Path(__file__).parent / "data" / "freeswitch" / "onex_outbound_originate_2025.json"
    ).read_text()
)

OPERATOR_ROUTES = [
    ("POST", "/v1/accounts", {"name": "x"}),
    ("GET", "/v1/accounts", None),
    ("POST", "/v1/platform-keys", {"name": "x"}),
    ("GET", "/v1/platform-keys", None),
    ("DELETE", "/v1/platform-keys/key_anything", None),
    ("GET", "/v1/audit", None),
]
OWN_ROUTES = [("GET", "/v1/apps", None), ("POST", "/v1/apps", {"name": "mine"})]


async def snapshot(w: World) -> Any:
    async with w.api.client() as admin:
        app = f"/v1/apps/{w.app_a}"
        return [
            (await admin.get(url)).json()
            for url in (
                app,
                f"{app}/deliveries",
                f"{app}/call-records",
                f"/v1/accounts/{w.a}/keys",
                f"{app}/replays/{w.replay_a}",
                f"{app}/signing-secret",
            )
        ]


def test_the_matrix_covers_every_route(world: World) -> None:
    spec = world.api.app.openapi()
    declared = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    covered = account_a_routes(world) + OPERATOR_ROUTES + OWN_ROUTES
    normal = {(method, _template(path, world)) for method, path, _ in covered}
    assert declared == normal


def _template(path: str, w: World) -> str:
    path = path.partition("?")[0]
    for value, name in [
        (w.app_a, "{app_id}"), (w.a, "{account_id}"), (w.replay_a, "{replay_id}"),
        (w.key_a_id, "{key_id}"), ("key_anything", "{key_id}"), ("/a1/", "/{call_session_id}/"),
    ]:  # fmt: skip
        path = path.replace(value, name)
    return path


async def test_another_accounts_key_gets_404_and_changes_nothing(world: World) -> None:
    before = await snapshot(world)
    async with world.api.client(world.key_b) as b:
        for method, path, body in account_a_routes(world):
            response = await b.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"]["code"] == "not_found"
        assert [app["id"] for app in (await ok(await b.get("/v1/apps")))["items"]] == [world.app_b]
        stolen = await b.post("/v1/apps", json={"name": "x", "accountId": world.a})
        assert stolen.status_code == 404
    assert await snapshot(world) == before


async def test_a_revoked_key_gets_401(world: World) -> None:
    async with world.api.client() as admin:
        await ok(await admin.delete(f"/v1/accounts/{world.a}/keys/{world.key_a_id}"))
    async with world.api.client(world.key_a) as a:
        for method, path, body in account_a_routes(world) + OWN_ROUTES + OPERATOR_ROUTES:
            response = await a.request(method, path, json=body)
            assert response.status_code == 401, (method, path)


async def test_an_ingest_key_may_only_send_records(world: World) -> None:
    before = await snapshot(world)
    async with world.api.client(world.ingest_a) as ingest:
        for method, path, body in account_a_routes(world) + OWN_ROUTES + OPERATOR_ROUTES:
            sends_records = path.endswith("/call-records") or path.startswith("/v1/sources/")
            if sends_records and method == "POST":
                continue
            response = await ingest.request(method, path, json=body)
            assert response.status_code == 403, (method, path)
        assert await snapshot(world) == before
        url = f"/v1/apps/{world.app_a}/call-records"
        await ok(await ingest.post(url, json=minimal_record("from-pbx")), 202)
        other = await ingest.post(f"/v1/apps/{world.app_b}/call-records", json=minimal_record("x"))
        assert other.status_code == 404


async def test_a_platform_key_ingests_into_any_app_and_nothing_else(world: World) -> None:
    async with world.api.client(world.platform) as pbx:
        for app in (world.app_a, world.app_b):
            await ok(await pbx.post(f"/v1/apps/{app}/call-records", json=minimal_record("p")), 202)
        assert (await pbx.get(f"/v1/apps/{world.app_a}")).status_code == 403


async def test_an_account_key_manages_its_own_keys(world: World) -> None:
    async with world.api.client(world.key_a) as a:
        made = await ok(await a.post(f"/v1/accounts/{world.a}/keys", json={"name": "ci"}), 201)
        assert made["secret"].startswith(made["prefix"])
        listed = (await ok(await a.get(f"/v1/accounts/{world.a}/keys")))["items"]
        assert all("secret" not in key for key in listed)
        assert made["id"] in {key["id"] for key in listed}
        revoked = await ok(await a.delete(f"/v1/accounts/{world.a}/keys/{made['id']}"))
        assert revoked["revokedAt"] is not None
    async with world.api.client(made["secret"]) as gone:
        assert (await gone.get("/v1/apps")).status_code == 401


async def test_keys_are_stored_only_as_hashes(world: World, service: Service) -> None:
    from ccpush.api.auth import hash_secret

    key = await service.store.key_by_hash(hash_secret(world.key_a))
    assert key is not None
    assert world.key_a not in repr(key)
    assert await service.store.key_by_hash(world.key_a) is None
