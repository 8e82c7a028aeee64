"""Operational notifications on SQLite: each function runs on the store's writer thread,
in the transaction it is given or as one read. The PostgreSQL package has the same ones."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Final

from ccpush.errors import AccountNotFound
from ccpush.models import App
from ccpush.notifications.records import (
    AppMark,
    AppWatch,
    Destination,
    EventType,
    MarkChange,
    Notice,
    NoticeDelivery,
    NotificationTarget,
)
from ccpush.secret_box import SecretBox
from ccpush.store import notice_rows
from ccpush.store.notice_rows import DELIVERY_COLUMNS
from ccpush.store.rows import APP_COLUMNS, Rows, from_epoch

SELECT_TARGET: Final = (
    "SELECT account_id, url, email, secret, updated_at FROM notification_targets"
    " WHERE account_id = ?"
)
UPSERT_TARGET: Final = """
INSERT INTO notification_targets (account_id, url, email, secret, updated_at)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (account_id) DO UPDATE
SET url = excluded.url, email = excluded.email, secret = excluded.secret,
    updated_at = excluded.updated_at
"""
WATCHED_APPS: Final = f"""
SELECT {APP_COLUMNS} FROM apps
WHERE failing_since IS NOT NULL OR paused_reason IS NOT NULL
   OR id IN (SELECT app_id FROM app_notices)
"""
MARKS: Final = "SELECT app_id, state, streak, since FROM app_notices"
MARK_OF: Final = "SELECT state, streak, since FROM app_notices WHERE app_id = ?"
LAST_SENT: Final = """
SELECT app_id, type, max(created_at) AS at FROM notifications
WHERE app_id IN (SELECT value FROM json_each(?)) GROUP BY app_id, type
"""
LAST_ATTEMPT: Final = """
SELECT started_at, error_kind, error FROM attempts
WHERE app_id = ? ORDER BY started_at DESC LIMIT 1
"""
LAST_NOTICE: Final = "SELECT max(created_at) FROM notifications WHERE app_id = ? AND type = ?"
INSERT_NOTICE: Final = """
INSERT INTO notifications (id, account_id, app_id, type, body, created_at)
VALUES (?, ?, ?, ?, ?, ?)
"""
INSERT_DELIVERY: Final = """
INSERT INTO notification_deliveries (notification_id, account_id, platform, channel, target,
                                     state, next_attempt_at, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)
"""
SET_MARK: Final = """
INSERT INTO app_notices (app_id, state, streak, since) VALUES (?, ?, ?, ?)
ON CONFLICT (app_id) DO UPDATE
SET state = excluded.state, streak = excluded.streak, since = excluded.since
"""
CLEAR_MARK: Final = "DELETE FROM app_notices WHERE app_id = ?"
CLAIM: Final = """
UPDATE notification_deliveries SET state = 'sending', next_attempt_at = :lease_until
WHERE id IN (
    SELECT id FROM notification_deliveries
    WHERE state IN ('pending', 'sending') AND next_attempt_at <= :now
    ORDER BY next_attempt_at LIMIT :limit
)
RETURNING id
"""
CLAIMED: Final = f"""
SELECT {DELIVERY_COLUMNS}, n.body FROM notification_deliveries AS d
JOIN notifications AS n ON n.id = d.notification_id
WHERE d.id IN (SELECT value FROM json_each(?)) ORDER BY d.id
"""
PURGE: Final = """
DELETE FROM notifications WHERE id IN (
    SELECT id FROM notifications AS n WHERE created_at < ? AND NOT EXISTS (
        SELECT 1 FROM notification_deliveries AS d
        WHERE d.notification_id = n.id AND d.state IN ('pending', 'sending')
    )
    ORDER BY created_at LIMIT ?
)
"""
FINISH: Final = """
UPDATE notification_deliveries
SET state = ?, attempts = attempts + 1, last_error = ?, next_attempt_at = ?, updated_at = ?
WHERE id = ?
"""
LIST: Final = f"""
SELECT {DELIVERY_COLUMNS} FROM notification_deliveries AS d
JOIN notifications AS n ON n.id = d.notification_id
WHERE (:account IS NULL OR d.account_id = :account) AND (:platform OR NOT d.platform)
  AND (:before IS NULL OR d.id < :before)
ORDER BY d.id DESC LIMIT :limit
"""


ROWS: Final = Rows(from_epoch)


def _ts(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def target(db: sqlite3.Connection, box: SecretBox, account_id: str) -> NotificationTarget | None:
    row = db.execute(SELECT_TARGET, (account_id,)).fetchone()
    if row is None:
        return None
    return NotificationTarget(
        account_id=row["account_id"],
        url=row["url"],
        email=row["email"],
        secret=box.open(row["secret"]),
        updated_at=from_epoch(row["updated_at"]),
    )


def put_target(
    db: sqlite3.Connection, box: SecretBox, account_id: str, values: NotificationTarget
) -> None:
    if db.execute("SELECT 1 FROM accounts WHERE id = ?", (account_id,)).fetchone() is None:
        raise AccountNotFound()
    db.execute(
        UPSERT_TARGET,
        (account_id, values.url, values.email, box.seal(values.secret),
         values.updated_at.timestamp()),
    )  # fmt: skip


def watch_apps(db: sqlite3.Connection) -> list[AppWatch]:
    apps: list[App] = [ROWS.app(row) for row in db.execute(WATCHED_APPS)]
    marks = {row["app_id"]: notice_rows.mark(row, from_epoch) for row in db.execute(MARKS)}
    ids = json_ids(app.id for app in apps)
    sent = notice_rows.last_sent(db.execute(LAST_SENT, (ids,)), from_epoch)
    watches = []
    for app in apps:
        attempt = db.execute(LAST_ATTEMPT, (app.id,)).fetchone()
        watches.append(
            AppWatch(
                app=app,
                mark=marks.get(app.id),
                last_sent=sent.get(app.id, {}),
                last_attempt=None
                if attempt is None
                else notice_rows.last_attempt(attempt, from_epoch),
            )
        )
    return watches


def json_ids(ids: Iterable[str | int]) -> str:
    return json.dumps(list(ids))


def last_notice_at(db: sqlite3.Connection, app_id: str, type: EventType) -> datetime | None:
    value = db.execute(LAST_NOTICE, (app_id, type.value)).fetchone()[0]
    return None if value is None else from_epoch(value)


def record_notice(
    db: sqlite3.Connection,
    notice: Notice,
    destinations: Sequence[Destination],
    change: MarkChange | None,
) -> bool:
    if change is not None and notice.app_id is not None:
        if not _mark_is(db, notice.app_id, change.before):
            return False
        _set_mark(db, notice.app_id, change.after)
    now = notice.created_at.timestamp()
    db.execute(
        INSERT_NOTICE,
        (notice.id, notice.account_id, notice.app_id, notice.type.value, notice.body.decode(), now),
    )
    db.executemany(
        INSERT_DELIVERY,
        [
            (notice.id, notice.account_id, to.platform, to.channel.value, to.target, now, now, now)
            for to in destinations
        ],
    )
    return True


def _mark_is(db: sqlite3.Connection, app_id: str, expected: AppMark | None) -> bool:
    """Whether the app exists and its mark is ``expected``."""
    if db.execute("SELECT 1 FROM apps WHERE id = ?", (app_id,)).fetchone() is None:
        return False
    row = db.execute(MARK_OF, (app_id,)).fetchone()
    return (None if row is None else notice_rows.mark(row, from_epoch)) == expected


def _set_mark(db: sqlite3.Connection, app_id: str, mark: AppMark | None) -> None:
    if mark is None:
        db.execute(CLEAR_MARK, (app_id,))
    else:
        db.execute(SET_MARK, (app_id, mark.state.value, _ts(mark.streak), _ts(mark.since)))


def claim(
    db: sqlite3.Connection, now: datetime, lease_until: datetime, limit: int
) -> list[NoticeDelivery]:
    params = {"now": now.timestamp(), "lease_until": lease_until.timestamp(), "limit": limit}
    ids = [row[0] for row in db.execute(CLAIM, params).fetchall()]
    rows = db.execute(CLAIMED, (json_ids(ids),)).fetchall() if ids else []
    return [notice_rows.delivery(row, from_epoch, row["body"].encode()) for row in rows]


def finish(
    db: sqlite3.Connection,
    delivery_id: int,
    error: str | None,
    next_attempt_at: datetime | None,
    now: datetime,
) -> None:
    db.execute(
        FINISH,
        (notice_rows.finished_state(error, next_attempt_at).value, error, _ts(next_attempt_at),
         now.timestamp(), delivery_id),
    )  # fmt: skip


def list_deliveries(
    db: sqlite3.Connection,
    account_id: str | None,
    platform: bool,
    limit: int,
    before_id: int | None,
) -> list[NoticeDelivery]:
    params = {"account": account_id, "platform": platform, "limit": limit, "before": before_id}
    return [notice_rows.delivery(row, from_epoch) for row in db.execute(LIST, params)]
