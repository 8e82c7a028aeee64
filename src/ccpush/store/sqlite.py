"""The SQLite store: the zero-setup default. One file, WAL, one writer thread.

Every unit of work runs on one dedicated thread that owns the connection, so the event
loop never blocks on disk and transactions never interleave. Writes take
``BEGIN IMMEDIATE`` so they wait for the lock instead of failing half-way.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from ccpush.errors import AppNotFound, MigrationError
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

T = TypeVar("T")


def _ts(when: datetime) -> float:
    return when.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _dt_req(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


# A delivery due again while its app has no push address waits as held instead.
_NEXT_STATE = (
    "CASE WHEN :state = 'pending' AND"
    " (SELECT push_url FROM apps WHERE apps.id = deliveries.app_id) IS NULL"
    " THEN 'held' ELSE :state END"
)


class SqliteStore(Store):
    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL") -> None:
        self.path = str(path)
        self.synchronous = synchronous.upper()
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    @classmethod
    def from_url(cls, url: str) -> SqliteStore:
        """``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``?synchronous=full``."""
        parts = urlsplit(url)
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        options = parse_qs(parts.query)
        return cls(path or ":memory:", synchronous=options.get("synchronous", ["NORMAL"])[0])

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("the store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the store is not open")
        return self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    async def open(self, *, migrate: bool = True) -> None:
        if self._executor is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ccpush-sqlite")
        await self._run(self._connect)
        if migrate:
            await self.migrate()

    def _connect(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA foreign_keys=ON")
        self._conn = conn

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._run(self._disconnect)
        self._executor.shutdown(wait=True)
        self._executor = None

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def migrate(self) -> list[str]:
        return await self._run(self._migrate)

    def _migrate(self) -> list[str]:
        applied = []
        with self._write() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            done = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
            for migration in load_migrations("sqlite"):
                if migration.version in done:
                    continue
                try:
                    for statement in migration.sql.split(";"):
                        if statement.strip():
                            db.execute(statement)
                except sqlite3.Error as exc:
                    raise MigrationError(f"migration {migration.version} failed: {exc}") from exc
                db.execute(
                    "INSERT INTO schema_migrations"
                    " VALUES (?, ?, CAST(strftime('%s', 'now') AS REAL))",
                    (migration.version, migration.name),
                )
                applied.append(f"{migration.version:04d}_{migration.name}")
        return applied

    # Voice applications

    async def create_app(self, *, name: str, push_url: str | None, now: datetime) -> App:
        app_id = new_app_id()
        await self._run(self._create_app, app_id, name, push_url, _ts(now))
        return App(id=app_id, name=name, push_url=push_url, created_at=now, updated_at=now)

    def _create_app(self, app_id: str, name: str, push_url: str | None, now: float) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO apps (id, name, push_url, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (app_id, name, push_url, now, now),
            )

    async def get_app(self, app_id: str) -> App:
        return await self._run(self._get_app, app_id)

    def _get_app(self, app_id: str) -> App:
        row = self._db.execute(
            "SELECT id, name, push_url, created_at, updated_at FROM apps WHERE id = ?", (app_id,)
        ).fetchone()
        if row is None:
            raise AppNotFound()
        return App(
            id=row[0],
            name=row[1],
            push_url=row[2],
            created_at=_dt_req(row[3]),
            updated_at=_dt_req(row[4]),
        )

    async def update_app(
        self,
        app_id: str,
        *,
        now: datetime,
        name: str | _Unset = UNSET,
        push_url: str | _Unset | None = UNSET,
    ) -> App:
        return await self._run(self._update_app, app_id, _ts(now), name, push_url)

    def _update_app(
        self, app_id: str, now: float, name: str | _Unset, push_url: str | _Unset | None
    ) -> App:
        with self._write() as db:
            before = self._get_app(app_id)
            if not isinstance(name, _Unset):
                db.execute("UPDATE apps SET name = ? WHERE id = ?", (name, app_id))
            if not isinstance(push_url, _Unset):
                db.execute("UPDATE apps SET push_url = ? WHERE id = ?", (push_url, app_id))
                if push_url is None and before.push_url is not None:
                    db.execute(
                        "UPDATE deliveries SET state = 'held', updated_at = ?"
                        " WHERE app_id = ? AND state = 'pending'",
                        (now, app_id),
                    )
                elif push_url is not None and before.push_url is None:
                    db.execute(
                        "UPDATE deliveries SET state = 'pending', next_attempt_at = ?,"
                        " updated_at = ? WHERE app_id = ? AND state = 'held'",
                        (now, now, app_id),
                    )
            db.execute("UPDATE apps SET updated_at = ? WHERE id = ?", (now, app_id))
            return self._get_app(app_id)

    # Records

    async def ingest(
        self, app_id: str, records: Sequence[NewRecord], *, now: datetime
    ) -> list[IngestResult]:
        return await self._run(self._ingest, app_id, records, _ts(now))

    def _ingest(self, app_id: str, records: Sequence[NewRecord], now: float) -> list[IngestResult]:
        accepted: set[str] = set()
        with self._write() as db:
            app = self._get_app(app_id)
            state = DeliveryState.PENDING if app.push_url else DeliveryState.HELD
            for record in unique_by_session(records):
                row = db.execute(
                    "INSERT INTO call_records"
                    " (app_id, call_session_id, body, call_start, received_at)"
                    " VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (app_id, call_session_id) DO NOTHING RETURNING id",
                    (app_id, record.call_session_id, record.body, _ts(record.call_start), now),
                ).fetchone()
                if row is None:
                    continue
                db.execute(
                    "INSERT INTO deliveries"
                    " (record_id, app_id, state, next_attempt_at, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (row[0], app_id, state, now, now, now),
                )
                accepted.add(record.call_session_id)
        return ingest_results(records, accepted)

    async def deliveries_of(self, app_id: str, call_session_id: str) -> list[Delivery]:
        return await self._run(self._deliveries_of, app_id, call_session_id)

    def _deliveries_of(self, app_id: str, call_session_id: str) -> list[Delivery]:
        rows = self._db.execute(
            "SELECT d.id, d.state, d.attempts, d.next_attempt_at, d.created_at, d.updated_at"
            " FROM deliveries d JOIN call_records r ON r.id = d.record_id"
            " WHERE r.app_id = ? AND r.call_session_id = ? ORDER BY d.id DESC",
            (app_id, call_session_id),
        ).fetchall()
        return [
            Delivery(
                id=row[0],
                app_id=app_id,
                call_session_id=call_session_id,
                state=DeliveryState(row[1]),
                attempts=row[2],
                next_attempt_at=_dt(row[3]) if row[1] != DeliveryState.HELD else None,
                created_at=_dt_req(row[4]),
                updated_at=_dt_req(row[5]),
                attempt_log=self._attempts(row[0]),
            )
            for row in rows
        ]

    def _attempts(self, delivery_id: int) -> tuple[Attempt, ...]:
        rows = self._db.execute(
            "SELECT number, started_at, duration_ms, status_code, error_kind, error,"
            " response_excerpt FROM attempts WHERE delivery_id = ? ORDER BY number, id",
            (delivery_id,),
        ).fetchall()
        return tuple(
            Attempt(
                number=row[0],
                started_at=_dt_req(row[1]),
                duration_ms=row[2],
                status_code=row[3],
                error_kind=ErrorKind(row[4]) if row[4] else None,
                error=row[5],
                response_excerpt=row[6],
            )
            for row in rows
        )

    async def count_by_state(self, app_id: str | None = None) -> dict[DeliveryState, int]:
        return await self._run(self._count_by_state, app_id)

    def _count_by_state(self, app_id: str | None) -> dict[DeliveryState, int]:
        counts = dict.fromkeys(DeliveryState, 0)
        if app_id is None:
            rows = self._db.execute("SELECT state, count(*) FROM deliveries GROUP BY state")
        else:
            rows = self._db.execute(
                "SELECT state, count(*) FROM deliveries WHERE app_id = ? GROUP BY state",
                (app_id,),
            )
        for state, count in rows:
            counts[DeliveryState(state)] = count
        return counts

    # Dispatching

    async def claim_due(
        self, *, now: datetime, limit: int, lease_until: datetime, owner: str
    ) -> list[Claimed]:
        return await self._run(self._claim_due, _ts(now), limit, _ts(lease_until), owner)

    def _claim_due(self, now: float, limit: int, lease_until: float, owner: str) -> list[Claimed]:
        with self._write() as db:
            ids = [
                row[0]
                for row in db.execute(
                    "UPDATE deliveries SET state = 'sending', lease_until = ?, lease_owner = ?,"
                    " updated_at = ?"
                    " WHERE id IN (SELECT id FROM deliveries"
                    "   WHERE state = 'pending' AND next_attempt_at <= ?"
                    "   ORDER BY next_attempt_at LIMIT ?)"
                    " RETURNING id",
                    (lease_until, owner, now, now, limit),
                )
            ]
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            rows = db.execute(
                "SELECT d.id, d.app_id, r.call_session_id, a.push_url, r.body, d.attempts,"
                " d.first_attempt_at, d.next_attempt_at"
                " FROM deliveries d JOIN call_records r ON r.id = d.record_id"
                f" JOIN apps a ON a.id = d.app_id WHERE d.id IN ({marks})",
                ids,
            ).fetchall()
        rows.sort(key=lambda row: row[7])
        return [
            Claimed(
                delivery_id=row[0],
                app_id=row[1],
                call_session_id=row[2],
                push_url=row[3],
                body=bytes(row[4]),
                attempt=row[5] + 1,
                first_attempt_at=_dt(row[6]),
            )
            for row in rows
        ]

    async def complete(self, completions: Sequence[Completion], *, owner: str) -> None:
        if completions:
            await self._run(self._complete, completions, owner)

    def _complete(self, completions: Sequence[Completion], owner: str) -> None:
        with self._write() as db:
            db.executemany(
                "INSERT INTO attempts (delivery_id, number, started_at, duration_ms,"
                " status_code, error_kind, error, response_excerpt)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [_attempt_row(done) for done in completions],
            )
            db.executemany(
                f"UPDATE deliveries SET state = {_NEXT_STATE}, attempts = :attempt,"
                " next_attempt_at = :next_at, first_attempt_at = coalesce(first_attempt_at, :at),"
                " lease_until = NULL, lease_owner = NULL, updated_at = :at"
                " WHERE id = :id AND state = 'sending' AND lease_owner = :owner",
                [
                    {
                        "state": done.next_state,
                        "attempt": done.claimed.attempt,
                        "next_at": _ts(done.next_attempt_at) if done.next_attempt_at else None,
                        "at": _ts(done.outcome.started_at),
                        "id": done.claimed.delivery_id,
                        "owner": owner,
                    }
                    for done in completions
                ],
            )

    async def release_expired(self, *, now: datetime) -> int:
        return await self._run(self._release_expired, _ts(now))

    def _release_expired(self, now: float) -> int:
        with self._write() as db:
            cursor = db.execute(
                f"UPDATE deliveries SET state = {_NEXT_STATE},"
                " lease_until = NULL, lease_owner = NULL, updated_at = :now"
                " WHERE state = 'sending' AND lease_until <= :now",
                {"state": DeliveryState.PENDING, "now": now},
            )
            return cursor.rowcount

    async def next_due_at(self) -> datetime | None:
        return await self._run(self._next_due_at)

    def _next_due_at(self) -> datetime | None:
        row = self._db.execute(
            "SELECT min(next_attempt_at) FROM deliveries WHERE state = 'pending'"
        ).fetchone()
        return _dt(row[0])


def _attempt_row(done: Completion) -> tuple[Any, ...]:
    outcome = done.outcome
    return (
        done.claimed.delivery_id,
        done.claimed.attempt,
        _ts(outcome.started_at),
        outcome.duration_ms,
        outcome.status_code,
        outcome.error_kind,
        outcome.error,
        outcome.response_excerpt,
    )
