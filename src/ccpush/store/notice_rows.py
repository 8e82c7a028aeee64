"""Rows of the notification tables as objects, for both backends (``time`` reads a time as
the backend keeps it, as in ``ccpush.store.rows``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Final

from ccpush.notifications.records import (
    AppMark,
    Channel,
    EventType,
    LastAttempt,
    NoticeDelivery,
    NoticeState,
    SendState,
)

Time = Callable[[Any], datetime]

DELIVERY_COLUMNS: Final = (
    "d.id, d.notification_id, d.account_id, n.type, d.channel, d.target, d.platform, d.state,"
    " d.attempts, d.last_error, d.next_attempt_at, d.created_at, d.updated_at"
)
"""Of deliveries d and their notifications n."""


def mark(row: Any, time: Time) -> AppMark:
    streak = row["streak"]
    return AppMark(
        state=NoticeState(row["state"]),
        since=time(row["since"]),
        streak=None if streak is None else time(streak),
    )


def last_sent(rows: Iterable[Any], time: Time) -> dict[str, dict[EventType, datetime]]:
    """By app, when each kind of event was last made (rows: app_id, type, at)."""
    sent: dict[str, dict[EventType, datetime]] = {}
    for row in rows:
        sent.setdefault(row["app_id"], {})[EventType(row["type"])] = time(row["at"])
    return sent


def last_attempt(row: Any, time: Time) -> LastAttempt:
    return LastAttempt(
        started_at=time(row["started_at"]), ok=row["error_kind"] is None, error=row["error"]
    )


def delivery(row: Any, time: Time, body: bytes = b"") -> NoticeDelivery:
    due = row["next_attempt_at"]
    return NoticeDelivery(
        id=row["id"],
        notification_id=row["notification_id"],
        account_id=row["account_id"],
        type=EventType(row["type"]),
        channel=Channel(row["channel"]),
        target=row["target"],
        platform=bool(row["platform"]),
        state=SendState(row["state"]),
        attempts=row["attempts"],
        last_error=row["last_error"],
        next_attempt_at=None if due is None else time(due),
        created_at=time(row["created_at"]),
        updated_at=time(row["updated_at"]),
        body=body,
    )


def finished_state(error: str | None, next_attempt_at: datetime | None) -> SendState:
    """Where a delivery stands after an attempt: delivered, due again, or failed."""
    if error is None:
        return SendState.DELIVERED
    return SendState.FAILED if next_attempt_at is None else SendState.PENDING
