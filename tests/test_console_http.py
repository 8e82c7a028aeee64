"""The web console over plain HTTP (in process), on every backend: sessions, CSRF, who may
sign in and see what, and what each page does. The browser tests are in test_console.py."""

from __future__ import annotations

import json
import re
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from itsdangerous import URLSafeTimedSerializer

from ccpush.clock import ManualClock
from ccpush.models import DeliveryState
from ccpush.pacing import Signal
from ccpush.service import Service
from tests.api_client import ADMIN, Api, ok
from tests.conftest import minimal_record
from tests.helpers import make_service
from tests.receiver import Receiver, always, fail_first

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Console:
    """A browser without JavaScript: follows nothing by itself, keeps cookies, sends forms."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.csrf = ""

    async def get(self, path: str, status: int = 200, **kwargs: Any) -> str:
        response = await self.client.get("/console" + path, **kwargs)
        assert response.status_code == status, response.text
        if found := CSRF.search(response.text):
            self.csrf = found.group(1)
        return response.text

    async def post(self, path: str, data: dict[str, str] | None = None, **kwargs: Any) -> Any:
        form = {"csrf": self.csrf, **(data or {})}
        return await self.client.post("/console" + path, data=form, **kwargs)

    async def sign_in(self, token: str) -> httpx.Response:
        await self.get("/sign-in")
        response = await self.post("/sign-in", {"key": token})
        await self.get("/apps", 200 if response.status_code == 303 else 303)
        return response


@dataclass
class World:
    api: Api
    service: Service
    key_a: str
    key_a_id: str
    key_b: str
    ingest_a: str
    account_a: str
    account_b: str
    app_a: str
    app_b: str


@pytest.fixture
async def service(tmp_path: Path, db_url: str, clock: ManualClock) -> AsyncIterator[Service]:
    service = make_service(tmp_path, db_url, clock, auth_failure_limit=3)
    await service.start(dispatch=False)
    yield service
    await service.stop()


async def new_key(admin: httpx.AsyncClient, account: str, scope: str = "manage") -> Any:
    body = {"name": scope, "scope": scope}
    return await ok(await admin.post(f"/v1/accounts/{account}/keys", json=body), 201)


@pytest.fixture
async def world(service: Service, receiver: Receiver) -> World:
    api = Api(service)
    async with api.client() as admin:
        a = (await ok(await admin.post("/v1/accounts", json={"name": "Acme"}), 201))["id"]
        b = (await ok(await admin.post("/v1/accounts", json={"name": "Globex"}), 201))["id"]
        key_a, key_b = await new_key(admin, a), await new_key(admin, b)
        ingest_a = await new_key(admin, a, "ingest")
        app_a = {"name": "Acme support", "pushUrl": receiver.url, "accountId": a}
        app_b = {"name": "Globex secret line", "accountId": b}
        created_a = await ok(await admin.post("/v1/apps", json=app_a), 201)
        created_b = await ok(await admin.post("/v1/apps", json=app_b), 201)
    return World(
        api, service, key_a["secret"], key_a["id"], key_b["secret"], ingest_a["secret"], a, b,
        created_a["id"], created_b["id"],
    )  # fmt: skip


@pytest.fixture
async def browser(world: World) -> AsyncIterator[Console]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(world.api.app), base_url="http://ccpush.test"
    ) as client:
        yield Console(client)


async def send(world: World, app_id: str, *session_ids: str) -> None:
    records = [minimal_record(sid) for sid in session_ids]
    async with world.api.client(world.key_a) as client:
        await ok(await client.post(f"/v1/apps/{app_id}/call-records", json=records), 202)


# Signing in, sessions and CSRF


async def test_pages_ask_for_a_session_and_the_root_leads_to_the_console(
    browser: Console,
) -> None:
    root = await browser.client.get("/")
    assert root.headers["location"] == "/console/"
    home = await browser.client.get("/console/")
    assert home.headers["location"] == "/console/apps"
    await browser.get("/apps", 303)
    response = await browser.client.get("/console/apps")
    assert response.headers["location"] == "/console/sign-in"


async def test_a_manage_key_signs_in_and_the_cookie_names_it_without_holding_it(
    browser: Console, world: World
) -> None:
    response = await browser.sign_in(world.key_a)
    assert (response.status_code, response.headers["location"]) == (303, "/console/apps")
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http on loopback
    data = session_in(response)
    assert data["key_id"] == world.key_a_id
    assert world.key_a not in cookie
    assert world.key_a not in json.dumps(data)
    again = await browser.client.get("/console/sign-in")
    assert again.headers["location"] == "/console/apps"  # already signed in


async def test_the_cookie_is_secure_over_https_or_when_configured(
    world: World, tmp_path: Path, db_url: str
) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(world.api.app), base_url="https://ccpush.test"
    ) as client:
        response = await client.get("/console/sign-in")
        assert "Secure" in response.headers["set-cookie"]
    forced = make_service(tmp_path, db_url, console_secure_cookie=True)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(Api(forced).app), base_url="http://ccpush.test"
    ) as client:
        response = await client.get("/console/sign-in")
        assert "Secure" in response.headers["set-cookie"]


async def test_every_post_needs_the_sessions_csrf_token(
    browser: Console, world: World, service: Service
) -> None:
    await browser.get("/sign-in")
    refused = await browser.post("/sign-in", {"key": world.key_a, "csrf": "forged"})
    assert refused.status_code == 403
    await browser.sign_in(world.key_a)
    pause = f"/apps/{world.app_a}/pause"
    for forged in ({"csrf": ""}, {"csrf": "not-the-token"}):
        response = await browser.post(pause, forged)
        assert response.status_code == 403
        assert "The form was not accepted" in response.text
    assert not (await service.store.get_app(world.app_a)).paused
    stranger = httpx.AsyncClient(
        transport=httpx.ASGITransport(world.api.app), base_url="http://ccpush.test"
    )
    async with stranger:
        response = await stranger.post("/console" + pause, data={"csrf": browser.csrf})
        assert response.status_code == 403  # the token without the session's cookie
    header = await browser.client.post(
        "/console" + pause, headers={"X-CSRF-Token": browser.csrf, "HX-Request": "true"}
    )
    assert header.headers["HX-Redirect"].startswith(f"/console/apps/{world.app_a}")
    assert (await service.store.get_app(world.app_a)).paused


async def test_an_ingest_key_may_not_sign_in(browser: Console, world: World) -> None:
    response = await browser.sign_in(world.ingest_a)
    assert response.status_code == 403
    assert "may only send call records" in response.text
    assert (session_in(response)["key_id"], session_in(response)["admin"]) == (None, None)


async def test_failed_sign_ins_are_limited_but_never_refuse_a_valid_key(
    browser: Console, world: World
) -> None:
    for attempt in range(3):
        response = await browser.sign_in(f"ccpk_wrong{attempt}")
        assert response.status_code == 401
        assert "not valid" in response.text
    limited = await browser.sign_in("ccpk_wrong_again")
    assert limited.status_code == 429
    assert "Too many failed sign-ins" in limited.text
    assert int(limited.headers["Retry-After"]) >= 1
    async with world.api.client("ccpk_wrong0") as client:
        assert (await client.get("/v1/apps")).status_code == 429  # the same limits
    async with world.api.client(world.key_a) as client:
        assert (await client.get("/v1/apps")).status_code == 200
    signed_in = await browser.sign_in(world.key_a)  # from the same address
    assert signed_in.headers["location"] == "/console/apps"


async def test_a_revoked_key_ends_its_session(browser: Console, world: World) -> None:
    await browser.sign_in(world.key_a)
    elsewhere = Api(world.service)  # another process on the same store and data dir
    async with client_with(elsewhere, browser.client.cookies) as copied:
        assert (await copied.get("/console/apps")).status_code == 200
        async with world.api.client(world.key_a) as client:
            await ok(await client.delete(f"/v1/accounts/{world.account_a}/keys/{world.key_a_id}"))
        await browser.get("/apps", 303)
        gone = await copied.get("/console/apps")
        assert gone.headers["location"] == "/console/sign-in"


async def test_signing_out_ends_the_session_on_the_server(
    browser: Console, world: World, service: Service
) -> None:
    await browser.sign_in(world.key_a)
    await browser.get("/apps")
    copied_cookies, csrf = httpx.Cookies(browser.client.cookies), browser.csrf
    signed_out = await browser.post("/sign-out")
    assert signed_out.headers["location"] == "/console/sign-in"
    assert "ccpush_console" not in browser.client.cookies
    async with client_with(world.api, copied_cookies) as copied:
        page = await copied.get("/console/apps")
        assert page.headers["location"] == "/console/sign-in"
        pause = await copied.post(f"/console/apps/{world.app_a}/pause", data={"csrf": csrf})
        assert pause.status_code == 403
    assert not (await service.store.get_app(world.app_a)).paused
    again = await browser.sign_in(world.key_a)
    assert again.headers["location"] == "/console/apps"


def shown(when: datetime, service: Service) -> str:
    """A time as the console shows it, in the tests' zone: ``2026-03-01 16:00:00 UTC+08:00``."""
    return when.astimezone(service.zone).strftime("%Y-%m-%d %H:%M:%S UTC+08:00")


def client_with(api: Api, cookies: httpx.Cookies) -> httpx.AsyncClient:
    """Another browser, with ``cookies`` copied into it."""
    transport = httpx.ASGITransport(api.app)
    return httpx.AsyncClient(transport=transport, base_url="http://ccpush.test", cookies=cookies)


def session_in(response: httpx.Response) -> dict[str, Any]:
    """What the session cookie set by ``response`` holds (read without checking it)."""
    serializer = URLSafeTimedSerializer("not the secret", salt="ccpush-console-session")
    _, data = serializer.loads_unsafe(response.cookies["ccpush_console"])
    assert isinstance(data, dict)
    return data


async def test_the_session_secret_is_kept_in_the_data_dir(
    browser: Console, world: World, tmp_path: Path, db_url: str
) -> None:
    await browser.sign_in(world.key_a)
    kept = tmp_path / "console-secret"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    service = make_service(tmp_path, db_url)
    again = Api(service)  # another process on the same data dir
    await service.store.open()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(again.app),
            base_url="http://ccpush.test",
            cookies=browser.client.cookies,
        ) as client:
            assert (await client.get("/console/apps")).status_code == 200
    finally:
        await service.store.close()


# Who sees what


async def test_a_key_sees_only_its_accounts_apps(browser: Console, world: World) -> None:
    await browser.sign_in(world.key_a)
    page = await browser.get("/apps")
    assert "Acme support" in page
    assert "Globex" not in page
    for path in ("", "/deliveries", "/overview", "/deliveries/1"):
        missing = await browser.get(f"/apps/{world.app_b}{path}", 404)
        assert "Globex" not in missing
        assert "Not found" in missing
    for action in ("pause", "address/clear", "test-push", "replays"):
        response = await browser.post(f"/apps/{world.app_b}/{action}")
        assert response.status_code == 404
    assert not (await world.service.store.get_app(world.app_b)).paused
    refused = await browser.post("/account", {"account": world.account_b})
    assert refused.status_code == 404
    assert "Globex" not in await browser.get("/apps")


async def test_the_operator_switches_between_accounts(browser: Console, world: World) -> None:
    await browser.sign_in(ADMIN)
    page = await browser.get("/apps")
    assert "Operator" in page
    assert "Globex secret line" not in page  # the default account is shown first
    switched = await browser.post("/account", {"account": world.account_b})
    assert switched.headers["location"] == "/console/apps"
    page = await browser.get("/apps")
    assert "Globex secret line" in page
    assert "Acme support" not in page
    await browser.get(f"/apps/{world.app_a}")  # the operator may open any app
    missing = await browser.post("/account", {"account": "acc_nope"})
    assert missing.status_code == 404


async def test_pages_carry_security_headers_and_times_with_their_zone(
    browser: Console, world: World
) -> None:
    await browser.sign_in(world.key_a)
    response = await browser.client.get(f"/console/apps/{world.app_a}/deliveries")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert "Times are shown in UTC+08:00" in response.text
    assert "(UTC+08:00)" in response.text  # beside the time filters
    static = await browser.client.get("/console/static/htmx.min.js")
    assert static.status_code == 200
    assert static.text.startswith("/*! htmx 2.")


# Voice Application Management


async def test_an_address_is_checked_set_changed_cleared_and_paused(
    browser: Console, world: World, service: Service, receiver: Receiver
) -> None:
    await browser.sign_in(world.key_a)
    path = f"/apps/{world.app_a}"
    for typed, message in (
        ("", "Enter an address"),
        ("ftp://crm.example.com/cdr", "must start with http:// or https://"),
        ("https://", "must name a host"),
        ("http://10.1.2.3/cdr", "cannot be pushed to"),
        ("https://unknown.invalid/cdr", "cannot be pushed to"),
    ):
        response = await browser.post(path + "/address", {"push_url": typed})
        assert response.status_code == 422, typed
        assert message in response.text
        assert 'aria-invalid="true"' in response.text
    new_url = receiver.url.replace("/cdr", "/v2/cdr")
    saved = await browser.post(path + "/address", {"push_url": new_url})
    assert saved.headers["location"] == f"/console{path}?notice=address-saved"
    assert "The push address was saved" in await browser.get(path + "?notice=address-saved")
    assert (await service.store.get_app(world.app_a)).push_url == new_url
    await browser.post(path + "/pause")
    assert "Resume pushing" in await browser.get(path)
    assert (await service.store.get_app(world.app_a)).paused
    await browser.post(path + "/resume")
    await browser.post(path + "/address/clear")
    app = await service.store.get_app(world.app_a)
    assert (app.push_url, app.paused) == (None, False)
    assert "No address" in await browser.get(path)


async def test_a_new_app_is_added_to_the_account_on_screen(
    browser: Console, world: World, service: Service
) -> None:
    await browser.sign_in(world.key_a)
    refused = await browser.post("/apps", {"name": "", "push_url": "nope"})
    assert refused.status_code == 422
    assert "Enter a name" in refused.text
    assert "must start with http://" in refused.text
    created = await browser.post("/apps", {"name": "Acme sales", "push_url": ""})
    assert created.status_code == 303
    [app] = [
        app for app in await service.store.list_apps(world.account_a) if app.name == "Acme sales"
    ]
    assert app.push_url is None


async def test_a_test_push_shows_its_outcome_in_place(
    browser: Console, world: World, receiver: Receiver
) -> None:
    await browser.sign_in(world.key_a)
    htmx = {"HX-Request": "true"}
    answer = await browser.post(f"/apps/{world.app_a}/test-push", headers=htmx)
    assert answer.status_code == 200
    assert "<html" not in answer.text  # only the outcome, swapped into the page
    assert "Delivered" in answer.text
    assert "HTTP 200" in answer.text
    assert " ms" in answer.text
    [push] = receiver.pushes
    assert push.headers["ccpush-test"] == "true"
    receiver.responder = always(500)
    page = await browser.post(f"/apps/{world.app_a}/test-push")  # without htmx: the page
    assert "<html" in page.text
    assert "Failed" in page.text
    assert "HTTP 500" in page.text


# The delivery log


async def test_a_delivery_shows_its_json_and_attempts_and_is_resent(
    browser: Console, world: World, service: Service, receiver: Receiver
) -> None:
    receiver.responder = fail_first(1)
    await send(world, world.app_a, "d1")
    await service.dispatcher.run_until_idle()
    await browser.sign_in(world.key_a)
    log = await browser.get(f"/apps/{world.app_a}/deliveries")
    [delivery_id] = re.findall(rf"/apps/{world.app_a}/deliveries/(\d+)", log)
    page = await browser.get(f"/apps/{world.app_a}/deliveries/{delivery_id}")
    assert "&#34;callSessionId&#34;: &#34;d1&#34;" in page or '"callSessionId": "d1"' in page
    assert "HTTP 503" in page
    assert "Pending" in page
    assert 'hx-trigger="every 1s"' in page  # follows the delivery while it waits
    resent = await browser.post(f"/apps/{world.app_a}/deliveries/{delivery_id}/resend")
    new_page = resent.headers["location"]
    assert new_page.endswith("?notice=resent")
    await service.dispatcher.run_until_idle()
    status = await browser.client.get(new_page.replace("?notice=resent", "/status"))
    assert "Delivered" in status.text
    assert "hx-trigger" not in status.text  # finished: no more polling
    await browser.get(f"/apps/{world.app_a}/deliveries/999999", 404)


async def test_the_log_filters_by_state_and_time(
    browser: Console, world: World, service: Service, receiver: Receiver, clock: ManualClock
) -> None:
    receiver.responder = lambda push, seen: always(500 if push.session_id == "bad" else 200)(
        push, seen
    )
    await send(world, world.app_a, "early")
    clock.advance(timedelta(hours=2))
    await send(world, world.app_a, "bad", "good")
    for _ in range(4):
        await service.dispatcher.run_until_idle()
        clock.advance(timedelta(minutes=30))
    await browser.sign_in(world.key_a)
    base = f"/apps/{world.app_a}/deliveries"
    failed = await browser.get(base + "?state=failed")
    assert ">bad<" in failed
    assert ">good<" not in failed
    late = clock.now() - timedelta(hours=3)
    since = shown(late, service)
    assert since.endswith(" UTC+08:00")
    recent = await browser.get(f"{base}?{urlencode({'since': since})}")
    assert ">good<" in recent
    assert ">early<" not in recent
    assert f'value="{since}"' in recent  # the field shows it as typed, as times are shown
    in_utc = late.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert ">good<" in await browser.get(f"{base}?{urlencode({'since': in_utc})}")
    zoneless = late.astimezone(service.zone).strftime("%Y-%m-%d %H:%M")
    assert ">early<" not in await browser.get(f"{base}?{urlencode({'since': zoneless})}")
    wrong = await browser.get(f"{base}?state=lost&since=yesterday")
    assert "Choose a state from the list." in wrong
    assert "Created from is not a date and time." in wrong


async def test_replay_failed_since_shows_its_progress(
    browser: Console, world: World, service: Service, receiver: Receiver, clock: ManualClock
) -> None:
    receiver.responder = always(500)
    since = clock.now()
    await send(world, world.app_a, "lost1", "lost2")
    for _ in range(4):
        await service.dispatcher.run_until_idle()
        clock.advance(timedelta(minutes=30))
    receiver.responder = always(200)
    await browser.sign_in(world.key_a)
    typed = shown(since, service)
    page = await browser.get(f"/apps/{world.app_a}/deliveries")
    default = shown(clock.now() - timedelta(days=1), service)
    assert (
        f'id="replay-since" name="since" type="text" class="time-input" value="{default}"' in page
    )
    bad = await browser.post(f"/apps/{world.app_a}/replays", {"since": "soon"})
    assert bad.status_code == 422
    assert "Enter the date and time" in bad.text
    started = await browser.post(f"/apps/{world.app_a}/replays", {"since": typed})
    location = started.headers["location"]
    replay_id = location.split("replay=")[1]
    live = await browser.get(location.removeprefix("/console"))
    assert "Replaying" in live
    assert "every 1s" in live
    await service.replays.run_until_idle()
    await service.dispatcher.run_until_idle()
    done = await browser.get(f"/apps/{world.app_a}/replays/{replay_id}")
    assert "Replay finished" in done
    assert "2 delivered" in done
    assert "hx-trigger" not in done


async def test_the_overview_counts_the_last_day_and_week(
    browser: Console, world: World, service: Service, receiver: Receiver, clock: ManualClock
) -> None:
    receiver.responder = lambda push, seen: always(503 if push.session_id == "slow" else 200)(
        push, seen
    )
    await send(world, world.app_a, "old")
    await service.dispatcher.run_until_idle()
    clock.advance(timedelta(days=3))
    await send(world, world.app_a, "new1", "new2", "slow")
    await service.dispatcher.run_until_idle()
    await browser.sign_in(world.key_a)
    page = await browser.get(f"/apps/{world.app_a}/overview")
    day, week, backlog = re.findall(r'class="big-number">([\d,]+) <span>', page)
    assert (day, week, backlog) == ("2", "3", "1")
    assert "2 delivered, 1 retrying, 0 failed; 66.7 % answered 2xx" in page
    assert '<svg class="chart"' in page
    assert 'role="img"' in page
    counts = await service.store.count_by_state(world.app_a)
    assert counts[DeliveryState.PENDING] == 1


# Counting records, not attempts


async def test_the_apps_count_records_and_label_attempts_as_such(
    browser: Console, world: World, service: Service, receiver: Receiver, clock: ManualClock
) -> None:
    receiver.responder = fail_first(1)
    await send(world, world.app_a, "r1", "r2")
    await service.dispatcher.run_until_idle()  # both refused once
    clock.advance(timedelta(minutes=30))
    await service.dispatcher.run_until_idle()  # both delivered
    await send(world, world.app_a, "r3")  # waiting
    await browser.sign_in(world.key_a)
    page = await browser.get("/apps")
    assert "2 delivered" in page
    assert "0 failed" in page
    assert "Attempts: 2 ok, 2 failed" in page
    assert "retrying" not in page.lower()
    summary = re.search(r'data-testid="account-summary">(.*?)</p>', page, re.S)
    assert summary is not None
    assert "2 records delivered" in summary.group(1)
    assert "1 waiting now" in summary.group(1)
    assert "Attempts in the last 24 h: 2 ok, 2 failed." in page
    clock.advance(timedelta(days=1, minutes=1))
    assert "No pushes" in await browser.get("/apps")
    overview = await browser.get(f"/apps/{world.app_a}/overview")
    assert "records delivered" in overview
    assert "Records failed" in overview


# Finding a record by its callSessionId


async def test_a_record_is_found_by_its_call_session_id(
    browser: Console, world: World, service: Service
) -> None:
    await send(world, world.app_a, "find-me", "other")
    await browser.sign_in(world.key_a)
    log = f"/apps/{world.app_a}/deliveries"
    found = await browser.get(f"{log}?callSessionId=find-me")
    assert ">find-me<" in found
    assert ">other<" not in found
    assert "No record with that callSessionId" not in found
    missing = await browser.get(f"{log}?callSessionId=nobody")
    assert "No record with that callSessionId" in missing
    assert "No deliveries match these filters" in missing

    jump = await browser.client.get("/console/apps", params={"callSessionId": " find-me "})
    assert jump.status_code == 303
    assert jump.headers["location"] == f"/console{log}?callSessionId=find-me"
    for sought in ("nobody", "nul\x00inside", "x" * 300):
        page = await browser.get("/apps?" + urlencode({"callSessionId": sought}))
        assert "No record with that callSessionId" in page
    await browser.post("/sign-out")
    await browser.sign_in(ADMIN)  # the operator searches the account on screen
    await browser.post("/account", {"account": world.account_b})
    other_account = await browser.get("/apps?callSessionId=find-me")
    assert "No record with that callSessionId" in other_account


async def test_a_record_in_several_apps_lists_them(
    browser: Console, world: World, service: Service
) -> None:
    async with world.api.client(world.key_a) as client:
        body = {"name": "Acme sales", "accountId": world.account_a}
        second = (await ok(await client.post("/v1/apps", json=body), 201))["id"]
    await send(world, world.app_a, "shared")
    await send(world, second, "shared")
    await browser.sign_in(world.key_a)
    page = await browser.get("/apps?callSessionId=shared")
    hits = re.search(r'data-testid="record-hits">(.*?)</div>', page, re.S)
    assert hits is not None
    assert "Acme support" in hits.group(1)
    assert "Acme sales" in hits.group(1)
    assert f"/apps/{second}/deliveries?callSessionId=shared" in hits.group(1)


# Accounts and keys


async def test_the_operator_adds_an_account_and_its_keys(
    browser: Console, world: World, service: Service
) -> None:
    await browser.sign_in(ADMIN)
    accounts = await browser.get("/accounts")
    assert "Acme" in accounts
    assert "Globex" in accounts
    refused = await browser.post("/accounts", {"name": " "})
    assert refused.status_code == 422
    assert "Enter a name" in refused.text
    created = await browser.post("/accounts", {"name": "Initech"})
    location = created.headers["location"]
    [account] = [a for a in await service.store.list_accounts() if a.name == "Initech"]
    assert location == f"/console/accounts/{account.id}/keys?notice=account-created"
    await browser.get(location.removeprefix("/console"))
    made = await browser.post(f"/accounts/{account.id}/keys", {"name": "CRM", "scope": "manage"})
    assert made.status_code == 200
    [secret] = re.findall(r'value="(ccpk_[^"]+)"', made.text)
    assert "shown only this once" in made.text
    [key] = await service.store.list_keys(account.id)
    assert key.prefix in made.text
    assert secret not in await browser.get(f"/accounts/{account.id}/keys")  # once only
    async with world.api.client(secret) as client:
        assert (await client.get(f"/v1/accounts/{account.id}")).status_code == 200
        revoked = await browser.post(f"/accounts/{account.id}/keys/{key.id}/revoke")
        assert revoked.headers["location"].endswith("?notice=key-revoked")
        assert (await client.get(f"/v1/accounts/{account.id}")).status_code == 401
    assert "Revoked" in await browser.get(f"/accounts/{account.id}/keys")
    for bad in ({"name": "", "scope": "manage"}, {"name": "x", "scope": "root"}):
        response = await browser.post(f"/accounts/{account.id}/keys", bad)
        assert response.status_code == 422
    assert len(await service.store.list_keys(account.id)) == 1


async def test_platform_keys_only_send_records(
    browser: Console, world: World, service: Service
) -> None:
    await browser.sign_in(ADMIN)
    made = await browser.post("/platform-keys", {"name": "Call center", "scope": "manage"})
    [secret] = re.findall(r'value="(ccpk_[^"]+)"', made.text)
    [key] = await service.store.list_keys(None)
    assert key.scope == "ingest"  # whatever the form said
    records = [minimal_record("via-platform")]
    async with world.api.client(secret) as client:
        path = f"/v1/apps/{world.app_b}/call-records"
        assert (await client.post(path, json=records)).status_code == 202
        await browser.post(f"/platform-keys/{key.id}/revoke")
        assert (await client.post(path, json=records)).status_code == 401
    assert "Revoked" in await browser.get("/platform-keys")


async def test_a_manage_key_sees_only_its_own_accounts_keys(
    browser: Console, world: World, service: Service
) -> None:
    await browser.sign_in(world.key_a)
    page = await browser.get(f"/accounts/{world.account_a}/keys")
    assert "signed in with it" in page
    made = await browser.post(
        f"/accounts/{world.account_a}/keys", {"name": "CI", "scope": "ingest"}
    )
    assert made.status_code == 200
    [key_b] = await service.store.list_keys(world.account_b)
    for path in ("/accounts", "/platform", "/platform-keys", f"/accounts/{world.account_b}/keys"):
        assert "Globex" not in await browser.get(path, 404)
    for path in (f"/accounts/{world.account_b}/keys/{key_b.id}/revoke", "/platform-keys"):
        assert (await browser.post(path, {"name": "x"})).status_code == 404
    assert (await browser.post("/accounts", {"name": "Mine"})).status_code == 404
    assert (await service.store.list_keys(world.account_b))[0].revoked_at is None
    await browser.post(f"/accounts/{world.account_a}/keys/{world.key_a_id}/revoke")
    await browser.get("/apps", 303)  # its own key revoked: signed out


# The signing secret


async def test_the_signing_secret_is_hidden_revealed_and_rotated(
    browser: Console, world: World, service: Service, clock: ManualClock
) -> None:
    secret = (await service.store.signing_keys(world.app_a)).current
    assert secret is not None
    await browser.sign_in(world.key_a)
    settings = f"/apps/{world.app_a}"
    assert secret not in await browser.get(settings)
    assert secret in await browser.get(settings + "?secret=shown")
    htmx = {"HX-Request": "true"}
    fragment = await browser.client.get(f"/console{settings}/signing-secret", headers=htmx)
    assert secret in fragment.text
    assert "<html" not in fragment.text
    hidden = await browser.client.get(
        f"/console{settings}/signing-secret?shown=false", headers=htmx
    )
    assert secret not in hidden.text
    assert "Reveal" in hidden.text
    page = await browser.get(settings)
    until = re.escape(shown(clock.now() + timedelta(days=1), service))
    assert re.search(f"overlap of 1 day, until <time [^>]+>{until}</time>", page)
    assert (await browser.post(f"/apps/{world.app_b}/signing-secret/rotate")).status_code == 404
    rotated = await browser.post(f"{settings}/signing-secret/rotate")
    location = rotated.headers["location"]
    assert location.startswith(f"/console{settings}?notice=rotated&secret=shown")
    keys = await service.store.signing_keys(world.app_a)
    assert (keys.previous, keys.current != secret) == (secret, True)
    assert keys.current is not None
    page = await browser.get(location.removeprefix("/console"))
    assert "A new signing secret was made" in page
    assert keys.current in page
    assert secret not in page
    assert re.search(f"The previous secret signs pushes too until <time [^>]+>{until}<", page)


# The operator's overview


async def test_the_platform_overview_shows_the_apps_failing_and_lagging_most(
    browser: Console, world: World, service: Service, receiver: Receiver, clock: ManualClock
) -> None:
    receiver.responder = always(500)
    await send(world, world.app_a, "bad1", "bad2")
    await service.dispatcher.run_until_idle()
    async with world.api.client(ADMIN) as admin:
        body = {"name": "Globex slow line", "pushUrl": receiver.url, "accountId": world.account_b}
        slow = (await ok(await admin.post("/v1/apps", json=body), 201))["id"]
        records = [minimal_record("late1"), minimal_record("late2")]
        await ok(await admin.post(f"/v1/apps/{slow}/call-records", json=records), 202)
    clock.advance(timedelta(minutes=12))
    await browser.sign_in(ADMIN)
    page = await browser.get("/platform")
    failing = re.search(r'data-testid="failing">(.*?)</table>', page, re.S)
    lagging = re.search(r'data-testid="lagging">(.*?)</table>', page, re.S)
    assert failing is not None
    assert lagging is not None
    assert "Acme support" in failing.group(1)
    assert "0 ok, 2 failed" in failing.group(1)
    assert "Globex slow line" in lagging.group(1)
    assert "12 min" in lagging.group(1)
    assert "Acme support" not in lagging.group(1)  # its retries are due in 30 min: not late
    by_account = re.search(r'data-testid="by-account">(.*?)</table>', page, re.S)
    assert by_account is not None
    assert "Globex" in by_account.group(1)
    assert "records waiting" in page


async def test_the_platform_overview_tells_retries_from_late_records_and_shows_held_hosts(
    browser: Console, world: World, service: Service, receiver: Receiver, clock: ManualClock
) -> None:
    receiver.responder = always(500)
    await send(world, world.app_a, "retry1")
    await service.dispatcher.run_until_idle()
    async with world.api.client(ADMIN) as admin:
        body = {"name": "Globex slow line", "pushUrl": receiver.url, "accountId": world.account_b}
        slow = (await ok(await admin.post("/v1/apps", json=body), 201))["id"]
        await ok(await admin.post(f"/v1/apps/{slow}/call-records", json=[minimal_record("l")]), 202)
    clock.advance(timedelta(minutes=12))
    held = "https://user:hidden-pw@crm.example.com"
    service.dispatcher.host_limits.record(held, Signal.BACK_OFF, 0.2, time.monotonic(), 60.0)
    await browser.sign_in(ADMIN)
    page = await browser.get("/platform")
    waiting = re.search(r'data-testid="waiting-longest">(.*?)</table>', page, re.S)
    assert waiting is not None
    acme, globex = (
        re.search(f"{name}.*?</tr>", waiting.group(1), re.S) for name in ("Acme", "Globex")
    )
    assert acme is not None
    assert globex is not None
    assert "12 min" in acme.group(0)
    assert "not yet: retries wait for their time" in acme.group(0)  # due in 18 min
    assert "not yet" not in globex.group(0)  # due 12 min ago: late
    throttled = re.search(r'data-testid="throttled">(.*?)</table>', page, re.S)
    assert throttled is not None
    assert "https://crm.example.com" in throttled.group(1)
    assert "asked to back off" in throttled.group(1)
    assert "hidden-pw" not in page


# Signing out across processes


async def test_signing_out_on_one_process_ends_the_session_on_another(
    browser: Console, world: World, tmp_path: Path, db_url: str, clock: ManualClock
) -> None:
    other = make_service(tmp_path, db_url, clock)  # another `serve` on the same store
    await other.store.open()
    try:
        await browser.sign_in(world.key_a)
        copied_cookies = httpx.Cookies(browser.client.cookies)
        async with client_with(Api(other), copied_cookies) as elsewhere:
            assert (await elsewhere.get("/console/apps")).status_code == 200
            await browser.post("/sign-out")
            refused = await elsewhere.get("/console/apps")
            assert refused.headers["location"] == "/console/sign-in"
        assert await other.store.console_session_ended(session_in_cookies(copied_cookies))
    finally:
        await other.store.close()


def session_in_cookies(cookies: httpx.Cookies) -> str:
    serializer = URLSafeTimedSerializer("not the secret", salt="ccpush-console-session")
    _, data = serializer.loads_unsafe(cookies["ccpush_console"])
    return str(data["sid"])
