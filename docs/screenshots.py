"""Screenshots of the web console for the README.

    .venv/bin/python -m docs.screenshots        # from the repository root

Serves ccpush on loopback with a week of simulated pushes to two accounts (a temporary
SQLite store, the clock moved by hand, receivers on 127.0.0.1 that refuse some pushes and
are down for two hours one afternoon, and a few records of the last minutes not pushed
yet), then photographs the main pages with Debian's Chromium (``/usr/bin/chromium``) into
``docs/screenshots/``: an account's pages and the operator's, at laptop width, and one at
phone width.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright
from tests.api_client import ADMIN
from tests.fakedns import FakeDNS
from tests.helpers import make_settings
from tests.receiver import Push, Receiver, Reply
from tests.served import ServerThread

from ccpush.api.auth import display_prefix, hash_secret, new_key_secret
from ccpush.app import create_app
from ccpush.clock import ManualClock
from ccpush.demo import RecordFactory
from ccpush.models import KeyScope, NewRecord
from ccpush.record import CallRecord
from ccpush.service import Service
from ccpush.settings import Settings
from ccpush.store.base import DeliveryFilter
from ccpush.wire import DEFAULT_ZONE, TIME_FORMAT, parse_zone

OUT = Path(__file__).parent / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ZONE = parse_zone(DEFAULT_ZONE)
NOW = datetime(2026, 3, 9, 10, 20, tzinfo=ZONE)
STEP = timedelta(minutes=30)
OUTAGE = (datetime(2026, 3, 7, 14, 0, tzinfo=ZONE), datetime(2026, 3, 7, 16, 10, tzinfo=ZONE))
"""When the support line's receiver answers 503 to everything."""
BUSY = (("Support line", 12), ("Sales hotline", 5), ("IVR survey", 1), ("Booking line", 4))
"""The most calls an app gets in half an hour, by day."""
LATE = 7
"""Records of the booking line that arrive in the last minutes, not pushed yet."""


@dataclass
class Seeded:
    """What the pages show, filled in by the server thread before it starts serving."""

    key: str = ""
    apps: dict[str, str] = field(default_factory=dict)
    retried: int = 0
    """A delivery refused twice, then delivered."""


def flaky(clock: ManualClock) -> Any:
    """The support line's receiver: down during the outage, else refuses a few pushes."""

    def reply(push: Push, seen: int) -> Reply:
        if OUTAGE[0] <= clock.now() < OUTAGE[1]:
            return Reply(503, "Service Unavailable")
        bucket = int(hashlib.sha256(push.body).hexdigest()[:6], 16) % 100
        if bucket < 1 or (bucket < 5 and seen < 1) or (bucket < 6 and seen < 2):
            return Reply(500, '{"error": "database is busy"}')
        return Reply(200, '{"status": "received"}')

    return reply


class Simulation:
    """A week of calls from the call center, pushed as the clock moves on by half hours."""

    def __init__(self, service: Service, clock: ManualClock) -> None:
        self.service = service
        self.clock = clock
        self.records = RecordFactory(ZONE, seed=7)
        self.rng = random.Random(7)
        self.count = 0

    def record(self, when: datetime) -> NewRecord:
        """A record from the demo's call center, moved to a call ending at ``when``."""
        data = self.records.make(self.count)
        self.count += 1
        end = datetime.strptime(data["callEndTime"], TIME_FORMAT)
        shift = when.astimezone(ZONE).replace(tzinfo=None) - end
        for name in ("callStartTime", "answerTime", "callEndTime"):
            if data[name]:
                moved = datetime.strptime(data[name], TIME_FORMAT) + shift
                data[name] = moved.strftime(TIME_FORMAT)
        data["callSessionId"] = f"{when.astimezone(ZONE):%y%m%d%H%M%S}{self.count:05d}"
        if data["voiceUrl"]:
            day = f"{when.astimezone(ZONE):%Y%m%d}"
            data["voiceUrl"] = (
                f"https://recordings.example.com/cc/{day}/{data['callSessionId']}.mp3"
            )
        if data["callId"]:
            data["callId"] = f"{when.astimezone(ZONE):%y%m%d%H%M%S}12{self.count:06d}"
        record = CallRecord.model_validate(data)
        return NewRecord(
            call_session_id=record.callSessionId,
            body=record.push_body(),
            call_start=record.call_start(ZONE),
        )

    def calls_in(self, when: datetime, busy: int) -> int:
        hour = when.astimezone(ZONE).hour
        return self.rng.randint(busy // 2, busy) if 8 <= hour < 20 else self.rng.randint(0, 2)

    async def run(self, apps: dict[str, str], start: datetime, end: datetime) -> None:
        store, when = self.service.store, start
        while when < end:
            self.clock.set(when)
            for name, busy in BUSY:
                due = self.calls_in(when, busy)
                if due:
                    batch = [self.record(when) for _ in range(due)]
                    await store.ingest(apps[name], batch, now=when)
            await self.service.dispatcher.run_until_idle()
            when += STEP
        self.clock.set(end)


async def seed(service: Service, clock: ManualClock, seeded: Seeded, urls: list[str]) -> None:
    store, start = service.store, NOW - timedelta(days=7)
    account = await store.create_account(name="Acme Telecom", now=start)
    secret = new_key_secret()
    await store.create_key(
        account_id=account.id,
        name="console",
        scope=KeyScope.MANAGE,
        secret_hash=hash_secret(secret),
        prefix=display_prefix(secret),
        now=start,
    )
    seeded.key = secret
    names = ("Support line", "Sales hotline", "IVR survey")
    for name, url in zip(names, [*urls[:2], None], strict=True):
        app = await store.create_app(name=name, push_url=url, now=start, account_id=account.id)
        seeded.apps[name] = app.id
    travel = await store.create_account(name="Globex Travel", now=start)
    booking = await store.create_app(
        name="Booking line", push_url=urls[2], now=start, account_id=travel.id
    )
    seeded.apps["Booking line"] = booking.id
    simulation = Simulation(service, clock)
    pause_at = NOW - timedelta(hours=5)
    await simulation.run(seeded.apps, start, pause_at)
    await store.update_app(seeded.apps["Sales hotline"], now=pause_at, paused=True)
    await simulation.run(seeded.apps, pause_at, NOW)
    late = [simulation.record(NOW - timedelta(minutes=9)) for _ in range(LATE)]
    await store.ingest(booking.id, late, now=NOW - timedelta(minutes=8))
    seeded.retried = await _retried_delivery(service, seeded.apps["Support line"])


async def _retried_delivery(service: Service, app_id: str) -> int:
    for delivery in await service.store.list_deliveries(app_id, DeliveryFilter(limit=500)):
        if len(delivery.attempt_log) == 3 and delivery.attempt_log[-1].error_kind is None:
            return delivery.id
    raise RuntimeError("the simulation made no delivery that was retried twice")


def settings_in(tmp: Path) -> Settings:
    return make_settings(tmp, f"sqlite:///{tmp / 'ccpush.db'}", lease="60s")


async def build(tmp: Path) -> Seeded:
    """The store of a week of pushes, made with receivers that go away afterwards."""
    seeded, clock = Seeded(), ManualClock(NOW - timedelta(days=7))
    service = Service(settings_in(tmp), clock=clock, resolver=FakeDNS({}))
    receivers = [Receiver(flaky(clock)), Receiver(), Receiver()]
    for receiver in receivers:
        await receiver.start()
    await service.start(dispatch=False)
    try:
        await seed(service, clock, seeded, [receiver.url for receiver in receivers])
    finally:
        await service.stop()
        for receiver in receivers:
            await receiver.stop()
    return seeded


def serving(tmp: Path, seeded: Seeded) -> Any:
    """The console on that store at ``NOW``, the support line pushing to a live receiver."""

    @asynccontextmanager
    async def factory() -> AsyncIterator[Any]:
        service = Service(settings_in(tmp), clock=ManualClock(NOW), resolver=FakeDNS({}))
        receiver = Receiver(lambda push, seen: Reply(200, '{"status": "received"}'))
        await receiver.start()
        await service.start(dispatch=False)
        try:
            support = seeded.apps["Support line"]
            await service.store.update_app(support, now=NOW, push_url=receiver.url)
            yield create_app(service, admin_token=ADMIN)
        finally:
            await service.stop()
            await receiver.stop()

    return factory


def photograph(base: str, seeded: Seeded) -> None:
    OUT.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        laptop = browser.new_page(viewport={"width": 1280, "height": 800}, base_url=base)
        laptop.goto("/console/sign-in")
        shoot(laptop, "sign-in")
        laptop.get_by_label("API key").fill(seeded.key)
        laptop.get_by_role("button", name="Sign in").click()
        shoot(laptop, "applications")
        support = seeded.apps["Support line"]
        laptop.goto(f"/console/apps/{support}")
        laptop.get_by_role("button", name="Send test push").click()
        laptop.get_by_test_id("test-outcome").wait_for()
        laptop.get_by_role("button", name="Reveal").click()
        laptop.get_by_label("Current secret").wait_for()
        shoot(laptop, "application", full=True)
        laptop.goto(f"/console/apps/{support}/deliveries")
        shoot(laptop, "delivery-log")
        laptop.goto(f"/console/apps/{support}/deliveries/{seeded.retried}")
        shoot(laptop, "delivery", full=True)
        laptop.goto(f"/console/apps/{support}/overview")
        shoot(laptop, "overview", full=True)
        phone = browser.new_page(
            viewport={"width": 390, "height": 844}, device_scale_factor=2, base_url=base
        )
        phone.context.add_cookies(laptop.context.cookies())
        phone.goto("/console/apps")
        shoot(phone, "applications-phone", full=True)
        photograph_operator(
            browser.new_page(viewport={"width": 1280, "height": 800}, base_url=base)
        )
        browser.close()


def photograph_operator(page: Page) -> None:
    """The operator's pages: every account at once, the accounts, and a key just made."""
    page.goto("/console/sign-in")
    page.get_by_label("API key").fill(ADMIN)
    page.get_by_role("button", name="Sign in").click()
    page.goto("/console/platform")
    shoot(page, "platform", full=True)
    page.goto("/console/accounts")
    shoot(page, "accounts")
    page.get_by_role("link", name="Keys of Acme Telecom").click()
    page.get_by_label("Name").fill("Billing CRM")
    page.get_by_role("button", name="Make key").click()
    page.get_by_test_id("new-key").wait_for()
    shoot(page, "api-keys", full=True)


def shoot(page: Page, name: str, *, full: bool = False) -> None:
    page.screenshot(path=OUT / f"{name}.png", full_page=full)
    print(f"wrote {OUT / name}.png")


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        seeded = asyncio.run(build(tmp))
        with ServerThread(serving(tmp, seeded)) as server:
            photograph(server.url, seeded)


if __name__ == "__main__":
    main()
