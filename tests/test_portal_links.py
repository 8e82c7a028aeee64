"""Portal links, on every backend: who may issue one, what a link body may say, that a link
signs in once and expires (with the injected clock), and what its session may see and do.
The embedded console in a real browser is in test_portal_browser.py."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import httpx
import pytest
from pydantic import ValidationError

from ccpush import __version__
from ccpush.api.routes.portal_links import link_hash, new_link_token
from ccpush.audit import AuditAction, AuditFilter
from ccpush.clock import ManualClock
from ccpush.service import Service
from ccpush.settings import Settings
from ccpush.upkeep import CONSOLE_SESSION_LIFE
from tests.api_client import Api, ok
from tests.helpers import make_service
from tests.receiver import Receiver
from tests.test_console_http import Console

PORTAL_URL = re.compile(r"^http://ccpush\.test/console/portal\?token=(ccpl_[A-Za-z0-9_-]{43})$")
THEMED = {
    "console_frame_ancestors": "https://portal.example.com https://*.example.net:8443",
    "console_product_name": "Acme Voice",
    "console_logo_url": "https://cdn.example.com/acme.svg",
    "console_accent": "#0a7f5a",
}


@dataclass
class World:
    api: Api
    service: Service
    account_a: str
    account_b: str
    key_a: str
    ingest_a: str
    key_b: str
    app_a: str
    other_app_a: str
    app_b: str


async def make_world(service: Service, receiver: Receiver) -> World:
    api = Api(service)
    async with api.client() as admin:
        accounts = [
            (await ok(await admin.post("/v1/accounts", json={"name": name}), 201))["id"]
            for name in ("Acme", "Globex")
        ]
        keys = [
            (await ok(await admin.post(f"/v1/accounts/{account}/keys", json=body), 201))["secret"]
            for account, body in (
                (accounts[0], {"name": "ops", "scope": "manage"}),
                (accounts[0], {"name": "ingest", "scope": "ingest"}),
                (accounts[1], {"name": "ops", "scope": "manage"}),
            )
        ]
        apps = [
            (await ok(await admin.post("/v1/apps", json=body), 201))["id"]
            for body in (
                {"name": "Support line", "pushUrl": receiver.url, "accountId": accounts[0]},
                {"name": "Billing line", "accountId": accounts[0]},
                {"name": "Globex secret line", "accountId": accounts[1]},
            )
        ]
    return World(api, service, *accounts, *keys, *apps)


@pytest.fixture
async def world(service: Service, receiver: Receiver) -> World:
    return await make_world(service, receiver)


@pytest.fixture
async def themed(
    tmp_path: Path, db_url: str, clock: ManualClock, receiver: Receiver
) -> AsyncIterator[World]:
    service = make_service(tmp_path, db_url, clock, **THEMED)
    await service.start(dispatch=False)
    yield await make_world(service, receiver)
    await service.stop()


async def issue(world: World, token: str, account: str, status: int = 201, **body: Any) -> Any:
    async with world.api.client(token) as client:
        return await ok(
            await client.post(f"/v1/accounts/{account}/portal-links", json=body), status
        )


def browser(world: World, scheme: str = "http") -> httpx.AsyncClient:
    """A browser of its own (its own cookies), following no redirect by itself."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(world.api.app), base_url=f"{scheme}://ccpush.test"
    )


@asynccontextmanager
async def opened(
    world: World, url: str, scheme: str = "http"
) -> AsyncIterator[tuple[Console, httpx.Response]]:
    """A new browser that opened ``url`` (over ``scheme``), and the answer."""
    async with browser(world, scheme) as client:
        yield Console(client), await client.get(url.removeprefix("http://ccpush.test"))


# Issuing


async def test_the_operator_and_the_accounts_manage_key_issue_links(
    world: World, clock: ManualClock
) -> None:
    from tests.api_client import ADMIN

    by_operator = await issue(world, ADMIN, world.account_a)
    assert PORTAL_URL.match(by_operator["url"]), by_operator["url"]
    assert by_operator["expiresAt"] == (clock.now() + timedelta(hours=1)).isoformat().replace(
        "+00:00", "Z"
    ) or by_operator["expiresAt"].startswith("2026-03-01T09:00:00")
    assert (by_operator["accountId"], by_operator["appId"], by_operator["readOnly"]) == (
        world.account_a,
        None,
        False,
    )
    by_key = await issue(world, world.key_a, world.account_a, appId=world.app_a, readOnly=True)
    assert (by_key["appId"], by_key["readOnly"]) == (world.app_a, True)
    assert by_key["id"] != by_operator["id"]
    assert by_key["url"] != by_operator["url"]


async def test_an_ingest_key_and_another_accounts_key_are_refused(world: World) -> None:
    refused = await issue(world, world.ingest_a, world.account_a, 403)
    assert refused["error"]["code"] == "forbidden"
    await issue(world, world.key_b, world.account_a, 404)
    await issue(world, world.key_a, world.account_b, 404)
    # Nor may a link name another account's app, or an app that does not exist.
    await issue(world, world.key_a, world.account_a, 404, appId=world.app_b)
    await issue(world, world.key_a, world.account_a, 404, appId="app_missing")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"expiresIn": 59}, "expiresIn"),
        ({"expiresIn": 86_401}, "expiresIn"),
        ({"expiresIn": "3600"}, "expiresIn"),
        ({"expiresIn": 3600.5}, "expiresIn"),
        ({"readOnly": "yes"}, "readOnly"),
        ({"appId": ""}, "appId"),
        ({"scope": "everything"}, "scope"),
    ],
)
async def test_a_link_body_is_checked_field_by_field(
    world: World, body: dict[str, Any], field: str
) -> None:
    answer = await issue(world, world.key_a, world.account_a, 422, **body)
    assert [problem["field"] for problem in answer["error"]["problems"]] == [field]


async def test_the_longest_and_shortest_lives_are_accepted(world: World) -> None:
    for seconds in (60, 86_400):
        await issue(world, world.key_a, world.account_a, expiresIn=seconds)


async def test_a_request_sent_again_with_its_idempotency_key_gets_the_same_link(
    world: World,
) -> None:
    headers = {"Idempotency-Key": "link-1"}
    path = f"/v1/accounts/{world.account_a}/portal-links"
    async with world.api.client(world.key_a) as client:
        first = await client.post(path, json={"expiresIn": 600}, headers=headers)
        again = await client.post(path, json={"expiresIn": 600}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()


# Opening


async def test_a_link_signs_in_once_and_is_refused_after(world: World) -> None:
    link = await issue(world, world.key_a, world.account_a)
    async with opened(world, link["url"]) as (first, answer):
        assert (answer.status_code, answer.headers["location"]) == (303, "/console/apps")
        assert "no-store" in answer.headers["cache-control"]
        apps = await first.get("/apps")
        assert "Support line" in apps
        assert "Billing line" in apps
        assert "Globex" not in apps
        again = await first.client.get(link["url"])  # the same browser, signed in
        assert again.status_code == 410
        assert "already been used or has expired" in again.text
        assert 'ccpush_console=""' in again.headers["set-cookie"]  # and signed out
    async with opened(world, link["url"]) as (second, refused):
        assert refused.status_code == 410
        await second.get("/apps", 303)  # no session


async def test_of_two_opens_at_once_one_signs_in(world: World) -> None:
    link = await issue(world, world.key_a, world.account_a)
    clients = [browser(world) for _ in range(2)]
    answers = await asyncio.gather(*(client.get(link["url"]) for client in clients))
    for client in clients:
        await client.aclose()
    assert sorted(answer.status_code for answer in answers) == [303, 410]


async def test_the_store_hands_a_link_out_once_to_concurrent_uses(
    world: World, clock: ManualClock
) -> None:
    token, store, now = new_link_token(), world.service.store, clock.now()
    await store.create_portal_link(
        account_id=world.account_a,
        app_id=None,
        read_only=False,
        token_hash=link_hash(token),
        now=now,
        expires_at=now + timedelta(minutes=5),
    )
    uses = await asyncio.gather(
        *(store.use_portal_link(link_hash(token), now=now) for _ in range(8))
    )
    used = [link for link in uses if link is not None]
    assert len(used) == 1
    assert used[0].used_at == now


async def test_a_link_expires(world: World, clock: ManualClock) -> None:
    late = await issue(world, world.key_a, world.account_a, expiresIn=60)
    in_time = await issue(world, world.key_a, world.account_a, expiresIn=120)
    clock.advance(timedelta(seconds=60))
    async with opened(world, late["url"]) as (expired, refused):
        assert refused.status_code == 410
        await expired.get("/apps", 303)
    async with opened(world, in_time["url"]) as (fine, answer):
        assert answer.status_code == 303
        await fine.get("/apps")


async def test_a_wrong_or_missing_token_is_refused_without_asking_twice(world: World) -> None:
    async with browser(world) as client:
        for query in ("", "?token=", "?token=ccpl_short", f"?token={new_link_token()}"):
            response = await client.get("/console/portal" + query)
            assert response.status_code == 410, query


async def test_upkeep_deletes_links_expired_longer_than_a_session(
    world: World, clock: ManualClock
) -> None:
    link = await issue(world, world.key_a, world.account_a, expiresIn=60)
    clock.advance(CONSOLE_SESSION_LIFE)
    assert (await world.service.upkeep.run_once()).portal_links == 0
    clock.advance(timedelta(seconds=61))
    assert (await world.service.upkeep.run_once()).portal_links == 1
    async with opened(world, link["url"]) as (_, refused):
        assert refused.status_code == 410


async def test_issuing_and_opening_a_link_are_in_the_audit_log(world: World) -> None:
    link = await issue(world, world.key_a, world.account_a, appId=world.app_a, expiresIn=300)
    token = link["url"].partition("token=")[2]
    async with opened(world, link["url"]) as (console, answer):
        assert answer.status_code == 303
        await console.get(f"/apps/{world.app_a}")
        saved = await console.post(
            f"/apps/{world.app_a}/address", {"push_url": "https://example.com/cdr"}
        )
        assert saved.status_code == 303
    async with opened(world, link["url"]) as (_, refused):
        assert refused.status_code == 410
    actions = frozenset({AuditAction.PORTAL_LINK_ISSUED, AuditAction.PORTAL_LINK_USED,
                         AuditAction.ADDRESS_CHANGED})  # fmt: skip
    query = AuditFilter(account_id=world.account_a, actions=actions)
    entries = await world.service.store.list_audit(query)
    portal = f"portal:{link['id']}"
    assert [(entry.action, entry.actor, entry.app_id) for entry in entries] == [
        (AuditAction.ADDRESS_CHANGED, portal, world.app_a),
        (AuditAction.PORTAL_LINK_USED, portal, world.app_a),
        (AuditAction.PORTAL_LINK_ISSUED, entries[-1].actor, world.app_a),
    ]
    issued = entries[-1]
    assert (issued.actor_name, issued.target) == ("ops", link["id"])
    assert issued.after == {"appId": world.app_a, "readOnly": False, "expiresAt": ANY}
    assert all(entry.source == "127.0.0.1" for entry in entries)
    assert token not in repr(entries)


# What a portal session sees and does


async def test_an_account_session_sees_its_account_and_neither_keys_nor_others(
    world: World,
) -> None:
    link = await issue(world, world.key_a, world.account_a)
    async with opened(world, link["url"]) as (console, _):
        await console.get(f"/apps/{world.app_a}")
        await console.get(f"/apps/{world.other_app_a}/deliveries")
        await console.get(f"/apps/{world.app_b}", 404)
        await console.get(f"/apps/{world.app_b}/deliveries", 404)
        keys = await console.get(f"/accounts/{world.account_a}/keys", 404)
        assert "API keys" not in keys  # nor in the navigation
        await console.get(f"/accounts/{world.account_b}/keys", 404)
        for account_page in ("audit", "notifications"):  # nor the account's other pages
            await console.get(f"/accounts/{world.account_a}/{account_page}", 404)
        for operator_page in ("/platform", "/accounts", "/platform-keys"):
            await console.get(operator_page, 404)
        await console.get("/apps")
        made = await console.post(f"/accounts/{world.account_a}/keys", {"name": "mine"})
        assert made.status_code == 404
        keys_now = await world.service.store.list_keys(world.account_a)
        assert sorted(key.name for key in keys_now) == ["ingest", "ops"]
        created = await console.post("/apps", {"name": "New line", "push_url": ""})
        assert created.status_code == 303


async def test_an_app_session_sees_that_app_only(world: World) -> None:
    link = await issue(world, world.key_a, world.account_a, appId=world.app_a)
    async with opened(world, link["url"]) as (console, answer):
        assert answer.headers["location"] == f"/console/apps/{world.app_a}"
        page = await console.get(f"/apps/{world.app_a}")
        assert "Support line" in page
        assert f'href="/console/apps/{world.app_a}"' in page
        list_page = await console.client.get("/console/apps")
        assert list_page.headers["location"] == f"/console/apps/{world.app_a}"
        await console.get(f"/apps/{world.other_app_a}", 404)
        await console.get(f"/apps/{world.other_app_a}/overview", 404)
        await console.get(f"/apps/{world.app_b}", 404)
        refused = await console.post("/apps", {"name": "New line", "push_url": ""})
        assert refused.status_code == 404
        paused = await console.post(f"/apps/{world.other_app_a}/pause")
        assert paused.status_code == 404
        assert not (await world.service.store.get_app(world.other_app_a)).paused


async def test_a_session_sets_the_address_and_sends_a_test_push(
    world: World, receiver: Receiver
) -> None:
    link = await issue(world, world.key_a, world.account_a, appId=world.other_app_a)
    async with opened(world, link["url"]) as (console, _):
        await console.get(f"/apps/{world.other_app_a}")
        saved = await console.post(f"/apps/{world.other_app_a}/address", {"push_url": receiver.url})
        assert saved.status_code == 303
        assert (await world.service.store.get_app(world.other_app_a)).push_url == receiver.url
        tested = await console.post(f"/apps/{world.other_app_a}/test-push")
        assert tested.status_code == 200
        assert "Delivered" in tested.text
    assert receiver.pushes[-1].headers["ccpush-test"] == "true"


async def test_a_read_only_session_changes_nothing(world: World, receiver: Receiver) -> None:
    link = await issue(world, world.key_a, world.account_a, readOnly=True)
    async with opened(world, link["url"]) as (console, _):
        page = await console.get(f"/apps/{world.app_a}")
        assert "Read-only" in page
        for path, form in (
            (f"/apps/{world.app_a}/pause", {}),
            (f"/apps/{world.app_a}/address", {"push_url": "https://example.com/cdr"}),
            (f"/apps/{world.app_a}/address/clear", {}),
            (f"/apps/{world.app_a}/test-push", {}),
            (f"/apps/{world.app_a}/signing-secret/rotate", {}),
            ("/apps", {"name": "New line", "push_url": ""}),
        ):
            refused = await console.post(path, form)
            assert refused.status_code == 403, path
            assert "read-only" in refused.text
        app = await world.service.store.get_app(world.app_a)
        assert (app.paused, app.push_url) == (False, receiver.url)
        assert len(await world.service.store.list_apps(world.account_a)) == 2
        assert not receiver.pushes
        signed_out = await console.post("/sign-out")
        assert signed_out.status_code == 303
        await console.get("/apps", 303)


# Framing and white label


async def test_by_default_no_site_may_frame_the_console(world: World) -> None:
    link = await issue(world, world.key_a, world.account_a)
    async with opened(world, link["url"]) as (console, answer):
        assert "SameSite=lax" in answer.headers["set-cookie"]
        assert "Partitioned" not in answer.headers["set-cookie"]
        response = await console.client.get("/console/apps")
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
        assert "<title>Voice Application Management</title>" in response.text  # no ccpush
    async with browser(world) as client:
        sign_in = await client.get("/console/sign-in")
        assert "<title>Sign in · ccpush console</title>" in sign_in.text


async def test_configured_sites_may_frame_it_and_the_platforms_brand_replaces_ccpush(
    themed: World,
) -> None:
    link = await issue(themed, themed.key_a, themed.account_a)
    async with opened(themed, link["url"], "https") as (console, answer):
        cookie = answer.headers["set-cookie"].lower()
        for attribute in ("samesite=none", "secure", "partitioned", "httponly"):
            assert attribute in cookie
        response = await console.client.get("/console/apps")
        policy = response.headers["content-security-policy"]
        assert "frame-ancestors https://portal.example.com https://*.example.net:8443;" in policy
        assert "img-src 'self' data: https://cdn.example.com;" in policy
        assert "x-frame-options" not in response.headers
        page = response.text
        assert "<title>Voice Application Management · Acme Voice</title>" in page
        assert 'src="https://cdn.example.com/acme.svg"' in page
        assert "ccpush console" not in page
        assert f"ccpush {__version__}" not in page
        assert 'class="brand-mark"' not in page
        assert "/console/theme.css" in page
        theme = await console.client.get("/console/theme.css")
        assert theme.headers["content-type"].startswith("text/css")
        assert "--accent: #0a7f5a;" in theme.text
        refused = await console.client.get(link["url"])
        assert refused.status_code == 410
        assert "ccpush" not in refused.text.replace("/console/", "/")


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("console_frame_ancestors", "https://portal.example.com; script-src *"),
        ("console_frame_ancestors", "'none' https://portal.example.com"),
        ("console_frame_ancestors", ""),
        ("console_logo_url", "http://cdn.example.com/logo.svg"),
        ("console_logo_url", "https://cdn.example.com/a logo.svg"),
        ("console_logo_url", "https://cdn.example.com;script-src/logo.svg"),
        ("console_logo_url", "https://user@cdn.example.com/logo.svg"),
        ("console_accent", "green"),
        ("console_accent", "#0a7f5"),
        ("console_product_name", ""),
    ],
)
def test_white_label_settings_are_checked(setting: str, value: str) -> None:
    with pytest.raises(ValidationError, match=setting):
        Settings(**{setting: value})
