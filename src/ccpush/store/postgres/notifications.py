"""Operational notifications on PostgreSQL: each function runs on the connection (and in
the transaction) it is given. The SQLite package has the same ones."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Final, TypeAlias

import asyncpg

from ccpush.errors import AccountNotFound
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
from ccpush.store.rows import APP_COLUMNS, Rows, as_stored

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    _Executor: TypeAlias = asyncpg.Pool[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

ROWS: Final = Rows(as_stored)

SELECT_TARGET: Final = (
    "SELECT account_id, url, email, secret, updated_at FROM notification_targets"
    " WHERE account_id = $1"
)
UPSERT_TARGET: Final = """
INSERT INTO notification_targets (account_id, url, email, secret, updated_at)
SELECT id, $2, $3, $4, $5 FROM accounts WHERE id = $1
ON CONFLICT (account_id) DO UPDATE
SET url = excluded.url, email = excluded.email, secret = excluded.secret,
    updated_at = excluded.updated_at
RETURNING account_id
"""
WATCHED_APPS: Final = f"""
SELECT {APP_COLUMNS} FROM apps
WHERE failing_since IS NOT NULL OR paused_reason IS NOT NULL
   OR id IN (SELECT app_id FROM app_notices)
"""
MARKS: Final = "SELECT app_id, state, streak, since FROM app_notices"
MARK_OF: Final = "SELECT state, streak, since FROM app_notices WHERE app_id = $1"
LOCK_APP: Final = "SELECT id FROM apps WHERE id = $1 FOR NO KEY UPDATE"
LAST_SENT: Final = """
SELECT app_id, type, max(created_at) AS at FROM notifications
WHERE app_id = ANY($1::text[]) GROUP BY app_id, type
"""
LAST_ATTEMPT: Final = """
SELECT started_at, error_kind, error FROM attempts
WHERE app_id = $1 ORDER BY started_at DESC LIMIT 1
"""
LAST_NOTICE: Final = "SELECT max(created_at) FROM notifications WHERE app_id = $1 AND type = $2"
INSERT_NOTICE: Final = """
INSERT INTO notifications (id, account_id, app_id, type, body, created_at)
VALUES ($1, $2, $3, $4, $5, $6)
"""
INSERT_DELIVERY: Final = """
INSERT INTO notification_deliveries (notification_id, account_id, platform, channel, target,
                                     state, next_attempt_at, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6, $6)
"""
SET_MARK: Final = """
INSERT INTO app_notices (app_id, state, streak, since) VALUES ($1, $2, $3, $4)
ON CONFLICT (app_id) DO UPDATE
SET state = excluded.state, streak = excluded.streak, since = excluded.since
"""
CLEAR_MARK: Final = "DELETE FROM app_notices WHERE app_id = $1"
CLAIM: Final = f"""
WITH due AS (
    SELECT id FROM notification_deliveries
    WHERE state IN ('pending', 'sending') AND next_attempt_at <= $1
    ORDER BY next_attempt_at LIMIT $3
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE notification_deliveries AS d SET state = 'sending', next_attempt_at = $2
    FROM due WHERE d.id = due.id
    RETURNING d.*
)
SELECT {DELIVERY_COLUMNS}, n.body FROM claimed AS d
JOIN notifications AS n ON n.id = d.notification_id
ORDER BY d.id
"""
PURGE: Final = """
DELETE FROM notifications WHERE id IN (
    SELECT id FROM notifications AS n WHERE created_at < $1 AND NOT EXISTS (
        SELECT 1 FROM notification_deliveries AS d
        WHERE d.notification_id = n.id AND d.state IN ('pending', 'sending')
    )
    ORDER BY created_at LIMIT $2
    FOR UPDATE SKIP LOCKED
)
"""
FINISH: Final = """
UPDATE notification_deliveries
SET state = $1, attempts = attempts + 1, last_error = $2, next_attempt_at = $3, updated_at = $4
WHERE id = $5
"""
LIST: Final = f"""
SELECT {DELIVERY_COLUMNS} FROM notification_deliveries AS d
JOIN notifications AS n ON n.id = d.notification_id
WHERE ($1::text IS NULL OR d.account_id = $1) AND ($2 OR NOT d.platform)
  AND ($4::bigint IS NULL OR d.id < $4)
ORDER BY d.id DESC LIMIT $3
"""


async def target(conn: _Executor, box: SecretBox, account_id: str) -> NotificationTarget | None:
    row = await conn.fetchrow(SELECT_TARGET, account_id)
    if row is None:
        return None
    return NotificationTarget(
        account_id=row["account_id"],
        url=row["url"],
        email=row["email"],
        secret=box.open(row["secret"]),
        updated_at=as_stored(row["updated_at"]),
    )


async def put_target(
    conn: _Executor, box: SecretBox, account_id: str, values: NotificationTarget
) -> None:
    row = await conn.fetchrow(
        UPSERT_TARGET,
        account_id, values.url, values.email, box.seal(values.secret), values.updated_at,
    )  # fmt: skip
    if row is None:
        raise AccountNotFound()


async def watch_apps(conn: _Executor) -> list[AppWatch]:
    apps = [ROWS.app(row) for row in await conn.fetch(WATCHED_APPS)]
    marks = {row["app_id"]: notice_rows.mark(row, as_stored) for row in await conn.fetch(MARKS)}
    rows = await conn.fetch(LAST_SENT, [app.id for app in apps])
    sent = notice_rows.last_sent(rows, as_stored)
    watches = []
    for app in apps:
        attempt = await conn.fetchrow(LAST_ATTEMPT, app.id)
        watches.append(
            AppWatch(
                app=app,
                mark=marks.get(app.id),
                last_sent=sent.get(app.id, {}),
                last_attempt=None
                if attempt is None
                else notice_rows.last_attempt(attempt, as_stored),
            )
        )
    return watches


async def last_notice_at(conn: _Executor, app_id: str, type: EventType) -> datetime | None:
    value = await conn.fetchval(LAST_NOTICE, app_id, type.value)
    return None if value is None else as_stored(value)


async def record_notice(
    conn: _Executor,
    notice: Notice,
    destinations: Sequence[Destination],
    change: MarkChange | None,
) -> bool:
    if change is not None and notice.app_id is not None:
        if not await _mark_is(conn, notice.app_id, change.before):
            return False
        await _set_mark(conn, notice.app_id, change.after)
    now = notice.created_at
    await conn.execute(
        INSERT_NOTICE,
        notice.id, notice.account_id, notice.app_id, notice.type.value, notice.body.decode(), now,
    )  # fmt: skip
    if destinations:
        await conn.executemany(
            INSERT_DELIVERY,
            [
                (notice.id, notice.account_id, to.platform, to.channel.value, to.target, now)
                for to in destinations
            ],
        )
    return True


async def _mark_is(conn: _Executor, app_id: str, expected: AppMark | None) -> bool:
    """Whether the app exists and its mark is ``expected``, the app's row locked against
    another process deciding the same (the app row first: the store's lock order)."""
    if await conn.fetchrow(LOCK_APP, app_id) is None:
        return False
    row = await conn.fetchrow(MARK_OF, app_id)
    return (None if row is None else notice_rows.mark(row, as_stored)) == expected


async def _set_mark(conn: _Executor, app_id: str, mark: AppMark | None) -> None:
    if mark is None:
        await conn.execute(CLEAR_MARK, app_id)
    else:
        await conn.execute(SET_MARK, app_id, mark.state.value, mark.streak, mark.since)


async def claim(
    conn: _Executor, now: datetime, lease_until: datetime, limit: int
) -> list[NoticeDelivery]:
    rows = await conn.fetch(CLAIM, now, lease_until, limit)
    return [notice_rows.delivery(row, as_stored, row["body"].encode()) for row in rows]


async def finish(
    conn: _Executor,
    delivery_id: int,
    error: str | None,
    next_attempt_at: datetime | None,
    now: datetime,
) -> None:
    state = notice_rows.finished_state(error, next_attempt_at)
    await conn.execute(FINISH, state.value, error, next_attempt_at, now, delivery_id)


async def list_deliveries(
    conn: _Executor,
    account_id: str | None,
    platform: bool,
    limit: int,
    before_id: int | None,
) -> list[NoticeDelivery]:
    rows = await conn.fetch(LIST, account_id, platform, limit, before_id)
    return [notice_rows.delivery(row, as_stored) for row in rows]
