"""Rows as objects, for every backend: the columns each object is read from, and how.

Rows are read by column name (``sqlite3.Row`` and ``asyncpg.Record`` alike). The one
value the backends keep differently is time: SQLite keeps epoch seconds, PostgreSQL a
``timestamptz``; each backend makes its ``Rows`` with the function that reads its times.
Claimed rows are read in each backend's ``claim_due``, a hot path kept free of calls here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from ccpush.models import (
    Account,
    ApiKey,
    App,
    Attempt,
    AttemptBucket,
    Delivery,
    DeliveryState,
    ErrorKind,
    KeyScope,
    PortalLink,
    ReplayJob,
    ReplayKind,
    ReplayState,
    SigningKeys,
    StoredRecord,
)
from ccpush.store.base import AppActivity, IdempotentRequest

ACCOUNT_COLUMNS: Final = "id, name, created_at"
KEY_COLUMNS: Final = "id, account_id, name, scope, prefix, created_at, revoked_at"
PORTAL_LINK_COLUMNS: Final = "id, account_id, app_id, read_only, created_at, expires_at, used_at"
APP_COLUMNS: Final = (
    "id, account_id, name, push_url, paused, signing, created_at, updated_at, failing_since,"
    " paused_reason, endpoint, rate_limit, max_in_flight"
)
SIGNING_COLUMNS: Final = "signing_secret, previous_secret, previous_secret_until"
REPLAY_COLUMNS: Final = (
    "id, app_id, kind, range_from, range_to, state, total, enqueued, created_at, updated_at,"
    " finished_at"
)
IDEMPOTENCY_COLUMNS: Final = (
    "caller, idempotency_key, fingerprint, holder, held_until, expires_at, status, answer"
)
# Of deliveries d, their records r and versions v.
DELIVERY_COLUMNS: Final = (
    "d.id, d.app_id, r.call_session_id, d.record_id, d.replay_id, v.version, v.seq, d.state,"
    " d.attempts, d.next_attempt_at, d.created_at, d.updated_at"
)
ATTEMPT_COLUMNS: Final = (
    "delivery_id, number, started_at, duration_ms, status_code, error_kind, error, response_excerpt"
)
# Of record versions v and their records r.
VERSION_COLUMNS: Final = (
    "v.id, r.call_session_id, r.call_start, v.version, v.seq, v.received_at, v.body"
)


class Row(Protocol):
    """A row of a result: its columns by name."""

    def __getitem__(self, column: str, /) -> Any: ...


def from_epoch(value: float) -> datetime:
    """A time SQLite keeps: seconds since the epoch, UTC."""
    return datetime.fromtimestamp(value, UTC)


def as_stored(value: datetime) -> datetime:
    """A time PostgreSQL keeps (``timestamptz``): asyncpg reads it as a datetime already."""
    return value


class Rows:
    """The objects of a backend's rows; ``time`` reads a time as the backend keeps it."""

    __slots__ = ("time",)

    def __init__(self, time: Callable[[Any], datetime]) -> None:
        self.time = time

    def maybe_time(self, value: Any) -> datetime | None:
        return None if value is None else self.time(value)

    def account(self, row: Row) -> Account:
        return Account(id=row["id"], name=row["name"], created_at=self.time(row["created_at"]))

    def key(self, row: Row) -> ApiKey:
        return ApiKey(
            id=row["id"],
            account_id=row["account_id"],
            name=row["name"],
            scope=KeyScope(row["scope"]),
            prefix=row["prefix"],
            created_at=self.time(row["created_at"]),
            revoked_at=self.maybe_time(row["revoked_at"]),
        )

    def portal_link(self, row: Row) -> PortalLink:
        return PortalLink(
            id=row["id"],
            account_id=row["account_id"],
            app_id=row["app_id"],
            read_only=bool(row["read_only"]),
            created_at=self.time(row["created_at"]),
            expires_at=self.time(row["expires_at"]),
            used_at=self.maybe_time(row["used_at"]),
        )

    def app(self, row: Row) -> App:
        return App(
            id=row["id"],
            account_id=row["account_id"],
            name=row["name"],
            push_url=row["push_url"],
            paused=bool(row["paused"]),
            signing=bool(row["signing"]),
            created_at=self.time(row["created_at"]),
            updated_at=self.time(row["updated_at"]),
            failing_since=self.maybe_time(row["failing_since"]),
            paused_reason=row["paused_reason"],
            endpoint=row["endpoint"],
            rate_limit=row["rate_limit"],
            max_in_flight=row["max_in_flight"],
        )

    def signing_keys(self, row: Row) -> SigningKeys:
        return self.keys(
            row["signing_secret"], row["previous_secret"], row["previous_secret_until"]
        )

    def keys(self, current: str | None, previous: str | None, until: Any) -> SigningKeys:
        """An app's signing secrets, from the values of its ``SIGNING_COLUMNS``."""
        return SigningKeys(
            current=current, previous=previous, previous_until=self.maybe_time(until)
        )

    def replay(self, row: Row) -> ReplayJob:
        return ReplayJob(
            id=row["id"],
            app_id=row["app_id"],
            kind=ReplayKind(row["kind"]),
            range_from=self.maybe_time(row["range_from"]),
            range_to=self.maybe_time(row["range_to"]),
            state=ReplayState(row["state"]),
            total=row["total"],
            enqueued=row["enqueued"],
            created_at=self.time(row["created_at"]),
            updated_at=self.time(row["updated_at"]),
            finished_at=self.maybe_time(row["finished_at"]),
        )

    def idempotent_request(self, row: Row) -> IdempotentRequest:
        answer = row["answer"]
        return IdempotentRequest(
            caller=row["caller"],
            key=row["idempotency_key"],
            fingerprint=row["fingerprint"],
            holder=row["holder"],
            held_until=self.time(row["held_until"]),
            expires_at=self.time(row["expires_at"]),
            status=row["status"],
            answer=None if answer is None else bytes(answer),
        )

    def delivery(self, row: Row, attempts: tuple[Attempt, ...]) -> Delivery:
        state = DeliveryState(row["state"])
        held = state is DeliveryState.HELD
        return Delivery(
            id=row["id"],
            app_id=row["app_id"],
            call_session_id=row["call_session_id"],
            record_id=row["record_id"],
            replay_id=row["replay_id"],
            version=row["version"],
            sequence=row["seq"],
            state=state,
            attempts=row["attempts"],
            next_attempt_at=None if held else self.maybe_time(row["next_attempt_at"]),
            created_at=self.time(row["created_at"]),
            updated_at=self.time(row["updated_at"]),
            attempt_log=attempts,
        )

    def attempt(self, row: Row) -> Attempt:
        kind = row["error_kind"]
        return Attempt(
            number=row["number"],
            started_at=self.time(row["started_at"]),
            duration_ms=row["duration_ms"],
            status_code=row["status_code"],
            error_kind=ErrorKind(kind) if kind else None,
            error=row["error"],
            response_excerpt=row["response_excerpt"],
        )

    def app_activity(
        self, outcomes: Iterable[Row], waiting: Iterable[Row]
    ) -> dict[str, AppActivity]:
        """Each app's activity, from rows of a backend's ``ACTIVITY_OUTCOMES`` (its attempts
        by outcome) and ``ACTIVITY_WAITING`` (its waiting deliveries by state; pending ones
        in two rows, first attempts and retries)."""
        found = {
            row["app_id"]: AppActivity(
                app_id=row["app_id"],
                delivered=row["delivered"],
                failed=row["failed"],
                retried=row["retried"],
            )
            for row in outcomes
        }
        for row in waiting:
            app_id, count = row["app_id"], row["count"]
            activity = found.get(app_id) or AppActivity(app_id=app_id)
            made = [activity.oldest_waiting, self.maybe_time(row["oldest_made"])]
            oldest = min((when for when in made if when is not None), default=None)
            activity = replace(activity, oldest_waiting=oldest)
            match DeliveryState(row["state"]):
                case DeliveryState.PENDING:
                    dues = [activity.oldest_due, self.maybe_time(row["oldest_due"])]
                    oldest_due = min((due for due in dues if due is not None), default=None)
                    pending = activity.pending + count
                    activity = replace(activity, pending=pending, oldest_due=oldest_due)
                case DeliveryState.SENDING:
                    activity = replace(activity, sending=count)
                case DeliveryState.HELD:
                    activity = replace(activity, held=count)
            found[app_id] = activity
        return found

    def attempts_by_delivery(self, rows: Iterable[Row]) -> dict[int, tuple[Attempt, ...]]:
        """Attempt rows (``ATTEMPT_COLUMNS``), in order, by delivery."""
        found: dict[int, list[Attempt]] = {}
        for row in rows:
            found.setdefault(row["delivery_id"], []).append(self.attempt(row))
        return {delivery_id: tuple(attempts) for delivery_id, attempts in found.items()}

    def stored(self, row: Row) -> StoredRecord:
        return StoredRecord(
            id=row["id"],
            call_session_id=row["call_session_id"],
            call_start=self.time(row["call_start"]),
            version=row["version"],
            sequence=row["seq"],
            received_at=self.time(row["received_at"]),
            body=bytes(row["body"]),
        )


def attempt_bucket(row: Row, since: datetime, size: timedelta) -> AttemptBucket:
    """A row of a backend's ``ATTEMPT_STATS``: the attempts of period ``slot``, by outcome."""
    return AttemptBucket(
        start=since + row["slot"] * size,
        delivered=row["delivered"],
        retrying=row["retrying"],
        failed=row["failed"],
    )
