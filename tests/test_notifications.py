"""Operational notifications: the rule deciding when an event is due (a table), and end to
end, on both backends, an app whose receiver fails told by e-mail (a real SMTP server on
loopback) and by webhook (a real HTTPS receiver, Standard Webhooks signature checked):
``app.failing`` once, then ``app.auto_paused``, then ``app.recovered``; a failed
notification tried again; no SMTP password in any log line."""

from __future__ import annotations

import email
import json
import logging
import re
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
import trustme
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SmtpServerProtocol
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from pydantic import ValidationError

from ccpush.clock import ManualClock
from ccpush.models import App
from ccpush.notifications.events import make_notice
from ccpush.notifications.mail import SmtpServer
from ccpush.notifications.records import (
    AppMark,
    AppWatch,
    Channel,
    Destination,
    EventType,
    LastAttempt,
    MarkChange,
    NoticeState,
    SendState,
)
from ccpush.notifications.rules import QUIET, due_event, next_attempt_at
from ccpush.notifications.targets import set_target
from ccpush.service import Service
from ccpush.settings import Settings
from ccpush.signing import generate_secret
from ccpush.store import Store
from ccpush.upkeep import resume
from tests.api_client import Api, ok
from tests.conftest import minimal_record
from tests.helpers import make_service, new_record
from tests.receiver import Receiver, Reply
from tests.test_console_http import Console

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
AFTER = timedelta(minutes=15)
SMTP_USER = "ccpush-mailer"
SMTP_PASSWORD = "smtp-pa55word-never-logged"
FROM = "ccpush@platform.test"


# The rule, as a table


def _app(
    *, failing: datetime | None = None, paused: bool = False, reason: str | None = None
) -> App:
    return App(
        id="app_1",
        account_id="acc_1",
        name="Support line",
        push_url="https://crm.example.com/cdr",
        paused=paused,
        signing=True,
        created_at=T0,
        updated_at=T0,
        failing_since=failing,
        paused_reason=reason,
    )


FAILING = AppMark(state=NoticeState.FAILING, since=T0 + AFTER, streak=T0)
PAUSED = AppMark(state=NoticeState.PAUSED, since=T0 + 3 * AFTER, streak=T0)
OK_LATER = LastAttempt(started_at=T0 + 4 * AFTER, ok=True, error=None)
OK_EARLIER = LastAttempt(started_at=T0, ok=True, error=None)
FAILED = LastAttempt(started_at=T0, ok=False, error="HTTP 500")

RULES: list[tuple[str, dict[str, Any], timedelta, EventType | None]] = [
    ("healthy, never told", {"app": _app()}, AFTER, None),
    ("failing, not long enough", {"app": _app(failing=T0)}, AFTER - timedelta(seconds=1), None),
    ("failing long enough", {"app": _app(failing=T0)}, AFTER, EventType.APP_FAILING),
    ("failing, told for this streak", {"app": _app(failing=T0), "mark": FAILING}, AFTER * 9, None),
    (
        "a new streak after being told",
        {"app": _app(failing=T0 + AFTER), "mark": FAILING},
        2 * AFTER,
        EventType.APP_FAILING,
    ),
    (
        "a new streak within the hour of the last app.failing",
        {
            "app": _app(failing=T0 + AFTER),
            "mark": FAILING,
            "sent": {EventType.APP_FAILING: T0 + AFTER},
        },
        2 * AFTER,
        None,
    ),
    (
        "paused by ccpush",
        {"app": _app(failing=T0, paused=True, reason="paused by ccpush"), "mark": FAILING},
        3 * AFTER,
        EventType.APP_AUTO_PAUSED,
    ),
    (
        "paused by ccpush, told",
        {"app": _app(failing=T0, paused=True, reason="paused by ccpush"), "mark": PAUSED},
        4 * AFTER,
        None,
    ),
    ("paused by its owner", {"app": _app(failing=T0, paused=True)}, 9 * AFTER, None),
    (
        "a success after being told paused",
        {"app": _app(), "mark": PAUSED, "attempt": OK_LATER},
        5 * AFTER,
        EventType.APP_RECOVERED,
    ),
    (
        "a success before being told",
        {"app": _app(), "mark": PAUSED, "attempt": OK_EARLIER},
        5 * AFTER,
        None,
    ),
    ("told, no success yet", {"app": _app(), "mark": PAUSED, "attempt": FAILED}, 5 * AFTER, None),
    (
        "recovered again within the hour",
        {
            "app": _app(),
            "mark": FAILING,
            "attempt": OK_LATER,
            "sent": {EventType.APP_RECOVERED: T0 + 4 * AFTER},
        },
        5 * AFTER,
        None,
    ),
    (
        "recovered again after the hour",
        {
            "app": _app(),
            "mark": FAILING,
            "attempt": OK_LATER,
            "sent": {EventType.APP_RECOVERED: T0 + 4 * AFTER - QUIET},
        },
        4 * AFTER,
        EventType.APP_RECOVERED,
    ),
]


@pytest.mark.parametrize(("case", "given", "elapsed", "expected"), RULES, ids=[r[0] for r in RULES])
def test_the_event_due(
    case: str, given: dict[str, Any], elapsed: timedelta, expected: EventType | None
) -> None:
    watch = AppWatch(
        app=given["app"],
        mark=given.get("mark"),
        last_sent=given.get("sent", {}),
        last_attempt=given.get("attempt"),
    )
    due = due_event(watch, T0 + elapsed, AFTER)
    assert (None if due is None else due.type) == expected, case


def test_failed_notifications_are_tried_five_times_over_an_hour() -> None:
    waits, now, attempts = [], T0, 1
    while (then := next_attempt_at(attempts, now)) is not None:
        waits.append(then - now)
        now, attempts = then, attempts + 1
    assert attempts == 5
    assert timedelta(minutes=50) <= sum(waits, timedelta()) <= timedelta(minutes=90)


def test_the_smtp_url_is_read_and_its_password_never_shown() -> None:
    server = SmtpServer.parse(f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@mail.test:587?starttls=true")
    assert (server.host, server.port, server.starttls, server.implicit_tls) == (
        "mail.test", 587, True, False
    )  # fmt: skip
    assert server.password == SMTP_PASSWORD
    assert SMTP_PASSWORD not in repr(server)
    assert SmtpServer.parse("smtps://mail.test").port == 465
    with pytest.raises(ValueError, match="smtp://"):
        SmtpServer.parse("http://mail.test")


# End to end


@dataclass
class Mailbox:
    """What a real SMTP server on loopback received; refuses the first ``refuse`` messages."""

    messages: list[Message] = field(default_factory=list)
    refuse: int = 0
    port: int = 0

    async def handle_DATA(
        self, server: SmtpServerProtocol, session: Session, envelope: Envelope
    ) -> str:
        if self.refuse > 0:
            self.refuse -= 1
            return "451 4.3.0 try again later"
        assert isinstance(envelope.content, bytes)
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def of(self, type: EventType) -> list[Message]:
        return [m for m in self.messages if f"] {type.value}:" in str(m["Subject"])]


def _authenticate(
    server: SmtpServerProtocol, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    good = isinstance(data, LoginPassword) and (data.login, data.password) == (
        SMTP_USER.encode(), SMTP_PASSWORD.encode()
    )  # fmt: skip
    return AuthResult(success=good, handled=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=_free_port(),
        authenticator=_authenticate,
        auth_require_tls=False,
    )
    controller.start()
    box.port = controller.port
    yield box
    controller.stop()


@dataclass
class HttpsReceiver:
    """A real HTTPS receiver on loopback, its certificate from a test CA."""

    ca: trustme.CA
    replies: list[int] = field(default_factory=list)
    """Statuses to answer, in turn; 200 once they run out."""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/ccpush-events"

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        return web.Response(status=self.replies.pop(0) if self.replies else 200)

    def of(self, type: EventType) -> list[tuple[dict[str, str], bytes]]:
        return [(h, body) for h, body in self.received if json.loads(body)["type"] == type.value]


@pytest.fixture
async def https_receiver() -> AsyncIterator[HttpsReceiver]:
    ca = trustme.CA()
    receiver = HttpsReceiver(ca)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    app = web.Application()
    app.router.add_post("/ccpush-events", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    receiver.port = runner.addresses[0][1]
    yield receiver
    await runner.cleanup()


@dataclass
class Scene:
    service: Service
    clock: ManualClock
    app: App
    secret: str
    pushes: Receiver
    healthy: list[bool]


@pytest.fixture
async def scene(
    tmp_path: Path, db_url: str, mailbox: Mailbox, https_receiver: HttpsReceiver
) -> AsyncIterator[Scene]:
    bundle = tmp_path / "ca.pem"
    https_receiver.ca.cert_pem.write_to_path(str(bundle))
    clock = ManualClock(T0)
    service = make_service(
        tmp_path,
        db_url,
        clock,
        ca_bundle=str(bundle),
        smtp_url=f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{mailbox.port}",
        smtp_from=FROM,
        auto_pause_after="1h",
        public_url="https://push.platform.test",
    )
    healthy = [False]
    pushes = await Receiver(
        lambda push, seen: Reply(status=200 if healthy[0] else 500, body="down")
    ).start()
    await service.start(dispatch=False)
    account = await service.store.create_account(name="Acme", now=clock.now())
    app = await service.store.create_app(
        name="Support line", push_url=pushes.url, now=clock.now(), account_id=account.id
    )
    target, _ = await set_target(
        service.store, clock, account.id, url=https_receiver.url, email="ops@acme.test"
    )
    yield Scene(service, clock, app, target.secret, pushes, healthy)
    await service.stop()
    await pushes.stop()


def _verified(secret: str, headers: dict[str, str], body: bytes) -> Any:
    """The event, once its signature is checked by the ``standardwebhooks`` package (its
    ``verify`` compares the timestamp with the wall clock; these are signed at test time)."""
    when = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
    expected = standardwebhooks.Webhook(secret).sign(headers["webhook-id"], when, body.decode())
    assert expected in headers["webhook-signature"].split(" ")
    return json.loads(body)


async def _push_one(scene: Scene, session_id: str) -> None:
    service = scene.service
    await service.store.ingest(
        scene.app.id, [new_record(minimal_record(session_id))], now=scene.clock.now()
    )
    await service.dispatcher.run_until_idle()


async def test_failing_then_paused_then_recovered_told_once_each_by_email_and_webhook(
    scene: Scene, mailbox: Mailbox, https_receiver: HttpsReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    service, clock, notifier = scene.service, scene.clock, scene.service.notifier
    await _push_one(scene, "23111713424802472")
    assert await notifier.run_once() == 0  # failing, not yet for 15 minutes

    clock.advance(timedelta(minutes=16))
    assert await notifier.run_once() == 2
    clock.advance(timedelta(minutes=5))
    assert await notifier.run_once() == 0
    [failing] = mailbox.of(EventType.APP_FAILING)
    text = failing.get_payload()
    assert isinstance(text, str)
    for said in ("Support line", scene.pushes.url, "HTTP 500", f"/console/apps/{scene.app.id}"):
        assert said in text
    assert failing["To"] == "ops@acme.test"
    assert failing["From"] == FROM
    [(headers, body)] = https_receiver.of(EventType.APP_FAILING)
    event = _verified(scene.secret, headers, body)
    assert event["data"]["appId"] == scene.app.id
    assert event["data"]["lastError"].startswith("HTTP 500")
    assert event["data"]["consoleUrl"] == f"https://push.platform.test/console/apps/{scene.app.id}"

    clock.advance(timedelta(minutes=40))  # failing for 61 minutes: paused
    assert (await service.upkeep.run_once()).paused == [scene.app.id]
    assert await notifier.run_once() == 2
    assert len(mailbox.of(EventType.APP_AUTO_PAUSED)) == 1
    assert len(https_receiver.of(EventType.APP_AUTO_PAUSED)) == 1

    scene.healthy[0] = True
    clock.advance(timedelta(minutes=5))
    await resume(service.store, clock, scene.app.id, None)
    await service.replays.run_until_idle()
    await service.dispatcher.run_until_idle()
    await notifier.run_once()
    clock.advance(timedelta(minutes=5))
    await notifier.run_once()
    for type in (EventType.APP_FAILING, EventType.APP_AUTO_PAUSED, EventType.APP_RECOVERED):
        assert len(mailbox.of(type)) == 1, type
        [(headers, body)] = https_receiver.of(type)
        assert _verified(scene.secret, headers, body)["type"] == type.value
    assert len(https_receiver.of(EventType.REPLAY_FINISHED)) == 1
    assert SMTP_PASSWORD not in caplog.text


async def test_a_failed_notification_is_tried_again(
    scene: Scene, mailbox: Mailbox, https_receiver: HttpsReceiver
) -> None:
    mailbox.refuse = 1
    https_receiver.replies = [503]
    await _push_one(scene, "23111713424802472")
    scene.clock.advance(timedelta(minutes=16))
    assert await scene.service.notifier.run_once() == 2
    assert mailbox.messages == []
    assert len(https_receiver.received) == 1
    account = scene.app.account_id
    waiting = await scene.service.store.list_notice_deliveries(account, platform=False, limit=10)
    assert {(d.state, d.attempts) for d in waiting} == {(SendState.PENDING, 1)}
    assert any("451" in (d.last_error or "") for d in waiting)

    scene.clock.advance(timedelta(seconds=59))
    assert await scene.service.notifier.run_once() == 0  # not due yet
    scene.clock.advance(timedelta(seconds=1))
    assert await scene.service.notifier.run_once() == 2
    assert len(mailbox.of(EventType.APP_FAILING)) == 1
    assert len(https_receiver.of(EventType.APP_FAILING)) == 2
    sent = await scene.service.store.list_notice_deliveries(account, platform=False, limit=10)
    assert {(d.state, d.attempts) for d in sent} == {(SendState.DELIVERED, 2)}


async def test_a_wrong_smtp_password_is_not_told(
    tmp_path: Path, db_url: str, mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-pa55word-either"
    clock = ManualClock(T0)
    service = make_service(
        tmp_path,
        db_url,
        clock,
        smtp_url=f"smtp://{SMTP_USER}:{wrong}@127.0.0.1:{mailbox.port}",
        smtp_from=FROM,
        notify_email="noc@platform.test",
    )
    await service.start(dispatch=False)
    try:
        app = await service.store.create_app(name="Line", push_url=None, now=clock.now())
        await service.notifier.secret_rotated(app.id)
        assert await service.notifier.run_once() == 1
        [delivery] = await service.store.list_notice_deliveries(None, platform=True, limit=5)
        assert delivery.platform
        assert delivery.state is SendState.PENDING
        assert delivery.last_error is not None
        assert "535" in delivery.last_error
        assert wrong not in delivery.last_error
        assert wrong not in caplog.text
        assert mailbox.messages == []
    finally:
        await service.stop()


# The API


async def test_the_api_sets_the_addresses_and_shows_the_secret_once(service: Service) -> None:
    api = Api(service)
    async with api.client() as admin:
        acme = await ok(await admin.post("/v1/accounts", json={"name": "Acme"}), 201)
        other = await ok(await admin.post("/v1/accounts", json={"name": "Other"}), 201)
        key = await ok(
            await admin.post(f"/v1/accounts/{acme['id']}/keys", json={"name": "ops"}), 201
        )
    path = f"/v1/accounts/{acme['id']}/notifications"
    async with api.client(key["secret"]) as client:
        refused = await client.put(path, json={"url": "http://crm.example.com/events"})
        assert refused.status_code == 422
        assert refused.json()["error"]["problems"][0]["field"] == "url"
        refused = await client.put(path, json={"url": "https://10.1.2.3/events"})
        assert refused.status_code == 422
        assert "cannot be pushed to" in refused.text
        refused = await client.put(path, json={"email": "not an address"})
        assert refused.status_code == 422
        assert await ok(await client.get(path)) == {
            "url": None, "email": None, "secret": None, "updatedAt": None
        }  # fmt: skip
        body = {"url": "https://crm.example.com/events", "email": "ops@acme.test"}
        first = await ok(await client.put(path, json=body))
        assert first["secret"].startswith("whsec_")
        again = await ok(await client.put(path, json=body))
        assert again["secret"] is None
        assert again["url"] == body["url"]
        rotated = await ok(await client.post(f"{path}/secret/rotate"))
        assert rotated["secret"].startswith("whsec_")
        assert rotated["secret"] != first["secret"]
        assert (await ok(await client.get(path)))["secret"] is None
        empty: dict[str, Any] = {"items": [], "nextCursor": None}
        assert await ok(await client.get(f"{path}/deliveries")) == empty
        elsewhere = f"/v1/accounts/{other['id']}/notifications"
        assert (await client.put(elsewhere, json=body)).status_code == 404
        assert (await client.get(f"{elsewhere}/deliveries")).status_code == 404


# The console


async def test_the_console_sets_the_addresses_and_lists_what_was_sent(service: Service) -> None:
    api = Api(service)
    async with api.client() as admin:
        acme = await ok(await admin.post("/v1/accounts", json={"name": "Acme"}), 201)
        other = await ok(await admin.post("/v1/accounts", json={"name": "Other"}), 201)
        path = f"/v1/accounts/{acme['id']}/keys"
        key = await ok(await admin.post(path, json={"name": "ops"}), 201)
        made = {"name": "Line", "pushUrl": "https://crm.example.com/cdr", "accountId": acme["id"]}
        app = await ok(await admin.post("/v1/apps", json=made), 201)
    async with api.client(key["secret"]) as client:
        browser = Console(client)
        await browser.sign_in(key["secret"])
        page = f"/accounts/{acme['id']}/notifications"
        assert "No notification yet" in await browser.get(page)
        refused = await browser.post(page, {"url": "http://crm.example.com/e", "email": ""})
        assert refused.status_code == 422
        assert "must start with https://" in refused.text
        form = {"url": "https://crm.example.com/events", "email": "ops@acme.test"}
        saved = await browser.post(page, form)
        assert saved.status_code == 200
        secret = re.search(r"whsec_[A-Za-z0-9+/=]+", saved.text)
        assert secret is not None
        again = await browser.post(page, form)
        assert "whsec_" not in again.text
        rotated = await browser.post(f"{page}/rotate")
        assert "whsec_" in rotated.text
        assert secret.group() not in rotated.text
        await service.notifier.secret_rotated(app["id"])
        listed = await browser.get(page)
        assert "signing_secret.rotated" in listed
        assert "ops@acme.test" in listed
        await browser.get(f"/accounts/{other['id']}/notifications", 404)


# The store


async def test_of_two_processes_deciding_the_same_event_one_keeps_it(store: Store) -> None:
    account = await store.create_account(name="Acme", now=T0)
    app = await store.create_app(
        name="Line", push_url="https://crm.example.com/cdr", now=T0, account_id=account.id
    )
    change = MarkChange(None, FAILING)
    to = [Destination(channel=Channel.EMAIL, target="ops@acme.test", platform=False)]
    first = make_notice(EventType.APP_FAILING, app, {}, T0 + AFTER)
    second = make_notice(EventType.APP_FAILING, app, {}, T0 + AFTER)
    assert await store.record_notice(first, to, change=change)
    assert not await store.record_notice(second, to, change=change)
    [kept] = await store.list_notice_deliveries(account.id, platform=False, limit=10)
    assert kept.notification_id == first.id
    assert await store.last_notice_at(app.id, EventType.APP_FAILING) == T0 + AFTER
    [watch] = [w for w in await store.watch_apps() if w.app.id == app.id]
    assert watch.mark == FAILING
    recovered = make_notice(EventType.APP_RECOVERED, app, {}, T0 + 2 * AFTER)
    assert await store.record_notice(recovered, to, change=MarkChange(FAILING, None))
    assert [w for w in await store.watch_apps() if w.app.id == app.id] == []


async def test_events_are_forgotten_after_30_days_unless_one_waits(store: Store) -> None:
    app = await store.create_app(name="Line", push_url=None, now=T0)
    to = [Destination(channel=Channel.EMAIL, target="ops@acme.test", platform=False)]
    notices = [make_notice(type, app, {}, T0) for type in (EventType.SECRET_ROTATED,) * 2]
    for notice in notices:
        assert await store.record_notice(notice, to)
    lease = T0 + timedelta(minutes=2)
    [sent] = await store.claim_notice_deliveries(now=T0, lease_until=lease, limit=1)
    await store.finish_notice_delivery(sent.id, error=None, next_attempt_at=None, now=T0)
    assert await store.purge_notices(created_before=T0, limit=10) == 0
    assert await store.purge_notices(created_before=T0 + timedelta(days=30), limit=10) == 1
    [left] = await store.list_notice_deliveries(None, platform=True, limit=10)
    assert left.notification_id != sent.notification_id
    assert left.state is SendState.PENDING


# Settings


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        (
            {"notify_url": "https://noc.example.com/in"},
            "CCPUSH_NOTIFY_URL needs CCPUSH_NOTIFY_SECRET",
        ),
        ({"notify_url": "http://noc.example.com/in"}, "must be an https:// URL"),
        ({"notify_secret": "not-a-secret"}, "must be whsec_"),
        ({"notify_email": "noc at example.com"}, "must be an e-mail address"),
        ({"smtp_url": "mail.example.com:25", "smtp_from": FROM}, "must start with smtp://"),
        ({"smtp_url": "smtp://mail.example.com"}, "CCPUSH_SMTP_URL needs CCPUSH_SMTP_FROM"),
    ],
)
def test_bad_notification_settings_are_refused(given: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(reason)) as caught:
        Settings.model_validate(given)
    assert SMTP_PASSWORD not in str(caught.value)


def test_the_smtp_password_is_not_in_the_settings_shown() -> None:
    url = f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@mail.example.com:587?starttls=true"
    settings = Settings(smtp_url=url, smtp_from=FROM, notify_secret=generate_secret())
    assert SMTP_PASSWORD not in repr(settings)
    assert SMTP_PASSWORD not in repr(settings.smtp_server)
    assert settings.notify.platform_secret is not None
    assert settings.notify.platform_secret not in repr(settings.notify)
