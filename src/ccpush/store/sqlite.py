"""The SQLite store: the zero-setup default. One file, WAL, one writer thread.

Every unit of work runs on one dedicated thread that owns the connection, so the event
loop never blocks on disk and transactions never interleave. Writes take
``BEGIN IMMEDIATE`` so they wait for the lock instead of failing half-way.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import parse_qs, urlsplit

from ccpush.errors import (
    AccountNotFound,
    AppNotFound,
    KeyNotFound,
    MigrationError,
    RecordNotFound,
    ReplayNotFound,
    ReplayTooLarge,
)
from ccpush.models import (
    Account,
    ApiKey,
    App,
    Attempt,
    AttemptBucket,
    Claimed,
    Completion,
    Delivery,
    DeliveryState,
    ErrorKind,
    IngestResult,
    KeyScope,
    NewRecord,
    ReplayJob,
    ReplayKind,
    ReplayState,
    SigningKeys,
    StoredRecord,
)
from ccpush.signing import generate_secret
from ccpush.store.base import (
    COUNT_BY_STATE,
    DEFAULT_ACCOUNT,
    UNSET,
    DeliveryFilter,
    IngestPlan,
    IngestRequest,
    Latest,
    RecordFilter,
    Store,
    _Unset,
    app_changes,
    counts_by_state,
    failure_streaks,
    load_migrations,
    new_app_id,
    new_id,
    plan_ingest,
    translating,
)

T = TypeVar("T")

KEY_CACHE_SECONDS: Final = 5.0
"""How long a key found by ``key_by_hash`` is answered from memory."""
KEY_CACHE_SIZE: Final = 1024


def _ts(when: datetime) -> float:
    return when.timestamp()


def _ts_or_none(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _dt_req(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _marks(rows: int, columns: int) -> str:
    """``(?, ?), (?, ?)``: placeholders for a multi-row VALUES."""
    row = "(" + ", ".join("?" * columns) + ")"
    return ", ".join([row] * rows)


def _chunks(items: Sequence[T], size: int = 1000) -> Iterator[Sequence[T]]:
    """Slices of at most ``size`` (a statement has at most 32,766 parameters)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


# A delivery due again while its app is not pushing (no address, or paused) is held.
_NEXT_STATE = (
    "CASE WHEN :state = 'pending' AND (SELECT push_url IS NULL OR paused FROM apps"
    " WHERE apps.id = deliveries.app_id) THEN 'held' ELSE :state END"
)

_APP_COLUMNS = (
    "id, account_id, name, push_url, paused, signing, created_at, updated_at, failing_since,"
    " paused_reason"
)
_KEY_COLUMNS = "id, account_id, name, scope, prefix, created_at, revoked_at"
_REPLAY_COLUMNS = (
    "id, app_id, kind, range_from, range_to, state, total, enqueued, created_at, updated_at,"
    " finished_at"
)
_DELIVERY_COLUMNS = (
    "d.id, d.app_id, r.call_session_id, d.record_id, d.replay_id, v.version, v.seq, d.state,"
    " d.attempts, d.next_attempt_at, d.created_at, d.updated_at"
)
_VERSION_COLUMNS = "v.id, r.call_session_id, r.call_start, v.version, v.seq, v.received_at, v.body"
# The latest version of record :record, for a new delivery of it.
_LATEST_VERSION = (
    "(SELECT v.id FROM record_versions v JOIN call_records r ON r.id = v.record_id"
    " WHERE r.id = :record AND v.version = r.version)"
)
# Claiming, fair between apps (see ``Store.claim_due``). ?1 now, ?2 the batch, ?3 a JSON
# array of the apps to skip, ?4 a JSON object of apps' limits. ``busy``: the apps with due
# work; each gets an equal share of the batch per lane, read oldest first from the lane's
# index; the candidates are then taken in turns (an app's first, every app's second...), a
# retry's turn counting three, each app within its limit. The bodies come as one BLOB, in
# the order of the rows (both aggregates read the same rows), each as long as its row says:
# cheaper to cut than to decode from JSON.
_CLAIM_LANE = """
    SELECT d.id, d.app_id, d.next_attempt_at, {lane} AS lane FROM busy JOIN deliveries AS d
    ON d.id IN (SELECT id FROM deliveries WHERE app_id = busy.app AND state = 'pending'
                AND attempts {attempts} AND next_attempt_at <= ?1 ORDER BY next_attempt_at
                LIMIT (SELECT per_app FROM share))
"""
# The apps with pending deliveries, found by skipping from one app to the next along a
# lane's index (a loose index scan): the cost follows the apps with work, not all apps.
_APPS_IN_LANE = """
{name}(app) AS (
    SELECT (SELECT app_id FROM deliveries INDEXED BY {index}
            WHERE state = 'pending' AND attempts {attempts} ORDER BY app_id LIMIT 1)
    UNION ALL
    SELECT (SELECT app_id FROM deliveries INDEXED BY {index}
            WHERE state = 'pending' AND attempts {attempts} AND app_id > {name}.app
            ORDER BY app_id LIMIT 1)
    FROM {name} WHERE {name}.app IS NOT NULL)"""
CLAIM_DUE = f"""
WITH RECURSIVE
{_APPS_IN_LANE.format(name="first_apps", index="deliveries_due_first", attempts="= 0")},
{_APPS_IN_LANE.format(name="retry_apps", index="deliveries_due_retry", attempts="> 0")},
busy AS (
    SELECT a.id AS app FROM apps AS a
    WHERE a.id IN (SELECT app FROM first_apps UNION SELECT app FROM retry_apps)
      AND a.push_url IS NOT NULL AND NOT a.paused
      AND a.id NOT IN (SELECT value FROM json_each(?3))
      AND (EXISTS (SELECT 1 FROM deliveries WHERE app_id = a.id AND state = 'pending'
                   AND attempts = 0 AND next_attempt_at <= ?1)
           OR EXISTS (SELECT 1 FROM deliveries WHERE app_id = a.id AND state = 'pending'
                      AND attempts > 0 AND next_attempt_at <= ?1))),
share AS (SELECT (?2 + count(*) - 1) / max(count(*), 1) AS per_app FROM busy),
due AS ({_CLAIM_LANE.format(lane=0, attempts="= 0")} UNION ALL
        {_CLAIM_LANE.format(lane=1, attempts="> 0")}),
chosen AS (
    SELECT id FROM (
        SELECT id, app_id, next_attempt_at,
               row_number() OVER (PARTITION BY app_id, lane ORDER BY next_attempt_at)
               * (1 + 2 * lane) AS turn,
               row_number() OVER (PARTITION BY app_id ORDER BY lane, next_attempt_at) AS nth
        FROM due)
    WHERE nth <= coalesce(json_extract(?4, '$."' || app_id || '"'), nth)
    ORDER BY turn, next_attempt_at LIMIT ?2)
SELECT json_group_array(d.id), json_group_array(json_array(
    d.id, d.app_id, r.call_session_id, a.push_url, length(v.body), d.attempts,
    d.first_attempt_at, d.next_attempt_at, a.signing, a.signing_secret, a.previous_secret,
    a.previous_secret_until, v.seq, v.version)),
    CAST(group_concat(CAST(v.body AS TEXT), '') AS BLOB)
FROM chosen JOIN deliveries AS d ON d.id = chosen.id JOIN call_records AS r ON r.id = d.record_id
JOIN record_versions AS v ON v.id = d.version_id JOIN apps AS a ON a.id = d.app_id
"""
CLAIM_LEASE = """
UPDATE deliveries SET state = 'sending', lease_until = ?, lease_owner = ?, updated_at = ?
WHERE id IN (SELECT value FROM json_each(?))
"""
# Waiting deliveries of an app that stops pushing are held: the pending ones, lane by lane
# (each lane has its index).
HOLD_WAITING = tuple(
    "UPDATE deliveries SET state = 'held', updated_at = ?"
    f" WHERE app_id = ? AND state = 'pending' AND attempts {lane}"
    for lane in ("= 0", "> 0")
)
# Deliveries by state, each read from its own (partial) index: of one app (?1), of all.
APP_COUNT_BY_STATE = """
SELECT 'pending', count(*) FROM deliveries WHERE app_id = ?1 AND state = 'pending' AND attempts = 0
UNION ALL
SELECT 'pending', count(*) FROM deliveries WHERE app_id = ?1 AND state = 'pending' AND attempts > 0
UNION ALL
SELECT 'held', count(*) FROM deliveries WHERE app_id = ?1 AND state = 'held'
UNION ALL
SELECT 'sending', count(*) FROM deliveries INDEXED BY deliveries_leased
WHERE state = 'sending' AND app_id = ?1
UNION ALL
SELECT state, count(*) FROM deliveries WHERE app_id = ?1 AND state IN ('delivered', 'failed')
GROUP BY state
"""
RELEASE = f"""
UPDATE deliveries SET state = {_NEXT_STATE}, lease_until = NULL, lease_owner = NULL,
    updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'sending' AND lease_owner = :owner
"""

# Completing: ?1 is a JSON array of ``_completion_row``s, ?2 the worker that must hold them.
# An attempt is kept unless its delivery was deleted with its app meanwhile.
INSERT_ATTEMPTS = """
INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, error_kind,
                      error, response_excerpt, app_id)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
       value ->> 6, value ->> 7, value ->> 10
FROM json_each(?1)
WHERE EXISTS (SELECT 1 FROM deliveries WHERE id = value ->> 0)
"""
COMPLETE = f"""
UPDATE deliveries SET state = {_NEXT_STATE.replace(":state", "done.state")},
    attempts = done.number, next_attempt_at = done.next_at,
    first_attempt_at = coalesce(first_attempt_at, done.at), lease_until = NULL,
    lease_owner = NULL, updated_at = done.at
FROM (SELECT value ->> 0 AS id, value ->> 1 AS number, value ->> 2 AS at,
             value ->> 8 AS state, value ->> 9 AS next_at FROM json_each(?1)) AS done
WHERE deliveries.id = done.id AND deliveries.state = 'sending' AND deliveries.lease_owner = ?2
"""
# Failing streaks: ?1 a JSON array of [app, succeeded (1/0), failing since or null]. A
# success restarts the streak at the first failure after it; a failure starts one if none.
STREAKS = """
UPDATE apps SET failing_since = streak.since
FROM (SELECT value ->> 0 AS app, value ->> 1 AS succeeded, value ->> 2 AS since
      FROM json_each(?1)) AS streak
WHERE apps.id = streak.app AND CASE WHEN streak.succeeded
    THEN apps.failing_since IS NOT streak.since ELSE apps.failing_since IS NULL END
"""

# Deleting records ({ids}: their ids), each table before those it references.
_PURGE = (
    "DELETE FROM attempts WHERE delivery_id IN"
    " (SELECT id FROM deliveries WHERE record_id IN ({ids}))",
    "DELETE FROM deliveries WHERE record_id IN ({ids})",
    "DELETE FROM record_versions WHERE record_id IN ({ids})",
    "DELETE FROM call_records WHERE id IN ({ids})",
)
# The records a replay covers: its range, or those whose latest delivery failed since then.
_REPLAY_SELECTION = {
    ReplayKind.RANGE: "r.app_id = :app AND r.call_start >= :from AND r.call_start < :to",
    ReplayKind.FAILED: (
        "r.app_id = :app AND EXISTS (SELECT 1 FROM deliveries d WHERE d.record_id = r.id"
        " AND d.state = 'failed' AND d.updated_at >= :from"
        " AND d.id = (SELECT max(id) FROM deliveries WHERE record_id = r.id))"
    ),
}


@translating(sqlite3.Error)
class SqliteStore(Store):
    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL") -> None:
        self.path = str(path)
        self.synchronous = synchronous.upper()
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._keys: dict[str, tuple[ApiKey, float]] = {}

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
        # Claims and completions build small temporary tables (CTEs, unions, JSON arrays):
        # kept in memory, a claim of 16 takes ~0.45 ms instead of ~0.9.
        conn.execute("PRAGMA temp_store=MEMORY")
        # Checkpoint every 40 MB of log rather than 4: claims and completions write the same
        # index pages again and again, and a page written ten times between checkpoints is
        # copied back to the database once.
        conn.execute("PRAGMA wal_autocheckpoint=10000")
        conn.row_factory = sqlite3.Row
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

    # Accounts and keys

    async def create_account(self, *, name: str, now: datetime) -> Account:
        account = Account(id=new_id("acc"), name=name, created_at=now)
        await self._run(
            self._write_one, "INSERT INTO accounts VALUES (?, ?, ?)", (account.id, name, _ts(now))
        )
        return account

    def _write_one(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> int:
        with self._write() as db:
            return db.execute(sql, params).rowcount

    async def get_account(self, account_id: str) -> Account:
        return await self._run(self._get_account, account_id)

    def _get_account(self, account_id: str) -> Account:
        row = self._db.execute(
            "SELECT id, name, created_at FROM accounts WHERE id = ?", (account_id,)
        ).fetchone()
        if row is None:
            raise AccountNotFound()
        return _account(row)

    async def list_accounts(self) -> list[Account]:
        rows = await self._read("SELECT id, name, created_at FROM accounts ORDER BY created_at, id")
        return [_account(row) for row in rows]

    async def _read(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        return await self._run(lambda: self._db.execute(sql, params).fetchall())

    async def create_key(
        self,
        *,
        account_id: str | None,
        name: str,
        scope: KeyScope,
        secret_hash: str,
        prefix: str,
        now: datetime,
    ) -> ApiKey:
        key = ApiKey(
            id=new_id("key"),
            account_id=account_id,
            name=name,
            scope=scope,
            prefix=prefix,
            created_at=now,
            revoked_at=None,
        )
        await self._run(self._create_key, key, secret_hash)
        return key

    def _create_key(self, key: ApiKey, secret_hash: str) -> None:
        with self._write() as db:
            if key.account_id is not None:
                self._get_account(key.account_id)
            db.execute(
                "INSERT INTO api_keys (id, account_id, name, scope, secret_hash, prefix,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key.id,
                    key.account_id,
                    key.name,
                    key.scope,
                    secret_hash,
                    key.prefix,
                    _ts(key.created_at),
                ),
            )

    async def list_keys(self, account_id: str | None) -> list[ApiKey]:
        rows = await self._read(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE account_id IS ? ORDER BY created_at, id",
            (account_id,),
        )
        return [_key(row) for row in rows]

    async def revoke_key(self, account_id: str | None, key_id: str, *, now: datetime) -> ApiKey:
        try:
            return await self._run(self._revoke_key, account_id, key_id, _ts(now))
        finally:
            self._keys.clear()

    def _revoke_key(self, account_id: str | None, key_id: str, now: float) -> ApiKey:
        with self._write() as db:
            row = db.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?)"
                f" WHERE id = ? AND account_id IS ? RETURNING {_KEY_COLUMNS}",
                (now, key_id, account_id),
            ).fetchone()
        if row is None:
            raise KeyNotFound()
        return _key(row)

    async def key_by_hash(self, secret_hash: str) -> ApiKey | None:
        # Every API request looks its key up: answered from memory for KEY_CACHE_SECONDS,
        # not through the store's one thread, where it would queue behind commits. SQLite is
        # one process's: keys change here, and a revocation clears the cache at once.
        now = time.monotonic()
        cached = self._keys.get(secret_hash)
        if cached is not None and cached[1] > now:
            return cached[0]
        rows = await self._read(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE secret_hash = ? AND revoked_at IS NULL",
            (secret_hash,),
        )
        key = _key(rows[0]) if rows else None
        if key is not None:
            if len(self._keys) >= KEY_CACHE_SIZE:
                self._keys.clear()
            self._keys[secret_hash] = (key, now + KEY_CACHE_SECONDS)
        return key

    # Voice applications

    async def create_app(
        self,
        *,
        name: str,
        push_url: str | None,
        now: datetime,
        account_id: str = DEFAULT_ACCOUNT,
    ) -> App:
        app = App(
            id=new_app_id(),
            account_id=account_id,
            name=name,
            push_url=push_url,
            paused=False,
            signing=True,
            created_at=now,
            updated_at=now,
        )
        await self._run(self._create_app, app, generate_secret())
        return app

    def _create_app(self, app: App, secret: str) -> None:
        with self._write() as db:
            self._get_account(app.account_id)
            db.execute(
                "INSERT INTO apps (id, account_id, name, push_url, paused, signing, created_at,"
                " updated_at, signing_secret) VALUES (?, ?, ?, ?, 0, 1, ?, ?, ?)",
                (
                    app.id,
                    app.account_id,
                    app.name,
                    app.push_url,
                    _ts(app.created_at),
                    _ts(app.updated_at),
                    secret,
                ),
            )

    async def get_app(self, app_id: str, account_id: str | None = None) -> App:
        return await self._run(self._get_app, app_id, account_id)

    def _get_app(self, app_id: str, account_id: str | None = None) -> App:
        row = self._db.execute(
            f"SELECT {_APP_COLUMNS} FROM apps WHERE id = ?", (app_id,)
        ).fetchone()
        if row is None or (account_id is not None and row["account_id"] != account_id):
            raise AppNotFound()
        return _app(row)

    async def list_apps(self, account_id: str | None = None) -> list[App]:
        rows = await self._read(
            f"SELECT {_APP_COLUMNS} FROM apps WHERE ?1 IS NULL OR account_id = ?1"
            " ORDER BY created_at, id",
            (account_id,),
        )
        return [_app(row) for row in rows]

    async def update_app(
        self,
        app_id: str,
        *,
        now: datetime,
        account_id: str | None = None,
        name: str | _Unset = UNSET,
        push_url: str | _Unset | None = UNSET,
        paused: bool | _Unset = UNSET,
        signing: bool | _Unset = UNSET,
        paused_reason: str | None = None,
    ) -> App:
        changes = app_changes(
            name=name,
            push_url=push_url,
            paused=paused,
            signing=signing,
            paused_reason=paused_reason,
        )
        return await self._run(self._update_app, app_id, account_id, changes, _ts(now))

    def _update_app(
        self, app_id: str, account_id: str | None, changes: dict[str, Any], now: float
    ) -> App:
        with self._write() as db:
            before = self._get_app(app_id, account_id)
            for column, value in changes.items():
                db.execute(f"UPDATE apps SET {column} = ? WHERE id = ?", (value, app_id))
            db.execute("UPDATE apps SET updated_at = ? WHERE id = ?", (now, app_id))
            after = self._get_app(app_id)
            if before.pushing and not after.pushing:
                for lane in HOLD_WAITING:
                    db.execute(lane, (now, app_id))
            elif after.pushing and not before.pushing:
                db.execute(
                    "UPDATE deliveries SET state = 'pending', next_attempt_at = ?,"
                    " updated_at = ? WHERE app_id = ? AND state = 'held'",
                    (now, now, app_id),
                )
            return after

    async def signing_keys(self, app_id: str, account_id: str | None = None) -> SigningKeys:
        return await self._run(self._signing_keys, app_id, account_id)

    def _signing_keys(self, app_id: str, account_id: str | None) -> SigningKeys:
        self._get_app(app_id, account_id)
        row = self._db.execute(
            "SELECT signing_secret, previous_secret, previous_secret_until FROM apps WHERE id = ?",
            (app_id,),
        ).fetchone()
        return SigningKeys(current=row[0], previous=row[1], previous_until=_dt(row[2]))

    async def rotate_signing_secret(
        self,
        app_id: str,
        *,
        secret: str,
        now: datetime,
        overlap: timedelta,
        account_id: str | None = None,
    ) -> SigningKeys:
        return await self._run(
            self._rotate, app_id, account_id, secret, _ts(now), _ts(now + overlap)
        )

    def _rotate(
        self, app_id: str, account_id: str | None, secret: str, now: float, until: float
    ) -> SigningKeys:
        with self._write() as db:
            self._get_app(app_id, account_id)
            db.execute(
                "UPDATE apps SET previous_secret = signing_secret, previous_secret_until = ?,"
                " signing_secret = ?, updated_at = ? WHERE id = ?",
                (until, secret, now, app_id),
            )
            return self._signing_keys(app_id, None)

    async def delete_app(self, app_id: str, account_id: str | None = None) -> None:
        await self._run(self._delete_app, app_id, account_id)

    def _delete_app(self, app_id: str, account_id: str | None) -> None:
        with self._write() as db:
            self._get_app(app_id, account_id)
            db.execute(
                "DELETE FROM attempts WHERE delivery_id IN"
                " (SELECT id FROM deliveries WHERE app_id = ?)",
                (app_id,),
            )
            for table in ("deliveries", "replays", "record_versions", "call_records", "apps"):
                column = "id" if table == "apps" else "app_id"
                db.execute(f"DELETE FROM {table} WHERE {column} = ?", (app_id,))

    # Records

    async def ingest_many(
        self, requests: Sequence[IngestRequest]
    ) -> list[list[IngestResult] | Exception]:
        return await self._run(self._ingest_many, requests) if requests else []

    def _ingest_many(
        self, requests: Sequence[IngestRequest]
    ) -> list[list[IngestResult] | Exception]:
        """One transaction for all: the requests of one app are planned together, in order,
        as if made one after the other, and stored with a few statements whatever their size."""
        outcomes: list[list[IngestResult] | Exception] = [AppNotFound() for _ in requests]
        by_app: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            by_app.setdefault(request.app_id, []).append(index)
        with self._write() as db:
            for app_id, indexes in by_app.items():
                row = db.execute(
                    f"SELECT {_APP_COLUMNS}, last_seq FROM apps WHERE id = ?", (app_id,)
                ).fetchone()
                if row is None:
                    continue
                allowed = [
                    index
                    for index in indexes
                    if requests[index].account_id in (None, row["account_id"])
                ]
                if not allowed:
                    continue
                records = [record for index in allowed for record in requests[index].records]
                received = {
                    id(record): _ts(requests[index].now)
                    for index in allowed
                    for record in requests[index].records
                }
                plan = plan_ingest(records, self._latest(app_id, records), row["last_seq"])
                self._store_plan(_app(row), plan, received)
                results = iter(plan.results)
                for index in allowed:
                    outcomes[index] = [next(results) for _ in requests[index].records]
        return outcomes

    def _latest(self, app_id: str, records: Sequence[NewRecord]) -> dict[str, Latest]:
        sids = list({record.call_session_id for record in records})
        found = {}
        for start in range(0, len(sids), 500):
            chunk = sids[start : start + 500]
            rows = self._db.execute(
                "SELECT r.call_session_id, r.id, r.version, v.body FROM call_records r"
                " JOIN record_versions v ON v.record_id = r.id AND v.version = r.version"
                f" WHERE r.app_id = ? AND r.call_session_id IN ({','.join('?' * len(chunk))})",
                [app_id, *chunk],
            )
            for sid, record_id, version, body in rows:
                found[sid] = Latest(record_id, version, bytes(body))
        return found

    def _store_plan(self, app: App, plan: IngestPlan, received: dict[int, float]) -> None:
        """Store a plan's versions (and the records new in it, once each, with their latest
        version) and a delivery of each version, in about five statements."""
        db = self._db
        if plan.versions:
            final = {item.record.call_session_id: item for item in plan.versions}
            new = [item for item in final.values() if item.record_id is None]
            for chunk in _chunks(new):
                db.execute(
                    "INSERT INTO call_records (app_id, call_session_id, call_start, received_at,"
                    f" version) VALUES {_marks(len(chunk), 5)}",
                    [
                        value
                        for item in chunk
                        for value in (
                            app.id,
                            item.record.call_session_id,
                            _ts(item.record.call_start),
                            received[id(item.record)],
                            item.version,
                        )
                    ],
                )
            changed = [item for item in final.values() if item.record_id is not None]
            for chunk in _chunks(changed):
                db.execute(
                    "UPDATE call_records SET version = c.column2, call_start = c.column3"
                    f" FROM (VALUES {_marks(len(chunk), 3)}) AS c"
                    " WHERE call_records.id = c.column1",
                    [
                        value
                        for item in chunk
                        for value in (item.record_id, item.version, _ts(item.record.call_start))
                    ],
                )
            for chunk in _chunks(plan.versions):
                db.execute(
                    "INSERT INTO record_versions (record_id, app_id, version, seq, body,"
                    " received_at) SELECT r.id, r.app_id, v.column2, v.column3, v.column4,"
                    f" v.column5 FROM (VALUES {_marks(len(chunk), 5)}) AS v"
                    " JOIN call_records AS r ON r.app_id = ? AND r.call_session_id = v.column1"
                    " ORDER BY v.column3",
                    [
                        *(
                            value
                            for item in chunk
                            for value in (
                                item.record.call_session_id,
                                item.version,
                                item.sequence,
                                item.record.body,
                                received[id(item.record)],
                            )
                        ),
                        app.id,
                    ],
                )
            # A delivery of each version just stored (its sequence numbers follow on).
            state = DeliveryState.PENDING if app.pushing else DeliveryState.HELD
            db.execute(
                "INSERT INTO deliveries (record_id, version_id, app_id, state, next_attempt_at,"
                " created_at, updated_at) SELECT record_id, id, app_id, ?, received_at,"
                " received_at, received_at FROM record_versions"
                " WHERE app_id = ? AND seq BETWEEN ? AND ? ORDER BY seq",
                (state, app.id, plan.versions[0].sequence, plan.versions[-1].sequence),
            )
        db.execute("UPDATE apps SET last_seq = ? WHERE id = ?", (plan.last_sequence, app.id))

    def _new_delivery(
        self,
        record_id: int,
        app_id: str,
        state: DeliveryState,
        now: float,
        replay_id: str | None = None,
    ) -> int:
        """A delivery of the record's latest version."""
        row = self._db.execute(
            "INSERT INTO deliveries (record_id, version_id, app_id, state, next_attempt_at,"
            f" created_at, updated_at, replay_id) VALUES (:record, {_LATEST_VERSION}, :app,"
            " :state, :now, :now, :now, :replay) RETURNING id",
            {"record": record_id, "app": app_id, "state": state, "now": now, "replay": replay_id},
        ).fetchone()
        return int(row[0])

    async def list_records(self, app_id: str, query: RecordFilter) -> list[StoredRecord]:
        where, params = ["v.app_id = :app"], {"app": app_id, "limit": query.limit}
        if query.since is not None:
            where.append("r.call_start >= :since")
            params["since"] = _ts(query.since)
        if query.until is not None:
            where.append("r.call_start < :until")
            params["until"] = _ts(query.until)
        if query.after is not None:
            where.append("(r.call_start, v.id) > (:after_start, :after_id)")
            params["after_start"], params["after_id"] = _ts(query.after[0]), query.after[1]
        rows = await self._read(
            f"SELECT {_VERSION_COLUMNS} FROM record_versions v"
            " JOIN call_records r ON r.id = v.record_id"
            f" WHERE {' AND '.join(where)} ORDER BY r.call_start, v.id LIMIT :limit",
            params,
        )
        return [_stored(row) for row in rows]

    async def records_by_sequence(
        self, app_id: str, first: int, last: int, limit: int
    ) -> list[StoredRecord]:
        rows = await self._read(
            f"SELECT {_VERSION_COLUMNS} FROM record_versions v"
            " JOIN call_records r ON r.id = v.record_id"
            " WHERE v.app_id = ? AND v.seq BETWEEN ? AND ? ORDER BY v.seq LIMIT ?",
            (app_id, first, last, limit),
        )
        return [_stored(row) for row in rows]

    async def deliveries_of(self, app_id: str, call_session_id: str) -> list[Delivery]:
        return await self.list_deliveries(
            app_id, DeliveryFilter(call_session_id=call_session_id, limit=1_000_000)
        )

    async def list_deliveries(self, app_id: str, query: DeliveryFilter) -> list[Delivery]:
        return await self._run(self._list_deliveries, app_id, query)

    def _list_deliveries(self, app_id: str, query: DeliveryFilter) -> list[Delivery]:
        where, params = ["d.app_id = :app"], {"app": app_id, "limit": query.limit}
        if query.states:
            names = sorted(query.states)
            where.append(f"d.state IN ({', '.join(f':s{i}' for i in range(len(names)))})")
            params.update({f"s{i}": name for i, name in enumerate(names)})
        for column, op, value in (
            ("d.created_at", ">=", query.since),
            ("d.created_at", "<", query.until),
        ):
            if value is not None:
                where.append(f"{column} {op} :p{len(params)}")
                params[f"p{len(params)}"] = _ts(value)
        if query.call_session_id is not None:
            where.append("r.call_session_id = :sid")
            params["sid"] = query.call_session_id
        if query.before_id is not None:
            where.append("d.id < :before")
            params["before"] = query.before_id
        rows = self._db.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d"
            " JOIN call_records r ON r.id = d.record_id"
            " JOIN record_versions v ON v.id = d.version_id"
            f" WHERE {' AND '.join(where)} ORDER BY d.id DESC LIMIT :limit",
            params,
        ).fetchall()
        attempts = self._attempts([row["id"] for row in rows])
        return [_delivery(row, attempts.get(row["id"], ())) for row in rows]

    def _attempts(self, delivery_ids: list[int]) -> dict[int, tuple[Attempt, ...]]:
        found: dict[int, list[Attempt]] = {}
        for start in range(0, len(delivery_ids), 500):
            ids = delivery_ids[start : start + 500]
            rows = self._db.execute(
                "SELECT delivery_id, number, started_at, duration_ms, status_code, error_kind,"
                " error, response_excerpt FROM attempts"
                f" WHERE delivery_id IN ({','.join('?' * len(ids))}) ORDER BY number, id",
                ids,
            )
            for row in rows:
                found.setdefault(row["delivery_id"], []).append(_attempt(row))
        return {delivery_id: tuple(items) for delivery_id, items in found.items()}

    async def resend(self, app_id: str, call_session_id: str, *, now: datetime) -> Delivery:
        return await self._run(self._resend, app_id, call_session_id, _ts(now))

    def _resend(self, app_id: str, call_session_id: str, now: float) -> Delivery:
        with self._write() as db:
            app = self._get_app(app_id)
            row = db.execute(
                "SELECT id FROM call_records WHERE app_id = ? AND call_session_id = ?",
                (app_id, call_session_id),
            ).fetchone()
            if row is None:
                raise RecordNotFound()
            state = DeliveryState.PENDING if app.pushing else DeliveryState.HELD
            delivery_id = self._new_delivery(row[0], app_id, state, now)
        return self._list_deliveries(app_id, DeliveryFilter(before_id=delivery_id + 1, limit=1))[0]

    async def count_by_state(self, app_id: str | None = None) -> dict[DeliveryState, int]:
        if app_id is None:
            rows = await self._read(COUNT_BY_STATE)
        else:
            rows = await self._read(APP_COUNT_BY_STATE, (app_id,))
        return counts_by_state(rows)

    # Replays

    async def create_replay(
        self,
        app_id: str,
        *,
        kind: ReplayKind,
        range_from: datetime | None,
        range_to: datetime | None,
        cap: int,
        now: datetime,
    ) -> tuple[ReplayJob, bool]:
        params = {
            "app": app_id,
            "kind": kind,
            "from": _ts(range_from) if range_from else None,
            "to": _ts(range_to) if range_to else None,
            "now": _ts(now),
        }
        return await self._run(self._create_replay, params, cap)

    def _create_replay(self, params: dict[str, Any], cap: int) -> tuple[ReplayJob, bool]:
        with self._write() as db:
            self._get_app(params["app"])
            same = db.execute(
                f"SELECT {_REPLAY_COLUMNS} FROM replays WHERE app_id = :app AND kind = :kind"
                " AND range_from IS :from AND range_to IS :to AND state != 'done'",
                params,
            ).fetchone()
            if same is not None:
                return _replay(same), False
            selection = _REPLAY_SELECTION[ReplayKind(params["kind"])]
            total = db.execute(
                f"SELECT count(*) FROM call_records r WHERE {selection}", params
            ).fetchone()[0]
            if total > cap:
                raise ReplayTooLarge(
                    f"the replay covers {total} records, more than the {cap} one replay may;"
                    " narrow the range"
                )
            row = db.execute(
                f"INSERT INTO replays (id, app_id, kind, range_from, range_to, state, total,"
                " created_at, updated_at) VALUES (:id, :app, :kind, :from, :to, 'queued',"
                f" :total, :now, :now) RETURNING {_REPLAY_COLUMNS}",
                {**params, "id": new_id("rpl"), "total": total},
            ).fetchone()
        return _replay(row), True

    async def get_replay(self, app_id: str, replay_id: str) -> ReplayJob:
        rows = await self._read(
            f"SELECT {_REPLAY_COLUMNS} FROM replays WHERE id = ? AND app_id = ?",
            (replay_id, app_id),
        )
        if not rows:
            raise ReplayNotFound()
        return _replay(rows[0])

    async def replay_progress(self, replay_id: str) -> dict[DeliveryState, int]:
        rows = await self._read(
            "SELECT state, count(*) FROM deliveries WHERE replay_id = ? GROUP BY state",
            (replay_id,),
        )
        return counts_by_state(rows)

    async def claim_replay(
        self, *, now: datetime, lease_until: datetime, owner: str
    ) -> ReplayJob | None:
        return await self._run(self._claim_replay, _ts(now), _ts(lease_until), owner)

    def _claim_replay(self, now: float, lease_until: float, owner: str) -> ReplayJob | None:
        with self._write() as db:
            row = db.execute(
                "UPDATE replays SET state = 'running', lease_until = :lease, lease_owner = :owner,"
                " updated_at = :now WHERE id = (SELECT id FROM replays"
                "   WHERE state = 'queued' OR (state = 'running' AND lease_until <= :now)"
                f"   ORDER BY created_at LIMIT 1) RETURNING {_REPLAY_COLUMNS}",
                {"lease": lease_until, "owner": owner, "now": now},
            ).fetchone()
        return None if row is None else _replay(row)

    async def advance_replay(
        self, replay_id: str, *, owner: str, chunk: int, now: datetime, lease_until: datetime
    ) -> ReplayJob | None:
        return await self._run(
            self._advance_replay, replay_id, owner, chunk, _ts(now), _ts(lease_until)
        )

    def _advance_replay(
        self, replay_id: str, owner: str, chunk: int, now: float, lease_until: float
    ) -> ReplayJob | None:
        with self._write() as db:
            job = db.execute(
                f"SELECT {_REPLAY_COLUMNS}, cursor, lease_owner FROM replays WHERE id = ?",
                (replay_id,),
            ).fetchone()
            if job is None:
                raise ReplayNotFound()
            if job["state"] != ReplayState.RUNNING or job["lease_owner"] != owner:
                return None
            app = self._get_app(job["app_id"])
            params = {
                "app": app.id,
                "from": job["range_from"],
                "to": job["range_to"],
                "cursor": job["cursor"],
                "chunk": chunk,
            }
            ids = [
                row[0]
                for row in db.execute(
                    f"SELECT r.id FROM call_records r WHERE {_REPLAY_SELECTION[job['kind']]}"
                    " AND r.id > :cursor ORDER BY r.id LIMIT :chunk",
                    params,
                )
            ]
            state = DeliveryState.PENDING if app.pushing else DeliveryState.HELD
            for record_id in ids:
                self._new_delivery(record_id, app.id, state, now, replay_id)
            done = len(ids) < chunk
            row = db.execute(
                "UPDATE replays SET cursor = :cursor, enqueued = enqueued + :count,"
                " updated_at = :now, state = :state, finished_at = :finished,"
                " lease_until = :lease, lease_owner = :owner"
                f" WHERE id = :id RETURNING {_REPLAY_COLUMNS}",
                {
                    "cursor": ids[-1] if ids else job["cursor"],
                    "count": len(ids),
                    "now": now,
                    "state": ReplayState.DONE if done else ReplayState.RUNNING,
                    "finished": now if done else None,
                    "lease": None if done else lease_until,
                    "owner": None if done else owner,
                    "id": replay_id,
                },
            ).fetchone()
        return _replay(row)

    # Dispatching

    async def claim_due(
        self,
        *,
        now: datetime,
        limit: int,
        lease_until: datetime,
        owner: str,
        skip_apps: Sequence[str] = (),
        app_limits: Mapping[str, int] | None = None,
    ) -> list[Claimed]:
        return await self._run(
            self._claim_due,
            _ts(now),
            limit,
            _ts(lease_until),
            owner,
            json.dumps(list(skip_apps)),
            json.dumps(app_limits or {}),
        )

    def _claim_due(
        self, now: float, limit: int, lease_until: float, owner: str, skip: str, limits: str
    ) -> list[Claimed]:
        # Every statement answers one row at most (JSON arrays): the store's thread takes the
        # GIL back once per statement, not once per delivery, and under load every take can
        # wait for the event loop's thread.
        with self._write() as db:
            ids, data, bodies = db.execute(CLAIM_DUE, (now, limit, skip, limits)).fetchone()
            if ids == "[]":
                return []
            db.execute(CLAIM_LEASE, (lease_until, owner, now, ids))
        rows = json.loads(data)
        end = 0
        for row in rows:
            start, end = end, end + row[4]
            row[4] = bodies[start:end]
        rows.sort(key=lambda row: row[7])
        at = _dt_req(now)
        keys: dict[str, tuple[str, ...]] = {}  # per app: the same for all its rows
        return [
            Claimed(
                delivery_id=row[0],
                app_id=row[1],
                call_session_id=row[2],
                push_url=row[3],
                body=row[4],
                sequence=row[12],
                version=row[13],
                attempt=row[5] + 1,
                first_attempt_at=_dt(row[6]),
                signing_keys=keys.get(row[1]) or keys.setdefault(row[1], _signing(row, at)),
            )
            for row in rows
        ]

    async def release(self, delivery_ids: Sequence[int], *, owner: str, now: datetime) -> int:
        if not delivery_ids:
            return 0
        params = {
            "ids": json.dumps(list(delivery_ids)),
            "owner": owner,
            "now": _ts(now),
            "state": DeliveryState.PENDING,
        }
        return await self._run(self._write_one, RELEASE, params)

    async def complete(self, completions: Sequence[Completion], *, owner: str) -> None:
        if completions:
            await self._run(self._complete, completions, owner)

    def _complete(self, completions: Sequence[Completion], owner: str) -> None:
        rows = json.dumps([_completion_row(done) for done in completions])
        streaks = json.dumps(
            [
                [app_id, int(streak.succeeded), _ts_or_none(streak.failing_since)]
                for app_id, streak in failure_streaks(completions).items()
            ]
        )
        with self._write() as db:
            db.execute(INSERT_ATTEMPTS, (rows,))
            db.execute(COMPLETE, (rows, owner))
            db.execute(STREAKS, (streaks,))

    async def apps_failing_since(self, cutoff: datetime) -> list[App]:
        rows = await self._read(
            f"SELECT {_APP_COLUMNS} FROM apps WHERE failing_since <= ? AND NOT paused"
            " AND push_url IS NOT NULL ORDER BY failing_since",
            (_ts(cutoff),),
        )
        return [_app(row) for row in rows]

    async def purge_before(self, cutoff: datetime, *, limit: int) -> int:
        return await self._run(self._purge_before, _ts(cutoff), limit)

    def _purge_before(self, cutoff: float, limit: int) -> int:
        with self._write() as db:
            ids = [
                row[0]
                for row in db.execute(
                    "SELECT r.id FROM call_records r WHERE r.received_at < ? AND NOT EXISTS"
                    " (SELECT 1 FROM deliveries d WHERE d.record_id = r.id"
                    "  AND d.state IN ('held', 'pending', 'sending'))"
                    " ORDER BY r.received_at LIMIT ?",
                    (cutoff, limit),
                )
            ]
            marks = ",".join("?" * len(ids))
            for sql in _PURGE:
                db.execute(sql.format(ids=marks), ids)
        return len(ids)

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

    # Statistics

    async def attempt_stats(
        self, app_id: str, *, since: datetime, bucket: timedelta
    ) -> list[AttemptBucket]:
        # A failed attempt was the delivery's last if the delivery failed with it.
        last = "d.state = 'failed' AND a.number = d.attempts"
        rows = await self._read(
            "SELECT CAST((a.started_at - :since) / :size AS INTEGER) AS slot,"
            " sum(a.error_kind IS NULL),"
            f" sum(a.error_kind IS NOT NULL AND NOT ({last})),"
            f" sum(a.error_kind IS NOT NULL AND {last})"
            " FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
            " WHERE a.app_id = :app AND a.started_at >= :since GROUP BY slot ORDER BY slot",
            {"app": app_id, "since": _ts(since), "size": bucket.total_seconds()},
        )
        return [_bucket(row, since, bucket) for row in rows]


def _completion_row(done: Completion) -> list[Any]:
    """One element of the JSON array ``INSERT_ATTEMPTS`` and ``COMPLETE`` read."""
    outcome = done.outcome
    return [
        done.claimed.delivery_id,
        done.claimed.attempt,
        _ts(outcome.started_at),
        outcome.duration_ms,
        outcome.status_code,
        outcome.error_kind,
        outcome.error,
        outcome.response_excerpt,
        done.next_state,
        _ts(done.next_attempt_at) if done.next_attempt_at else None,
        done.claimed.app_id,
    ]


def _app(row: sqlite3.Row) -> App:
    return App(
        id=row["id"],
        account_id=row["account_id"],
        name=row["name"],
        push_url=row["push_url"],
        paused=bool(row["paused"]),
        signing=bool(row["signing"]),
        created_at=_dt_req(row["created_at"]),
        updated_at=_dt_req(row["updated_at"]),
        failing_since=_dt(row["failing_since"]),
        paused_reason=row["paused_reason"],
    )


def _account(row: sqlite3.Row) -> Account:
    return Account(id=row["id"], name=row["name"], created_at=_dt_req(row["created_at"]))


def _key(row: sqlite3.Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        account_id=row["account_id"],
        name=row["name"],
        scope=KeyScope(row["scope"]),
        prefix=row["prefix"],
        created_at=_dt_req(row["created_at"]),
        revoked_at=_dt(row["revoked_at"]),
    )


def _attempt(row: sqlite3.Row) -> Attempt:
    return Attempt(
        number=row["number"],
        started_at=_dt_req(row["started_at"]),
        duration_ms=row["duration_ms"],
        status_code=row["status_code"],
        error_kind=ErrorKind(row["error_kind"]) if row["error_kind"] else None,
        error=row["error"],
        response_excerpt=row["response_excerpt"],
    )


def _delivery(row: sqlite3.Row, attempts: tuple[Attempt, ...]) -> Delivery:
    state = DeliveryState(row["state"])
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
        next_attempt_at=None if state is DeliveryState.HELD else _dt(row["next_attempt_at"]),
        created_at=_dt_req(row["created_at"]),
        updated_at=_dt_req(row["updated_at"]),
        attempt_log=attempts,
    )


def _replay(row: sqlite3.Row) -> ReplayJob:
    return ReplayJob(
        id=row["id"],
        app_id=row["app_id"],
        kind=ReplayKind(row["kind"]),
        range_from=_dt(row["range_from"]),
        range_to=_dt(row["range_to"]),
        state=ReplayState(row["state"]),
        total=row["total"],
        enqueued=row["enqueued"],
        created_at=_dt_req(row["created_at"]),
        updated_at=_dt_req(row["updated_at"]),
        finished_at=_dt(row["finished_at"]),
    )


def _signing(row: Sequence[Any], now: datetime) -> tuple[str, ...]:
    enabled, current, previous, until = row[8], row[9], row[10], row[11]
    if not enabled:
        return ()
    return SigningKeys(current=current, previous=previous, previous_until=_dt(until)).active(now)


def _stored(row: sqlite3.Row) -> StoredRecord:
    return StoredRecord(
        id=row["id"],
        call_session_id=row["call_session_id"],
        call_start=_dt_req(row["call_start"]),
        version=row["version"],
        sequence=row["seq"],
        received_at=_dt_req(row["received_at"]),
        body=bytes(row["body"]),
    )


def _bucket(row: Sequence[Any], since: datetime, size: timedelta) -> AttemptBucket:
    slot, delivered, retrying, failed = row
    return AttemptBucket(
        start=since + slot * size, delivered=delivered, retrying=retrying, failed=failed
    )
