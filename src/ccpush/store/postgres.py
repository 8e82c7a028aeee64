"""The PostgreSQL store: for many workers on many machines.

Workers claim with ``FOR UPDATE SKIP LOCKED`` under a lease, commit the claim, then push:
no transaction is held open across an HTTP request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from ccpush.errors import AppNotFound, MigrationError, StoreError
from ccpush.models import (
    App,
    Attempt,
    Claimed,
    Completion,
    Delivery,
    DeliveryState,
    ErrorKind,
    IngestResult,
    NewRecord,
)
from ccpush.store.base import (
    UNSET,
    Store,
    _Unset,
    ingest_results,
    load_migrations,
    new_app_id,
    unique_by_session,
)

_MIGRATION_LOCK = 0x63637075  # "ccpu": one migrator at a time across all processes

CLAIM_DUE = """
WITH due AS (
    SELECT id FROM deliveries
    WHERE state = 'pending' AND next_attempt_at <= $1
    ORDER BY next_attempt_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE deliveries AS d
SET state = 'sending', lease_until = $3, lease_owner = $4, updated_at = $1
FROM due, call_records AS r, apps AS a
WHERE d.id = due.id AND r.id = d.record_id AND a.id = d.app_id AND a.push_url IS NOT NULL
RETURNING d.id, d.app_id, r.call_session_id, a.push_url, r.body, d.attempts,
          d.first_attempt_at, d.next_attempt_at
"""

# A delivery due again while its app has no push address waits as held instead.
_NEXT_STATE = """
CASE WHEN $1 = 'pending'
      AND (SELECT push_url FROM apps WHERE apps.id = deliveries.app_id) IS NULL
     THEN 'held' ELSE $1 END
"""

COMPLETE = f"""
UPDATE deliveries
SET state = {_NEXT_STATE}, attempts = $2, next_attempt_at = $3,
    first_attempt_at = coalesce(first_attempt_at, $4),
    lease_until = NULL, lease_owner = NULL, updated_at = $4
WHERE id = $5 AND state = 'sending' AND lease_owner = $6
"""

RELEASE_EXPIRED = f"""
UPDATE deliveries
SET state = {_NEXT_STATE}, lease_until = NULL, lease_owner = NULL, updated_at = $2
WHERE state = 'sending' AND lease_until <= $2
"""

INSERT_RECORDS = """
INSERT INTO call_records (app_id, call_session_id, body, call_start, received_at)
SELECT $1, sid, body, start, $5
FROM unnest($2::text[], $3::bytea[], $4::timestamptz[]) AS input (sid, body, start)
ON CONFLICT (app_id, call_session_id) DO NOTHING
RETURNING id, call_session_id
"""

INSERT_ATTEMPT = """
INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, error_kind,
                      error, response_excerpt)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""


class PostgresStore(Store):
    def __init__(self, dsn: str, *, schema: str | None = None, max_connections: int = 10) -> None:
        if schema is not None and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise StoreError(f"invalid schema name {schema!r}")
        self.dsn = dsn
        self.schema = schema
        self.max_connections = max_connections
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """``postgresql://user@host:port/db``; ``?schema=name`` keeps ccpush in its own schema."""
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        schema = query.pop("schema", None)
        dsn = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(query)))
        return cls(dsn, schema=schema)

    @property
    def pool(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None:
            raise RuntimeError("the store is not open")
        return self._pool

    async def open(self, *, migrate: bool = True) -> None:
        if self._pool is not None:
            return
        settings = {"search_path": self.schema} if self.schema else {}
        try:
            if self.schema:
                conn = await asyncpg.connect(self.dsn)
                try:
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                finally:
                    await conn.close()
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=self.max_connections, server_settings=settings
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc
        if migrate:
            await self.migrate()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def migrate(self) -> list[str]:
        applied = []
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
            for migration in load_migrations("postgres"):
                if migration.version in done:
                    continue
                try:
                    await conn.execute(migration.sql)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"migration {migration.version} failed: {exc}") from exc
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
                applied.append(f"{migration.version:04d}_{migration.name}")
        return applied

    # Voice applications

    async def create_app(self, *, name: str, push_url: str | None, now: datetime) -> App:
        app_id = new_app_id()
        await self.pool.execute(
            "INSERT INTO apps (id, name, push_url, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $4)",
            app_id,
            name,
            push_url,
            now,
        )
        return App(id=app_id, name=name, push_url=push_url, created_at=now, updated_at=now)

    async def get_app(self, app_id: str) -> App:
        return await self._get_app(self.pool, app_id)

    @staticmethod
    async def _get_app(conn: Any, app_id: str, *, lock: bool = False) -> App:
        row = await conn.fetchrow(
            "SELECT id, name, push_url, created_at, updated_at FROM apps WHERE id = $1"
            + (" FOR UPDATE" if lock else ""),
            app_id,
        )
        if row is None:
            raise AppNotFound()
        return App(**dict(row))

    async def update_app(
        self,
        app_id: str,
        *,
        now: datetime,
        name: str | _Unset = UNSET,
        push_url: str | _Unset | None = UNSET,
    ) -> App:
        async with self.pool.acquire() as conn, conn.transaction():
            before = await self._get_app(conn, app_id, lock=True)
            if not isinstance(name, _Unset):
                await conn.execute("UPDATE apps SET name = $2 WHERE id = $1", app_id, name)
            if not isinstance(push_url, _Unset):
                await conn.execute("UPDATE apps SET push_url = $2 WHERE id = $1", app_id, push_url)
                if push_url is None and before.push_url is not None:
                    await conn.execute(
                        "UPDATE deliveries SET state = 'held', updated_at = $2"
                        " WHERE app_id = $1 AND state = 'pending'",
                        app_id,
                        now,
                    )
                elif push_url is not None and before.push_url is None:
                    await conn.execute(
                        "UPDATE deliveries SET state = 'pending', next_attempt_at = $2,"
                        " updated_at = $2 WHERE app_id = $1 AND state = 'held'",
                        app_id,
                        now,
                    )
            await conn.execute("UPDATE apps SET updated_at = $2 WHERE id = $1", app_id, now)
            return await self._get_app(conn, app_id)

    # Records

    async def ingest(
        self, app_id: str, records: Sequence[NewRecord], *, now: datetime
    ) -> list[IngestResult]:
        unique = unique_by_session(records)
        async with self.pool.acquire() as conn, conn.transaction():
            app = await self._get_app(conn, app_id)
            inserted = await conn.fetch(
                INSERT_RECORDS,
                app_id,
                [record.call_session_id for record in unique],
                [record.body for record in unique],
                [record.call_start for record in unique],
                now,
            )
            state = DeliveryState.PENDING if app.push_url else DeliveryState.HELD
            await conn.execute(
                "INSERT INTO deliveries"
                " (record_id, app_id, state, next_attempt_at, created_at, updated_at)"
                " SELECT id, $2, $3, $4, $4, $4 FROM unnest($1::bigint[]) AS ids (id)",
                [row[0] for row in inserted],
                app_id,
                state,
                now,
            )
        return ingest_results(records, {row[1] for row in inserted})

    async def deliveries_of(self, app_id: str, call_session_id: str) -> list[Delivery]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT d.id, d.state, d.attempts, d.next_attempt_at, d.created_at, d.updated_at"
                " FROM deliveries d JOIN call_records r ON r.id = d.record_id"
                " WHERE r.app_id = $1 AND r.call_session_id = $2 ORDER BY d.id DESC",
                app_id,
                call_session_id,
            )
            found = []
            for row in rows:
                attempts = await conn.fetch(
                    "SELECT number, started_at, duration_ms, status_code, error_kind, error,"
                    " response_excerpt FROM attempts WHERE delivery_id = $1 ORDER BY number, id",
                    row["id"],
                )
                state = DeliveryState(row["state"])
                found.append(
                    Delivery(
                        id=row["id"],
                        app_id=app_id,
                        call_session_id=call_session_id,
                        state=state,
                        attempts=row["attempts"],
                        next_attempt_at=(
                            None if state is DeliveryState.HELD else row["next_attempt_at"]
                        ),
                        created_at=row["created_at"],
                        updated_at=row["updated_at"],
                        attempt_log=tuple(_attempt(attempt) for attempt in attempts),
                    )
                )
        return found

    async def count_by_state(self, app_id: str | None = None) -> dict[DeliveryState, int]:
        counts = dict.fromkeys(DeliveryState, 0)
        rows = await self.pool.fetch(
            "SELECT state, count(*) FROM deliveries WHERE $1::text IS NULL OR app_id = $1"
            " GROUP BY state",
            app_id,
        )
        for state, count in rows:
            counts[DeliveryState(state)] = count
        return counts

    # Dispatching

    async def claim_due(
        self, *, now: datetime, limit: int, lease_until: datetime, owner: str
    ) -> list[Claimed]:
        rows = await self.pool.fetch(CLAIM_DUE, now, limit, lease_until, owner)
        rows.sort(key=lambda row: row["next_attempt_at"])
        return [
            Claimed(
                delivery_id=row["id"],
                app_id=row["app_id"],
                call_session_id=row["call_session_id"],
                push_url=row["push_url"],
                body=row["body"],
                attempt=row["attempts"] + 1,
                first_attempt_at=row["first_attempt_at"],
            )
            for row in rows
        ]

    async def complete(self, completions: Sequence[Completion], *, owner: str) -> None:
        if not completions:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                INSERT_ATTEMPT,
                [
                    (
                        done.claimed.delivery_id,
                        done.claimed.attempt,
                        done.outcome.started_at,
                        done.outcome.duration_ms,
                        done.outcome.status_code,
                        done.outcome.error_kind,
                        done.outcome.error,
                        done.outcome.response_excerpt,
                    )
                    for done in completions
                ],
            )
            await conn.executemany(
                COMPLETE,
                [
                    (
                        done.next_state.value,
                        done.claimed.attempt,
                        done.next_attempt_at,
                        done.outcome.started_at,
                        done.claimed.delivery_id,
                        owner,
                    )
                    for done in completions
                ],
            )

    async def release_expired(self, *, now: datetime) -> int:
        status = await self.pool.execute(RELEASE_EXPIRED, DeliveryState.PENDING.value, now)
        return int(status.split()[-1])

    async def next_due_at(self) -> datetime | None:
        value: datetime | None = await self.pool.fetchval(
            "SELECT min(next_attempt_at) FROM deliveries WHERE state = 'pending'"
        )
        return value


def _attempt(row: asyncpg.Record) -> Attempt:
    kind = row["error_kind"]
    return Attempt(
        number=row["number"],
        started_at=row["started_at"],
        duration_ms=row["duration_ms"],
        status_code=row["status_code"],
        error_kind=ErrorKind(kind) if kind else None,
        error=row["error"],
        response_excerpt=row["response_excerpt"],
    )
