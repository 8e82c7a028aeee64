"""The audit log on PostgreSQL: entries written inside a store method's transaction,
listed, and purged by time. The SQLite package has the same functions."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import asyncpg

from ccpush.audit import AUDIT_COLUMNS, AuditEntry, AuditFilter, audit_conditions, entry_of

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    _Executor: TypeAlias = asyncpg.Pool[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

INSERT_AUDIT: Final = """
INSERT INTO audit_log (at, account_id, app_id, actor, actor_name, source, action, target,
                       before, after)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""
LIST_AUDIT: Final = f"""
SELECT {AUDIT_COLUMNS} FROM audit_log WHERE true {{filters}} ORDER BY id DESC LIMIT $1
"""
PURGE_AUDIT: Final = """
DELETE FROM audit_log WHERE id IN (
    SELECT id FROM audit_log WHERE at < $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
)
"""


async def insert_audit(conn: _Executor, entries: Iterable[AuditEntry | None]) -> None:
    """Keep ``entries`` (None ones skipped) in the transaction ``conn`` is in."""
    values = [_values(entry) for entry in entries if entry is not None]
    if values:
        await conn.executemany(INSERT_AUDIT, values)


def _values(entry: AuditEntry) -> tuple[Any, ...]:
    before, after = entry.json_values()
    return (
        entry.at,
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


async def list_audit(conn: _Executor, query: AuditFilter) -> list[AuditEntry]:
    given = audit_conditions(query)
    filters = [
        f" AND {condition.format(f'${number}')}"
        for number, (condition, _) in enumerate(given, start=2)
    ]
    params: list[Any] = [value for _, value in given]
    if query.actions:
        filters.append(f" AND action = ANY(${len(given) + 2}::text[])")
        params.append(sorted(action.value for action in query.actions))
    rows = await conn.fetch(LIST_AUDIT.format(filters="".join(filters)), query.limit, *params)
    return [entry_of(row, row["at"]) for row in rows]


async def purge_audit(conn: _Executor, before: datetime, limit: int) -> int:
    status = await conn.execute(PURGE_AUDIT, before, limit)
    return int(status.split()[-1])
