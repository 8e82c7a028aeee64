"""Every list route answers one shape, ``{"items": [...], "nextCursor": ...}``, and takes one
page size (``limit``: 100 by default, at most 1,000) and the ``cursor`` it gave."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from ccpush.api.params import MAX_PAGE_SIZE, PAGE_SIZE, page_after
from ccpush.models import Account
from ccpush.service import Service
from tests.api_client import Api, ok
from tests.conftest import minimal_record

T0 = datetime(2026, 3, 1, 8, tzinfo=UTC)


def account(name: str, at: datetime) -> Account:
    return Account(id=f"acc_{name}", name=name, created_at=at)


def pages(items: list[Account], limit: int) -> list[list[str]]:
    """The names on each page, following the cursors."""
    found, cursor = [], None
    while True:
        page, cursor = page_after(items, cursor, limit)
        found.append([item.name for item in page])
        if cursor is None:
            return found


@pytest.mark.parametrize(
    ("names", "limit", "expected"),
    [
        ("", 2, [[]]),
        ("ab", 2, [["a", "b"]]),
        ("abc", 2, [["a", "b"], ["c"]]),
        ("abcde", 2, [["a", "b"], ["c", "d"], ["e"]]),
        ("abcd", 1, [["a"], ["b"], ["c"], ["d"]]),
    ],
)
def test_whole_lists_are_paged_in_order(names: str, limit: int, expected: list[list[str]]) -> None:
    items = [account(name, T0 + timedelta(microseconds=i)) for i, name in enumerate(names)]
    assert pages(items, limit) == expected


def test_items_made_at_the_same_microsecond_are_paged_by_id() -> None:
    items = sorted((account(name, T0) for name in "dcba"), key=lambda a: a.id)
    assert pages(items, 3) == [["a", "b", "c"], ["d"]]


def test_a_page_after_a_deleted_item_starts_where_it_was() -> None:
    items = [account(name, T0 + timedelta(seconds=i)) for i, name in enumerate("abcd")]
    first, cursor = page_after(items, None, 2)
    assert [item.name for item in first] == ["a", "b"]
    rest = [item for item in items if item.name != "b"]
    assert [item.name for item in page_after(rest, cursor, 2)[0]] == ["c", "d"]


async def make_world(admin: httpx.AsyncClient, service: Service, count: int) -> dict[str, str]:
    """``count`` of everything a list route lists: accounts, keys, platform keys, apps, and
    deliveries of one record and of the app."""
    made = await ok(await admin.post("/v1/accounts", json={"name": "a0"}), 201)
    for n in range(1, count):
        await ok(await admin.post("/v1/accounts", json={"name": f"a{n}"}), 201)
    for n in range(count):
        await ok(await admin.post(f"/v1/accounts/{made['id']}/keys", json={"name": f"k{n}"}), 201)
        await ok(await admin.post("/v1/platform-keys", json={"name": f"p{n}"}), 201)
    app = await ok(await admin.post("/v1/apps", json={"name": "app0"}), 201)
    for n in range(1, count):
        await ok(await admin.post("/v1/apps", json={"name": f"app{n}"}), 201)
    records = [minimal_record(f"s{n}") for n in range(count)]
    await ok(await admin.post(f"/v1/apps/{app['id']}/call-records", json=records), 202)
    for _ in range(count - 1):
        await ok(await admin.post(f"/v1/apps/{app['id']}/call-records/s0/resend"), 202)
    told = {"email": "ops@example.com"}
    await ok(await admin.put("/v1/accounts/acc_default/notifications", json=told))
    for each in (await ok(await admin.get("/v1/apps", params={"limit": count})))["items"]:
        await ok(await admin.post(f"/v1/apps/{each['id']}/signing-secret/rotate"))
    return {"account": made["id"], "app": app["id"]}


LISTS = {
    "accounts": "/v1/accounts",
    "keys": "/v1/accounts/{account}/keys",
    "platform-keys": "/v1/platform-keys",
    "apps": "/v1/apps",
    "records": "/v1/apps/{app}/call-records",
    "deliveries-of-a-record": "/v1/apps/{app}/call-records/s0/deliveries",
    "delivery-log": "/v1/apps/{app}/deliveries",
    "account-audit": "/v1/accounts/{account}/audit",
    "audit": "/v1/audit",
    "notification-deliveries": "/v1/accounts/acc_default/notifications/deliveries",
}
COUNT = 5
"""Of each thing listed; the default account is one more account."""


async def walk(admin: httpx.AsyncClient, path: str, limit: int) -> list[list[Any]]:
    found, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        page = await ok(await admin.get(path, params=params))
        assert set(page) == {"items", "nextCursor"}
        found.append(page["items"])
        if (cursor := page["nextCursor"]) is None:
            return found


async def test_every_list_route_answers_pages_of_items(
    admin: httpx.AsyncClient, service: Service
) -> None:
    world = await make_world(admin, service, COUNT)
    for name, template in LISTS.items():
        path = template.format(**world)
        whole = await ok(await admin.get(path))
        assert set(whole) == {"items", "nextCursor"}, name
        assert whole["nextCursor"] is None, name
        walked = await walk(admin, path, 2)
        assert [item for page in walked for item in page] == whole["items"], name
        assert [len(page) for page in walked[:-1]] == [2] * (len(walked) - 1), name
        assert len(whole["items"]) >= COUNT, name
        too_many = await admin.get(path, params={"limit": MAX_PAGE_SIZE + 1})
        assert too_many.status_code == 422, name
        assert too_many.json()["error"]["message"] == "1 problem in the query parameters"


async def test_a_page_holds_100_items_unless_told(
    admin: httpx.AsyncClient, service: Service
) -> None:
    app = await ok(await admin.post("/v1/apps", json={"name": "busy"}), 201)
    records = [minimal_record(f"s{n}") for n in range(PAGE_SIZE + 1)]
    await ok(await admin.post(f"/v1/apps/{app['id']}/call-records", json=records), 202)
    log = f"/v1/apps/{app['id']}/deliveries"
    first = await ok(await admin.get(log))
    assert (len(first["items"]), first["nextCursor"] is not None) == (PAGE_SIZE, True)
    assert len((await ok(await admin.get(log, params={"limit": MAX_PAGE_SIZE})))["items"]) == 101


async def test_an_account_key_pages_only_its_own_apps(
    admin: httpx.AsyncClient, service: Service
) -> None:
    made = await ok(await admin.post("/v1/accounts", json={"name": "Acme"}), 201)
    key = await ok(await admin.post(f"/v1/accounts/{made['id']}/keys", json={"name": "k"}), 201)
    for n in range(3):
        await ok(await admin.post("/v1/apps", json={"name": f"other{n}"}), 201)
    async with Api(service).client(key["secret"]) as client:
        for n in range(3):
            await ok(await client.post("/v1/apps", json={"name": f"own{n}"}), 201)
        walked = await walk(client, "/v1/apps", 2)
    own = [app.name for app in await service.store.list_apps(made["id"])]
    assert sorted(own) == ["own0", "own1", "own2"]
    assert [[app["name"] for app in page] for page in walked] == [own[:2], own[2:]]


def test_the_schema_gives_every_list_the_page_shape(service: Service) -> None:
    spec = Api(service).app.openapi()
    schemas = spec["components"]["schemas"]
    lists = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            answer = operation["responses"].get("200", {}).get("content", {})
            schema = answer.get("application/json", {}).get("schema", {})
            assert schema.get("type") != "array", (method, path)
            name = schema.get("$ref", "").rpartition("/")[2]
            if name.endswith("Page"):
                lists += 1
                assert set(schemas[name]["required"]) == {"items", "nextCursor"}, name
                limit = {p["name"]: p for p in operation["parameters"]}["limit"]["schema"]
                assert (limit["default"], limit["maximum"]) == (PAGE_SIZE, MAX_PAGE_SIZE), path
    assert lists == len(LISTS)
