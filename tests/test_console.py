"""The web console in a real browser: Playwright drives Debian's Chromium (``/usr/bin/chromium``,
installed by ``.ci/run``, never a downloaded browser) against ccpush served on loopback, which
pushes to receivers on loopback. No sleeps: every wait is on something the page shows."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from ccpush.api.auth import display_prefix, hash_secret, new_key_secret
from ccpush.app import create_app
from ccpush.models import KeyScope
from ccpush.service import Service
from tests.api_client import ADMIN
from tests.conftest import IN_CI, minimal_record
from tests.helpers import make_service
from tests.receiver import Receiver, always
from tests.served import ServerThread

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 390, "height": 844}

# Apps by name: (account, receiver at the address, or None for no address).
APPS = {
    "Support line": ("acme", None),
    "Billing line": ("acme", "billing"),
    "Collections line": ("acme", "collections"),
    "Globex secret line": ("globex", "globex"),
}


@dataclass
class Site:
    """What the served ccpush holds; filled in by its thread before it serves."""

    url: str = ""
    keys: dict[str, str] = field(default_factory=dict)
    apps: dict[str, str] = field(default_factory=dict)
    receivers: dict[str, Receiver] = field(default_factory=dict)


async def seed(service: Service, site: Site) -> None:
    store, now = service.store, service.clock.now()
    accounts = {
        "acme": (await store.create_account(name="Acme", now=now)).id,
        "globex": (await store.create_account(name="Globex", now=now)).id,
    }
    for name, account, scope in (
        ("acme", "acme", KeyScope.MANAGE),
        ("globex", "globex", KeyScope.MANAGE),
        ("acme-ingest", "acme", KeyScope.INGEST),
    ):
        secret = new_key_secret()
        await store.create_key(
            account_id=accounts[account],
            name=name,
            scope=scope,
            secret_hash=hash_secret(secret),
            prefix=display_prefix(secret),
            now=now,
        )
        site.keys[name] = secret
    for name, (account, receiver) in APPS.items():
        url = site.receivers[receiver].url if receiver else None
        app = await store.create_app(name=name, push_url=url, now=now, account_id=accounts[account])
        site.apps[name] = app.id


def serving(tmp_path: Path, site: Site) -> Any:
    """ccpush with its dispatcher, no retries (a refused push fails at once), and receivers."""

    @asynccontextmanager
    async def factory() -> AsyncIterator[Any]:
        db = f"sqlite:///{tmp_path / 'console.db'}"
        service = make_service(tmp_path, db, retry_schedule="", poll_interval=0.1)
        site.receivers = {
            "good": Receiver(),
            "billing": Receiver(always(500)),
            "collections": Receiver(always(500)),
            "globex": Receiver(),
        }
        for receiver in site.receivers.values():
            await receiver.start()
        await service.start()
        try:
            await seed(service, site)
            yield create_app(service, admin_token=ADMIN)
        finally:
            await service.stop()
            for receiver in site.receivers.values():
                await receiver.stop()

    return factory


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    site = Site()
    with ServerThread(serving(tmp_path_factory.mktemp("console"), site)) as server:
        site.url = server.url
        yield site


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    expect.set_options(timeout=10_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Page]:
    context = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 800})
    yield context.new_page()
    context.close()


def sign_in(page: Page, token: str) -> None:
    page.goto("/console/sign-in")
    page.get_by_label("API key").fill(token)
    page.get_by_role("button", name="Sign in").click()


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def open_app(page: Page, name: str, tab: str = "Settings") -> None:
    page.goto("/console/apps")
    page.get_by_role("link", name=f"Manage {name}").click()
    page.get_by_role("navigation", name=name).get_by_role("link", name=tab).click()


def ingest(site: Site, app: str, *session_ids: str) -> None:
    response = httpx.post(
        f"{site.url}/v1/apps/{site.apps[app]}/call-records",
        json=[minimal_record(sid) for sid in session_ids],
        headers={"Authorization": f"Bearer {site.keys['acme-ingest']}"},
    )
    assert response.status_code == 202, response.text


def open_delivery(page: Page, app: str, session_id: str) -> None:
    open_app(page, app, "Delivery log")
    page.get_by_role("row").filter(has_text=session_id).get_by_role("link").first.click()


def test_sign_in_set_an_address_and_see_a_test_push_arrive(page: Page, site: Site) -> None:
    sign_in(page, site.keys["acme"])
    expect(page.get_by_role("heading", name="Voice Application Management")).to_be_visible()
    open_app(page, "Support line")
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_contain_text("No address")
    address = page.get_by_label("Push address", exact=True)
    address.fill("ftp://crm.example.com/cdr")
    page.get_by_role("button", name="Set address").click()
    expect(page.get_by_role("alert")).to_contain_text("must start with http:// or https://")
    expect(page.get_by_label("Push address", exact=True)).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Push address", exact=True).fill(site.receivers["good"].url)
    page.get_by_role("button", name="Set address").click()
    expect(page.get_by_text("The push address was saved")).to_be_visible()
    expect(heading).to_contain_text("Pushing")

    settings_url = page.url
    page.get_by_role("button", name="Send test push").click()
    outcome = page.get_by_test_id("test-outcome")
    expect(outcome).to_contain_text("Delivered")
    expect(outcome).to_contain_text("HTTP 200")
    expect(outcome).to_contain_text(" ms")
    expect(outcome).to_contain_text("UTC+08:00")
    assert page.url == settings_url  # shown in place, by htmx
    assert site.receivers["good"].pushes[-1].headers["ccpush-test"] == "true"

    page.get_by_role("button", name="Pause pushing").click()
    expect(heading).to_contain_text("Paused")
    page.get_by_role("button", name="Resume pushing").click()
    expect(heading).to_contain_text("Pushing")
    page.get_by_role("button", name="Clear address").click()
    expect(heading).to_contain_text("No address")
    expect(page.get_by_role("button", name="Send test push")).to_be_disabled()


def test_a_failed_delivery_is_seen_resent_and_delivered(page: Page, site: Site) -> None:
    ingest(site, "Billing line", "bill-1")
    sign_in(page, site.keys["acme"])
    open_delivery(page, "Billing line", "bill-1")
    status = page.get_by_test_id("delivery-status")
    expect(page.get_by_test_id("delivery-state")).to_have_text("Failed")  # the page follows it
    expect(status).to_contain_text("HTTP 500")
    expect(page.get_by_role("region", name="Pushed JSON")).to_contain_text(
        '"callSessionId": "bill-1"'
    )

    open_app(page, "Billing line", "Delivery log")
    page.get_by_label("State", exact=True).select_option("failed")
    page.get_by_role("button", name="Apply").click()
    failed = page.get_by_role("row").filter(has_text="bill-1")
    expect(failed).to_contain_text("Failed")
    expect(failed).to_contain_text("HTTP 500")
    failed.get_by_role("link").first.click()

    site.receivers["billing"].responder = always(200)
    page.get_by_role("button", name="Resend").click()
    expect(page.get_by_text("The record is being pushed again")).to_be_visible()
    expect(page.get_by_test_id("delivery-state")).to_have_text("Delivered")
    expect(status).to_contain_text("HTTP 200")
    expect(page.get_by_role("heading", name="Deliveries of this record")).to_be_visible()
    expect(page.locator(".history li")).to_have_count(2)


def test_replay_failed_since_shows_live_progress(page: Page, site: Site) -> None:
    ingest(site, "Collections line", "coll-1", "coll-2")
    sign_in(page, site.keys["acme"])
    for session_id in ("coll-1", "coll-2"):
        open_delivery(page, "Collections line", session_id)
        expect(page.get_by_test_id("delivery-state")).to_have_text("Failed")
    site.receivers["collections"].responder = always(200)
    open_app(page, "Collections line", "Delivery log")
    expect(page.get_by_label("Failed since")).not_to_have_value("")
    page.get_by_role("button", name="Replay failed since").click()
    progress = page.get_by_test_id("replay-progress")
    expect(progress).to_contain_text("Replay finished")
    expect(progress).to_contain_text("2 delivered")
    expect(progress).to_contain_text("0 failed")


def test_account_a_never_sees_account_b(page: Page, site: Site, browser: Browser) -> None:
    sign_in(page, site.keys["acme"])
    expect(page.get_by_role("link", name="Manage Support line")).to_be_visible()
    expect(page.get_by_text("Globex")).to_have_count(0)
    secret = site.apps["Globex secret line"]
    for path in ("", "/deliveries", "/overview"):
        page.goto(f"/console/apps/{secret}{path}")
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        expect(page.get_by_text("Globex")).to_have_count(0)

    sign_out(page)
    sign_in(page, site.keys["globex"])
    expect(page.get_by_role("link", name="Manage Globex secret line")).to_be_visible()
    expect(page.get_by_text("Support line")).to_have_count(0)

    sign_out(page)
    sign_in(page, ADMIN)
    page.get_by_label("Account", exact=True).select_option(label="Globex")
    page.get_by_role("button", name="Switch").click()
    expect(page.get_by_role("link", name="Manage Globex secret line")).to_be_visible()
    expect(page.get_by_text("Billing line")).to_have_count(0)


def test_an_ingest_key_cannot_sign_in(page: Page, site: Site) -> None:
    sign_in(page, site.keys["acme-ingest"])
    expect(page.get_by_role("alert")).to_contain_text("may only send call records")
    page.goto("/console/apps")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_pages_fit_a_phone_and_label_every_field(page: Page, site: Site) -> None:
    sign_in(page, site.keys["acme"])
    page.set_viewport_size(PHONE)
    app = site.apps["Billing line"]
    keys = page.get_by_role("link", name="API keys").get_attribute("href")
    assert keys is not None
    for path in ("/apps", f"/apps/{app}", f"/apps/{app}/deliveries", f"/apps/{app}/overview"):
        page.goto("/console" + path)
        expect(page.get_by_role("main")).to_be_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{path} is {width}px wide"
        assert unlabelled_fields(page) == [], path
    page.goto(keys)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert unlabelled_fields(page) == []


def unlabelled_fields(page: Page) -> list[str]:
    return list(
        page.evaluate(
            """[...document.querySelectorAll('input:not([type=hidden]), select')]
               .filter(field => field.labels.length === 0 && !field.getAttribute('aria-label'))
               .map(field => field.name)"""
        )
    )


SHOWN_TIME = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\+08:00$"
"""How every time is shown, and typed, in the console (the tests' zone is +08:00)."""


def test_the_signing_secret_is_revealed_copied_and_rotated(page: Page, site: Site) -> None:
    sign_in(page, site.keys["acme"])
    open_app(page, "Support line")
    card = page.get_by_role("region", name="Signing secret")
    expect(card).not_to_contain_text("whsec_" + "A")  # only the mask: no secret in the page
    secret = card.get_by_label("Current secret")
    expect(secret).to_have_count(0)
    card.get_by_role("button", name="Reveal").click()
    expect(secret).to_have_value(re.compile(r"^whsec_\S{20,}$"))
    first = secret.input_value()

    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    card.get_by_role("button", name="Copy").click()
    expect(card.get_by_role("status")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == first
    page.evaluate("Object.defineProperty(navigator, 'clipboard', {value: undefined})")
    card.get_by_role("button", name="Copy").click()  # no clipboard API: the text is selected
    expect(card.get_by_role("status")).to_contain_text("press Ctrl+C")
    selected = "(({id, selectionStart, selectionEnd}) => [id, selectionStart, selectionEnd])"
    assert page.evaluate(selected + "(document.activeElement)") == ["secret-value", 0, len(first)]

    card.get_by_text("Rotate secret…").click()
    expect(card).to_contain_text("For an overlap of 1 day, until")
    card.get_by_role("button", name="Rotate the secret").click()
    expect(page.get_by_text("A new signing secret was made")).to_be_visible()
    expect(secret).not_to_have_value(first)
    expect(secret).to_have_value(re.compile(r"^whsec_"))
    expect(card).to_contain_text("The previous secret signs pushes too until")
    card.get_by_role("button", name="Hide").click()
    expect(secret).to_have_count(0)


def test_a_record_is_found_by_its_call_session_id(page: Page, site: Site) -> None:
    ingest(site, "Support line", "find-me-1", "find-me-2")
    sign_in(page, site.keys["acme"])
    page.get_by_label("Find a record by callSessionId").fill("find-me-2")
    page.get_by_role("button", name="Find").click()
    expect(page.get_by_role("heading", name="Deliveries of find-me-2")).to_be_visible()
    expect(page.get_by_role("row").filter(has_text="find-me-2")).to_have_count(1)
    expect(page.get_by_role("row").filter(has_text="find-me-1")).to_have_count(0)
    page.get_by_label("Find a record by callSessionId").fill("nobody-called")
    page.get_by_role("button", name="Find").click()
    expect(page.get_by_test_id("no-record")).to_have_text(
        "No record with that callSessionId: nobody-called"
    )
    page.goto("/console/apps")
    page.get_by_label("Find a record by callSessionId").fill("nobody-called")
    page.get_by_role("button", name="Find").click()
    expect(page.get_by_test_id("no-record")).to_be_visible()


def test_times_are_shown_and_typed_alike(page: Page, site: Site) -> None:
    ingest(site, "Support line", "timed-1")
    sign_in(page, site.keys["acme"])
    open_app(page, "Support line", "Delivery log")
    row = page.get_by_role("row").filter(has_text="timed-1")
    created = row.locator("time").inner_text()
    assert re.match(SHOWN_TIME, created), created
    expect(page.get_by_label("Failed since")).to_have_value(re.compile(SHOWN_TIME))
    page.get_by_label("Created from").fill(created)  # a time copied from the page
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_label("Created from")).to_have_value(created)
    expect(page.get_by_role("row").filter(has_text="timed-1")).to_have_count(1)
    page.get_by_label("Created from").fill("next Tuesday")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("alert")).to_contain_text("Created from is not a date and time.")


def test_the_operator_adds_an_account_and_a_key_shown_once(
    page: Page, site: Site, browser: Browser
) -> None:
    sign_in(page, ADMIN)
    page.get_by_role("link", name="Accounts", exact=True).click()
    page.get_by_label("Name").fill("Initech")
    page.get_by_role("button", name="Add account").click()
    expect(page.get_by_text("The account was added")).to_be_visible()
    page.get_by_label("Name").fill("CRM")
    page.get_by_label("May").select_option("manage")
    page.get_by_role("button", name="Make key").click()
    made = page.get_by_test_id("new-key")
    expect(made).to_contain_text("shown only this once")
    secret = made.get_by_label("Secret of CRM").input_value()
    assert secret.startswith("ccpk_")

    other = browser.new_context(base_url=site.url).new_page()
    sign_in(other, secret)
    expect(other.get_by_text("No voice applications yet")).to_be_visible()
    expect(other.get_by_text("Initech")).to_be_visible()
    other.context.close()

    page.goto(page.url)  # the keys' page again: the secret is not shown again
    expect(page.get_by_test_id("new-key")).to_have_count(0)
    keys = page.get_by_test_id("keys")
    keys.get_by_text("Revoke…").click()
    keys.get_by_role("button", name="Revoke CRM").click()
    expect(page.get_by_text("The key was revoked")).to_be_visible()
    expect(keys.get_by_role("row").filter(has_text="CRM")).to_contain_text("Revoked")

    page.get_by_role("link", name="Platform keys").click()
    page.get_by_label("Name").fill("Call center")
    page.get_by_role("button", name="Make key").click()
    expect(page.get_by_test_id("new-key").get_by_label("Secret of Call center")).to_have_value(
        re.compile(r"^ccpk_")
    )
    expect(page.get_by_test_id("keys")).to_contain_text("ingest only")


def test_the_operator_sees_every_account_at_once(page: Page, site: Site) -> None:
    ingest(site, "Billing line", "platform-1")
    sign_in(page, ADMIN)
    page.get_by_role("link", name="Overview of all accounts").click()
    expect(page.get_by_role("heading", name="Overview of all accounts", level=1)).to_be_visible()
    by_account = page.get_by_test_id("by-account")
    expect(by_account.get_by_role("row").filter(has_text="Acme")).to_be_visible()
    expect(by_account.get_by_role("row").filter(has_text="Globex")).to_be_visible()
    last_day = page.get_by_role("region", name="Last 24 hours", exact=True)
    expect(last_day).to_contain_text("records delivered")
    by_account.get_by_role("button", name="Applications of Globex").click()
    expect(page.get_by_role("link", name="Manage Globex secret line")).to_be_visible()


def test_the_operators_pages_fit_a_phone_and_label_every_field(page: Page, site: Site) -> None:
    sign_in(page, ADMIN)
    page.set_viewport_size(PHONE)
    page.goto("/console/accounts")
    keys = page.get_by_role("link", name="Keys of Acme").get_attribute("href")
    assert keys is not None
    for path in ("/console/platform", "/console/accounts", "/console/platform-keys", keys):
        page.goto(path)
        expect(page.get_by_role("main")).to_be_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{path} is {width}px wide"
        assert unlabelled_fields(page) == [], path
