"""What the store keeps of operational notifications: where an account's go, each event,
each delivery of it to a destination, and what was last told of an app in trouble."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from ccpush.models import App


class EventType(StrEnum):
    """The events ccpush tells an account (and the operator) of."""

    APP_FAILING = "app.failing"
    """Every push to the app's address has failed for ``CCPUSH_NOTIFY_FAILING_AFTER``."""
    APP_AUTO_PAUSED = "app.auto_paused"
    """ccpush paused the app: its address failed for ``CCPUSH_AUTO_PAUSE_AFTER``."""
    APP_RECOVERED = "app.recovered"
    """A push succeeded after the app was told failing or paused."""
    REPLAY_FINISHED = "replay.finished"
    """A replay queued every record it covers again."""
    SECRET_ROTATED = "signing_secret.rotated"  # noqa: S105 - an event name
    """The app's signing secret was rotated."""


class Channel(StrEnum):
    WEBHOOK = "webhook"
    EMAIL = "email"


class NoticeState(StrEnum):
    """What an app in trouble was last told to be."""

    FAILING = "failing"
    PAUSED = "paused"


class SendState(StrEnum):
    """Where a notification's delivery to one destination stands."""

    PENDING = "pending"
    SENDING = "sending"
    """Claimed; due again when its claim runs out (its sender died)."""
    DELIVERED = "delivered"
    FAILED = "failed"
    """Every attempt failed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NotificationTarget:
    """Where an account's notifications go, and the secret its webhooks are signed with."""

    account_id: str
    url: str | None
    email: str | None
    secret: str = field(repr=False)
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class AppMark:
    """What an app in trouble was last told: its state, since when, and the failing
    streak (the app's ``failing_since``) it was told for."""

    state: NoticeState
    since: datetime
    streak: datetime | None = None


@dataclass(frozen=True, slots=True)
class MarkChange:
    """An app's mark as an event was decided on, and what the event makes it (None: none).
    The event is kept only if the mark is still ``before``: of two processes deciding the
    same event at once, one keeps it."""

    before: AppMark | None
    after: AppMark | None


@dataclass(frozen=True, slots=True, kw_only=True)
class LastAttempt:
    """An app's latest push attempt."""

    started_at: datetime
    ok: bool
    error: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AppWatch:
    """An app that is failing, was paused by ccpush, or was told so and has not recovered:
    what the rule (``ccpush.notifications.rules.due_event``) decides from."""

    app: App
    mark: AppMark | None
    last_sent: dict[EventType, datetime]
    """When each kind of event was last made for the app."""
    last_attempt: LastAttempt | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Notice:
    """One event, as every channel tells it (``body``: the webhook's JSON)."""

    id: str
    """Also the webhook's ``webhook-id``."""
    account_id: str
    app_id: str | None
    type: EventType
    body: bytes
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Destination:
    channel: Channel
    target: str
    """A URL or an e-mail address."""
    platform: bool
    """The operator's platform-wide destination, not the account's."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NoticeDelivery:
    """A notification's delivery to one destination."""

    id: int
    notification_id: str
    account_id: str
    type: EventType
    channel: Channel
    target: str
    platform: bool
    state: SendState
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    body: bytes = b""
    """The notification's body (read when claimed, to send it)."""
