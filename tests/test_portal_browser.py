"""The console inside another site's page, in a real browser: Playwright drives Debian's
Chromium against ccpush served over HTTPS (a trustme certificate) on one origin, and a
platform's page on another origin (another site: 127.0.0.1, the console being localhost)
that shows a portal link in an ``<iframe>``. No sleeps: every wait is on the page."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from playwright.sync_api import Browser, Frame, Page, expect

from ccpush.app import create_app
from ccpush.clock import ManualClock
from ccpush.http_server import server_config
from tests import test_console
from tests.api_client import ADMIN
from tests.helpers import make_service
from tests.receiver import Receiver
from tests.served import ServerThread, _Server

pytestmark = pytest.mark.slow

browser = test_console.browser  # the console tests' Chromium, the same fixture

PRODUCT = "Acme Cloud Voice"


class Platform:
    """The platform's own site: an HTTPS server on 127.0.0.1 answering every path with
    ``page``, in a thread."""

    def __init__(self, cert: trustme.LeafCert, tmp_path: Path) -> None:
        self.page = ""
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = outer.page.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def embedding(self, link: str) -> str:
        """The platform's page, showing ``link`` in a frame."""
        self.page = (
            "<!doctype html><html><head><title>Acme Cloud</title></head><body>"
            "<h1>Acme Cloud: call records</h1>"
            f'<iframe id="push" title="Push settings" src="{escape(link)}"'
            ' width="1100" height="700"></iframe></body></html>'
        )
        return self.origin + "/numbers"


class HttpsServerThread(ServerThread):
    """``ServerThread`` over HTTPS with ``cert``, at https://localhost."""

    def __init__(self, app_factory: Any, cert_path: Path) -> None:
        super().__init__(app_factory)
        self.cert_path = cert_path

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    async def _main(self) -> None:
        async with self.app_factory() as app:
            config = server_config(app, self.settings)
            config.ssl_certfile = str(self.cert_path)  # the key and the chain, in one file
            self.server = _Server(config, self.ready)
            await self.server.serve()


@dataclass
class Site:
    """The served console and what it holds; filled in by its thread before it serves."""

    clock: ManualClock
    url: str = ""
    accounts: dict[str, str] = field(default_factory=dict)
    apps: dict[str, str] = field(default_factory=dict)
    receiver: Receiver | None = None


@dataclass(frozen=True)
class World:
    site: Site
    platform: Platform
    ca_path: Path

    def issue(self, **body: Any) -> str:
        """A portal link of Acme's, as the platform's back end asks for it."""
        response = httpx.post(
            f"{self.site.url}/v1/accounts/{self.site.accounts['Acme']}/portal-links",
            json=body,
            headers={"Authorization": f"Bearer {ADMIN}"},
            verify=ssl.create_default_context(cafile=str(self.ca_path)),
        )
        assert response.status_code == 201, response.text
        url: str = response.json()["url"]
        return url


def serving(tmp_path: Path, site: Site, frame_ancestors: str) -> Any:
    @asynccontextmanager
    async def factory() -> AsyncIterator[Any]:
        service = make_service(
            tmp_path,
            f"sqlite:///{tmp_path / 'portal.db'}",
            site.clock,
            console_frame_ancestors=frame_ancestors,
            console_product_name=PRODUCT,
            console_accent="#0a7f5a",
        )
        site.receiver = await Receiver().start()
        await service.start(dispatch=False)
        try:
            store, now = service.store, site.clock.now()
            for name in ("Acme", "Globex"):
                site.accounts[name] = (await store.create_account(name=name, now=now)).id
            for name, account in (
                ("Support line", "Acme"),
                ("Billing line", "Acme"),
                ("Globex secret line", "Globex"),
            ):
                app = await store.create_app(
                    name=name, push_url=None, now=now, account_id=site.accounts[account]
                )
                site.apps[name] = app.id
            yield create_app(service, admin_token=ADMIN)
        finally:
            await service.stop()
            await site.receiver.stop()

    return factory


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp_path = tmp_path_factory.mktemp("portal")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_path, ca_path = tmp_path / "console.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    ca.cert_pem.write_to_path(str(ca_path))
    platform = Platform(cert, tmp_path)
    platform.thread.start()
    site = Site(ManualClock(datetime(2026, 3, 1, 8, 0, tzinfo=UTC)))
    try:
        with HttpsServerThread(serving(tmp_path, site, platform.origin), cert_path) as server:
            site.url = server.url
            yield World(site, platform, ca_path)
    finally:
        platform.server.shutdown()
        platform.server.server_close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    # The test's own CA is not the system's: this browser accepts the test's certificates.
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def embedded(page: Page, world: World, link: str) -> Frame:
    """Open the platform's page showing ``link``; the console's frame."""
    page.goto(world.platform.embedding(link))
    expect(page.get_by_role("heading", name="Acme Cloud: call records")).to_be_visible()
    frame = page.frame_locator("#push")
    expect(frame.locator("main")).to_be_visible()
    [console] = page.main_frame.child_frames
    return console


def test_the_customer_sets_the_address_and_sends_a_test_push_inside_the_frame(
    page: Page, world: World
) -> None:
    site, receiver = world.site, world.site.receiver
    assert receiver is not None
    link = world.issue(appId=site.apps["Support line"], expiresIn=600)
    frame = page.frame_locator("#push")
    console = embedded(page, world, link)
    assert console.url.startswith(f"{site.url}/console/apps/{site.apps['Support line']}")
    expect(frame.get_by_role("heading", level=1)).to_contain_text("Support line")
    expect(frame.locator(".brand")).to_have_text(PRODUCT)
    assert console.title() == f"Support line · Settings · {PRODUCT}"
    expect(frame.get_by_text("ccpush console")).to_have_count(0)

    frame.get_by_label("Push address", exact=True).fill(receiver.url)
    frame.get_by_role("button", name="Set address").click()
    expect(frame.get_by_text("The push address was saved")).to_be_visible()
    frame.get_by_role("button", name="Send test push").click()
    outcome = frame.get_by_test_id("test-outcome")
    expect(outcome).to_contain_text("Delivered")
    expect(outcome).to_contain_text("HTTP 200")
    assert receiver.pushes[-1].headers["ccpush-test"] == "true"

    # The session is confined to its app: another app of the account, another account's.
    for other in ("Billing line", "Globex secret line"):
        console.goto(f"{site.url}/console/apps/{site.apps[other]}")
        expect(frame.get_by_role("heading", name="Not found")).to_be_visible()
        expect(frame.get_by_text(other)).to_have_count(0)
    console.goto(f"{site.url}/console/accounts/{site.accounts['Acme']}/keys")
    expect(frame.get_by_role("heading", name="Not found")).to_be_visible()

    # The same link again, in the same browser: refused, and the session ends.
    console = embedded(page, world, link)
    expect(frame.get_by_role("heading", name="Link expired")).to_be_visible()
    expect(frame.get_by_text("already been used")).to_be_visible()
    console.goto(f"{site.url}/console/apps/{site.apps['Support line']}")
    expect(frame.get_by_role("heading", name="Sign in")).to_be_visible()


def test_a_link_is_refused_a_second_time_in_another_browser_and_after_it_expires(
    page: Page, browser: Browser, world: World
) -> None:
    site = world.site
    link = world.issue(expiresIn=600)
    embedded(page, world, link)
    frame = page.frame_locator("#push")
    expect(frame.get_by_role("heading", name="Voice Application Management")).to_be_visible()
    expect(frame.get_by_text("Billing line")).to_be_visible()
    expect(frame.get_by_text("Globex secret line")).to_have_count(0)

    other = browser.new_context(ignore_https_errors=True).new_page()
    try:
        embedded(other, world, link)
        again = other.frame_locator("#push")
        expect(again.get_by_role("heading", name="Link expired")).to_be_visible()

        late = world.issue(expiresIn=60)
        site.clock.advance(timedelta(seconds=61))
        embedded(other, world, late)
        expect(again.get_by_role("heading", name="Link expired")).to_be_visible()
    finally:
        other.context.close()


def test_a_site_not_named_may_not_show_the_console_in_a_frame(page: Page, world: World) -> None:
    link = world.issue(expiresIn=600)
    page.goto(world.site.url + "/healthz")  # a page of another origin, the console's own
    with page.expect_response(lambda response: "/console/apps" in response.url) as answer:
        page.set_content(f'<iframe id="push" src="{escape(link)}"></iframe>')
    policy = answer.value.headers["content-security-policy"]
    assert f"frame-ancestors {world.platform.origin};" in policy
    [frame] = page.main_frame.child_frames
    frame.wait_for_load_state()
    # The console answered, but Chromium shows its error page instead in a frame its CSP refuses.
    assert frame.url.startswith("chrome-error://")
    expect(page.frame_locator("#push").locator("main")).to_have_count(0)
