"""The audit log on SQLite: entries written inside a store method's transaction, listed,
and purged by time. The PostgreSQL package has the same functions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

from ccpush.audit import AUDIT_COLUMNS, AuditEntry, AuditFilter, audit_conditions, entry_of
from ccpush.store.rows import from_epoch

INSERT_AUDIT: Final = """
INSERT INTO audit_log (at, account_id, app_id, actor, actor_name, source, action, target,
                       before, after)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
LIST_AUDIT: Final = f"""
SELECT {AUDIT_COLUMNS} FROM audit_log WHERE 1 = 1 {{filters}} ORDER BY id DESC LIMIT ?
"""
PURGE_AUDIT: Final = """
DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < ? ORDER BY id LIMIT ?)
"""


def insert_audit(db: sqlite3.Connection, entries: Iterable[AuditEntry | None]) -> None:
    """Keep ``entries`` (None ones skipped) in the transaction ``db`` is in."""
    db.executemany(INSERT_AUDIT, [_values(entry) for entry in entries if entry is not None])


def _values(entry: AuditEntry) -> tuple[Any, ...]:
    before, after = entry.json_values()
    return (
        entry.at.timestamp(),
        entry.account_id,
        entry.app_id,
        entry.actor,
        entry.actor_name,
        entry.source,
        entry.action.value,
        entry.target,
        before,
        after,
    )


def list_audit(db: sqlite3.Connection, query: AuditFilter) -> list[AuditEntry]:
    given = [
        (condition, value.timestamp() if isinstance(value, datetime) else value)
        for condition, value in audit_conditions(query)
    ]
    filters = [f" AND {condition.format('?')}" for condition, _ in given]
    actions = sorted(action.value for action in query.actions)
    if actions:
        filters.append(f" AND action IN ({', '.join('?' * len(actions))})")
    params = [value for _, value in given] + actions + [query.limit]
    rows = db.execute(LIST_AUDIT.format(filters="".join(filters)), params)
    return [entry_of(row, from_epoch(row["at"])) for row in rows]


def purge_audit(db: sqlite3.Connection, before: datetime, limit: int) -> int:
    return db.execute(PURGE_AUDIT, (before.timestamp(), limit)).rowcount
