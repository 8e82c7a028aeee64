"""The notifier: finds the events due (a round every ``interval``, in every dispatching
process), keeps each with a delivery per destination, and sends what is due, retrying
failures with backoff (``ccpush.notifications.rules``).

Webhooks go through the pushes' own sender (the same target guard), signed with Standard
Webhooks under the account's secret (the operator's: ``CCPUSH_NOTIFY_SECRET``); e-mails
through ``CCPUSH_SMTP_URL``. On PostgreSQL several processes may run it: deliveries are
claimed, and an event is kept with the app's new mark in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

from ccpush.clock import Clock
from ccpush.models import App, ReplayJob
from ccpush.notifications.events import app_data, email_of, make_notice
from ccpush.notifications.mail import Mailer, SmtpError
from ccpush.notifications.records import (
    AppWatch,
    Channel,
    Destination,
    EventType,
    MarkChange,
    Notice,
    NoticeDelivery,
)
from ccpush.notifications.rules import due_event, may_notify_again, next_attempt_at
from ccpush.senders import Pushes
from ccpush.signing import sign
from ccpush.store.base import Store
from ccpush.wire import WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP

log = logging.getLogger(__name__)

CLAIM_LEASE: Final = timedelta(minutes=2)
"""How long a claimed delivery is a sender's (an e-mail or a webhook takes well under)."""
KEPT_FOR: Final = timedelta(days=30)
"""How long an event and its deliveries are kept once none waits to be sent."""
PURGE_BATCH: Final = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifySettings:
    failing_after: timedelta = timedelta(minutes=15)
    """An app whose every push has failed this long is told ``app.failing``."""
    console_base: str = "http://127.0.0.1:8080"
    """Where the console's links in messages point (``CCPUSH_PUBLIC_URL``)."""
    platform_url: str | None = None
    platform_email: str | None = None
    platform_secret: str | None = field(default=None, repr=False)
    interval: float = 30.0
    """Seconds between rounds."""
    batch: int = 50


class Notifier:
    """Operational notifications: what is due, kept, then sent."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        sender: Pushes,
        mailer: Mailer | None,
        settings: NotifySettings,
    ) -> None:
        self.store = store
        self.clock = clock
        self.sender = sender
        self.mailer = mailer
        self.settings = settings

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("notification round failed; trying again next round")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.interval)

    async def run_once(self) -> int:
        """Make the events due, send every delivery due, and forget a batch of those older
        than ``KEPT_FOR``; how many were sent."""
        await self.find_events()
        sent = await self.send_due()
        await self.store.purge_notices(
            created_before=self.clock.now() - KEPT_FOR, limit=PURGE_BATCH
        )
        return sent

    async def find_events(self) -> list[Notice]:
        """The apps' state changes due now (``ccpush.notifications.rules.due_event``)."""
        made = []
        for watch in await self.store.watch_apps():
            now = self.clock.now()
            due = due_event(watch, now, self.settings.failing_after)
            if due is None:
                continue
            notice = make_notice(due.type, watch.app, self._data(watch), now)
            change = MarkChange(watch.mark, due.mark)
            destinations = await self._destinations(watch.app)
            if not await self.store.record_notice(notice, destinations, change=change):
                continue  # another process told it first, or the app is gone
            log.info("notification %s: app %s", due.type.value, watch.app.id)
            made.append(notice)
        return made

    def _data(self, watch: AppWatch) -> dict[str, Any]:
        attempt = watch.last_attempt
        error = attempt.error if attempt is not None and not attempt.ok else None
        return app_data(watch.app, self.settings.console_base, error)

    async def replay_finished(self, job: ReplayJob) -> None:
        """Tell that ``job`` queued all its records again."""
        extra = {"replayId": job.id, "records": job.enqueued}
        await self.tell(EventType.REPLAY_FINISHED, job.app_id, extra)

    async def secret_rotated(self, app_id: str) -> None:
        await self.tell(EventType.SECRET_ROTATED, app_id, {})

    async def tell(self, type: EventType, app_id: str, extra: dict[str, Any]) -> None:
        """Keep an event that happened now (unless one of its kind was made for the app
        within the hour). Never raises: what happened is done; this only tells of it."""
        try:
            now = self.clock.now()
            if not may_notify_again(await self.store.last_notice_at(app_id, type), now):
                return
            app = await self.store.get_app(app_id)
            data = {**app_data(app, self.settings.console_base), **extra}
            notice = make_notice(type, app, data, now)
            await self.store.record_notice(notice, await self._destinations(app))
        except Exception:
            log.exception("the %s notification of app %s could not be kept", type.value, app_id)

    async def _destinations(self, app: App) -> list[Destination]:
        found = []
        target = await self.store.notification_target(app.account_id)
        if target is not None:
            found += _destinations(target.url, target.email, platform=False)
        settings = self.settings
        return found + _destinations(settings.platform_url, settings.platform_email, platform=True)

    async def send_due(self) -> int:
        """Send the deliveries due now, a batch at a time; how many were sent."""
        now = self.clock.now()
        claimed = await self.store.claim_notice_deliveries(
            now=now, lease_until=now + CLAIM_LEASE, limit=self.settings.batch
        )
        await asyncio.gather(*(self._deliver(delivery) for delivery in claimed))
        return len(claimed)

    async def _deliver(self, delivery: NoticeDelivery) -> None:
        try:
            error = await self._send(delivery)
        except Exception as exc:  # counted as a failed attempt, so that retries end
            log.exception("sending notification %s failed", delivery.notification_id)
            error = f"could not be sent: {type(exc).__name__}"
        now = self.clock.now()
        retry = None if error is None else next_attempt_at(delivery.attempts + 1, now)
        await self.store.finish_notice_delivery(
            delivery.id, error=error, next_attempt_at=retry, now=now
        )
        if error is not None:
            then = f"next attempt at {retry.isoformat()}" if retry else "no attempt left"
            log.warning(
                "notification %s (%s) to %s failed: %s; %s",
                delivery.notification_id, delivery.type.value, delivery.target, error, then,
            )  # fmt: skip

    async def _send(self, delivery: NoticeDelivery) -> str | None:
        """Send it once; the error, or None if it was taken."""
        if delivery.channel is Channel.EMAIL:
            return await self._send_email(delivery)
        secret = await self._secret(delivery)
        if secret is None:
            return "no signing secret for this notification address"
        timestamp = int(self.clock.now().timestamp())
        headers = {
            WEBHOOK_ID: delivery.notification_id,
            WEBHOOK_TIMESTAMP: str(timestamp),
            WEBHOOK_SIGNATURE: sign(secret, delivery.notification_id, timestamp, delivery.body),
        }
        outcome = await self.sender.send(delivery.target, delivery.body, headers)
        return None if outcome.ok else outcome.error or str(outcome.error_kind)

    async def _secret(self, delivery: NoticeDelivery) -> str | None:
        if delivery.platform:
            return self.settings.platform_secret
        target = await self.store.notification_target(delivery.account_id)
        return None if target is None else target.secret

    async def _send_email(self, delivery: NoticeDelivery) -> str | None:
        if self.mailer is None:
            return "no SMTP server is configured (CCPUSH_SMTP_URL)"
        subject, text = email_of(delivery.body)
        try:
            await self.mailer.send(delivery.target, subject, text)
        except SmtpError as exc:
            return str(exc)
        return None


def _destinations(url: str | None, email: str | None, *, platform: bool) -> list[Destination]:
    found = []
    if url is not None:
        found.append(Destination(channel=Channel.WEBHOOK, target=url, platform=platform))
    if email is not None:
        found.append(Destination(channel=Channel.EMAIL, target=email, platform=platform))
    return found
