"""The PostgreSQL store: for many workers on many machines.

Workers claim with ``FOR UPDATE SKIP LOCKED`` under a lease, commit the claim, then push:
no transaction is held open across an HTTP request.

Row locks on an app keep its changes in order: ``update_app`` and ``delete_app`` take it
``FOR UPDATE``; ``create_replay`` takes it ``FOR NO KEY UPDATE`` (one replay request of an
app at a time, ingest not blocked); whatever adds deliveries (ingest, resend, replays)
reads the app ``FOR KEY SHARE``, so it sees the app's pushing state as of its own commit.
The app is always locked before its replays and deliveries.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal, TypeAlias, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from ccpush.errors import (
    AccountNotFound,
    AppNotFound,
    KeyNotFound,
    MigrationError,
    RecordNotFound,
    ReplayNotFound,
    ReplayTooLarge,
    StoreError,
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
    IngestRequest,
    Latest,
    PlannedVersion,
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
if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    _Conn: TypeAlias = PoolConnectionProxy[asyncpg.Record]
    _Executor: TypeAlias = asyncpg.Pool[asyncpg.Record] | _Conn
_AppLock = Literal["", "FOR UPDATE", "FOR NO KEY UPDATE", "FOR KEY SHARE"]

_MIGRATION_LOCK = 0x63637075  # "ccpu": one migrator at a time across all processes

_ACCOUNT_COLUMNS = "id, name, created_at"
_KEY_COLUMNS = "id, account_id, name, scope, prefix, created_at, revoked_at"
_APP_COLUMNS = (
    "id, account_id, name, push_url, paused, signing, created_at, updated_at, failing_since,"
    " paused_reason"
)
_REPLAY_COLUMNS = (
    "id, app_id, kind, range_from, range_to, state, total, enqueued, created_at, updated_at,"
    " finished_at"
)
_DELIVERY_COLUMNS = (
    "d.id, d.app_id, r.call_session_id, d.record_id, d.replay_id, v.version, v.seq, d.state,"
    " d.attempts, d.next_attempt_at, d.created_at, d.updated_at"
)
_VERSION_COLUMNS = "v.id, r.call_session_id, r.call_start, v.version, v.seq, v.received_at, v.body"

# Accounts and keys

INSERT_KEY = f"""
INSERT INTO api_keys (id, account_id, name, scope, secret_hash, prefix, created_at)
SELECT $1, $2, $3, $4, $5, $6, $7
WHERE $2::text IS NULL OR EXISTS (SELECT 1 FROM accounts WHERE id = $2)
RETURNING {_KEY_COLUMNS}
"""

LIST_KEYS = f"""
SELECT {_KEY_COLUMNS} FROM api_keys
WHERE account_id IS NOT DISTINCT FROM $1::text
ORDER BY created_at, id
"""

# A second revocation keeps the first time.
REVOKE_KEY = f"""
UPDATE api_keys SET revoked_at = coalesce(revoked_at, $3)
WHERE id = $1 AND account_id IS NOT DISTINCT FROM $2::text
RETURNING {_KEY_COLUMNS}
"""

# Voice applications

# An app's failing streak; neither writes (nor locks) the row when nothing changes.
STREAK_RESTART = """
UPDATE apps SET failing_since = $2 WHERE id = $1 AND failing_since IS DISTINCT FROM $2
"""
STREAK_CONTINUE = "UPDATE apps SET failing_since = $2 WHERE id = $1 AND failing_since IS NULL"

APPS_FAILING = f"""
SELECT {_APP_COLUMNS} FROM apps
WHERE failing_since <= $1 AND NOT paused AND push_url IS NOT NULL
ORDER BY failing_since
"""

# Records received before $1 that wait for no push, oldest first, at most $2.
PURGEABLE = """
SELECT r.id FROM call_records AS r
WHERE r.received_at < $1 AND NOT EXISTS (
    SELECT 1 FROM deliveries AS d
    WHERE d.record_id = r.id AND d.state IN ('held', 'pending', 'sending'))
ORDER BY r.received_at
LIMIT $2
FOR UPDATE SKIP LOCKED
"""
# Deliveries before their attempts: deleting a delivery waits for a completion that holds
# it, and the next statement then sees the attempts that completion logged.
PURGE_DELIVERIES = "DELETE FROM deliveries WHERE record_id = ANY($1::bigint[]) RETURNING id"
PURGE_ATTEMPTS = "DELETE FROM attempts WHERE delivery_id = ANY($1::bigint[])"
PURGE = (
    "DELETE FROM record_versions WHERE record_id = ANY($1::bigint[])",
    "DELETE FROM call_records WHERE id = ANY($1::bigint[])",
)

INSERT_APP = f"""
INSERT INTO apps (id, account_id, name, push_url, paused, signing, created_at, updated_at,
                  signing_secret)
SELECT $1, accounts.id, $3, $4, false, true, $5, $5, $6 FROM accounts WHERE accounts.id = $2
RETURNING {_APP_COLUMNS}
"""

SELECT_APP = f"""
SELECT {_APP_COLUMNS} FROM apps WHERE id = $1 AND ($2::text IS NULL OR account_id = $2)
"""

LIST_APPS = f"""
SELECT {_APP_COLUMNS} FROM apps WHERE $1::text IS NULL OR account_id = $1
ORDER BY created_at, id
"""

# ``{columns}``: ``name = $3, ...`` for the columns that change (from ``app_changes``).
UPDATE_APP = f"""
UPDATE apps SET {{columns}}updated_at = $2 WHERE id = $1
RETURNING {_APP_COLUMNS}
"""

SIGNING_KEYS = """
SELECT signing_secret, previous_secret, previous_secret_until FROM apps WHERE id = $1
"""

ROTATE_KEYS = """
UPDATE apps SET previous_secret = signing_secret, previous_secret_until = $3,
                signing_secret = $2, updated_at = $4
WHERE id = $1
RETURNING signing_secret, previous_secret, previous_secret_until
"""

# The pending deliveries of an app, lane by lane (each lane has its index).
HOLD_WAITING = tuple(
    "UPDATE deliveries SET state = 'held', updated_at = $2"
    f" WHERE app_id = $1 AND state = 'pending' AND attempts {lane}"
    for lane in ("= 0", "> 0")
)

RELEASE_HELD = """
UPDATE deliveries SET state = 'pending', next_attempt_at = $2, updated_at = $2
WHERE app_id = $1 AND state = 'held'
"""

# In this order: each table before those it references, and deliveries before their
# attempts (as for PURGE).
DELETE_APP = (
    "DELETE FROM deliveries WHERE app_id = $1",
    "DELETE FROM attempts WHERE app_id = $1",
    "DELETE FROM replays WHERE app_id = $1",
    "DELETE FROM record_versions WHERE app_id = $1",
    "DELETE FROM call_records WHERE app_id = $1",
    "DELETE FROM apps WHERE id = $1",
)

# Records and deliveries

# Looked up one session id at a time, each through its unique index (LIMIT 1 keeps the
# planner from flattening the LATERAL subqueries into a join over the app's records, whose
# cost grows with them).
LATEST_VERSIONS = """
SELECT r.call_session_id, r.id, r.version, v.body
FROM unnest($2::text[]) AS input (sid)
CROSS JOIN LATERAL (
    SELECT id, call_session_id, version FROM call_records
    WHERE app_id = $1 AND call_session_id = input.sid LIMIT 1
) AS r
CROSS JOIN LATERAL (
    SELECT body FROM record_versions WHERE record_id = r.id AND version = r.version LIMIT 1
) AS v
"""

# One row per record new in the batch, with its latest version in the batch.
INSERT_RECORDS = """
INSERT INTO call_records (app_id, call_session_id, call_start, received_at, version)
SELECT $1, sid, start, $5, version
FROM unnest($2::text[], $3::timestamptz[], $4::int[]) AS input (sid, start, version)
RETURNING id, call_session_id
"""

UPDATE_RECORDS = """
UPDATE call_records AS r SET version = input.version, call_start = input.start
FROM unnest($1::bigint[], $2::int[], $3::timestamptz[]) AS input (id, version, start)
WHERE r.id = input.id
"""

INSERT_VERSIONS = """
INSERT INTO record_versions (record_id, app_id, version, seq, body, received_at)
SELECT record_id, $1, version, seq, body, $6
FROM unnest($2::bigint[], $3::int[], $4::bigint[], $5::bytea[])
     AS input (record_id, version, seq, body)
RETURNING id, record_id, version
"""

# Ingestion: a delivery of each version just stored.
INSERT_VERSION_DELIVERIES = """
INSERT INTO deliveries
    (record_id, version_id, app_id, state, next_attempt_at, created_at, updated_at)
SELECT record_id, version_id, $3, $4, $5, $5, $5
FROM unnest($1::bigint[], $2::bigint[]) AS input (record_id, version_id)
"""

SET_LAST_SEQUENCE = "UPDATE apps SET last_seq = $2 WHERE id = $1"

# Deliveries by state, each read from its own (partial) index: of one app ($1), of all.
APP_COUNT_BY_STATE = """
SELECT 'pending', count(*) FROM deliveries WHERE app_id = $1 AND state = 'pending' AND attempts = 0
UNION ALL
SELECT 'pending', count(*) FROM deliveries WHERE app_id = $1 AND state = 'pending' AND attempts > 0
UNION ALL
SELECT 'held', count(*) FROM deliveries WHERE app_id = $1 AND state = 'held'
UNION ALL
SELECT 'sending', count(*) FROM deliveries WHERE state = 'sending' AND app_id = $1
UNION ALL
SELECT state, count(*) FROM deliveries WHERE app_id = $1 AND state IN ('delivered', 'failed')
GROUP BY state
"""

# Resend and replay: a delivery of each record's latest version.
INSERT_DELIVERIES = """
INSERT INTO deliveries
    (record_id, version_id, app_id, state, next_attempt_at, replay_id, created_at, updated_at)
SELECT r.id, v.id, $2, $3, $4, $5, $4, $4
FROM unnest($1::bigint[]) AS ids (id)
JOIN call_records AS r ON r.id = ids.id
JOIN record_versions AS v ON v.record_id = r.id AND v.version = r.version
RETURNING id
"""

# Open bounds as infinities rather than ``$n IS NULL OR``: the plan stays an index range.
LIST_RECORDS = f"""
SELECT {_VERSION_COLUMNS}
FROM record_versions AS v JOIN call_records AS r ON r.id = v.record_id
WHERE r.app_id = $1
  AND r.call_start >= coalesce($2::timestamptz, '-infinity')
  AND r.call_start < coalesce($3::timestamptz, 'infinity')
  AND (r.call_start, v.id) > (coalesce($4::timestamptz, '-infinity'), coalesce($5::bigint, 0))
ORDER BY r.call_start, v.id
LIMIT $6
"""

RECORDS_BY_SEQUENCE = f"""
SELECT {_VERSION_COLUMNS}
FROM record_versions AS v JOIN call_records AS r ON r.id = v.record_id
WHERE v.app_id = $1 AND v.seq BETWEEN $2 AND $3
ORDER BY v.seq
LIMIT $4
"""

# ``{filters}``: `` AND <condition>`` for each filter given, its value in $3, $4...
# (only those given, so each combination gets its own plan). ``LIMIT NULL``: all.
LIST_DELIVERIES = f"""
SELECT {_DELIVERY_COLUMNS}
FROM deliveries AS d JOIN call_records AS r ON r.id = d.record_id
JOIN record_versions AS v ON v.id = d.version_id
WHERE d.app_id = $1 AND r.app_id = $1{{filters}}
ORDER BY d.id DESC
LIMIT $2
"""

ATTEMPTS_OF = """
SELECT delivery_id, number, started_at, duration_ms, status_code, error_kind, error,
       response_excerpt
FROM attempts WHERE delivery_id = ANY($1::bigint[])
ORDER BY number, id
"""

# Replays
#
# The records a replay covers, in id order after a cursor ($2), at most $3 (NULL: all):
# a range of call start times [$4, $5), or those whose latest delivery failed since $4.

REPLAY_RANGE = """
SELECT id FROM call_records
WHERE app_id = $1 AND id > $2 AND call_start >= $4 AND call_start < $5
ORDER BY id
LIMIT $3
"""

REPLAY_FAILED = """
SELECT d.record_id FROM deliveries AS d
WHERE d.app_id = $1 AND d.record_id > $2 AND d.state = 'failed' AND d.updated_at >= $4
  AND d.id = (SELECT max(latest.id) FROM deliveries AS latest
              WHERE latest.record_id = d.record_id)
ORDER BY d.record_id
LIMIT $3
"""

SAME_REPLAY = f"""
SELECT {_REPLAY_COLUMNS} FROM replays
WHERE app_id = $1 AND kind = $2 AND state <> 'done'
  AND range_from IS NOT DISTINCT FROM $3::timestamptz
  AND range_to IS NOT DISTINCT FROM $4::timestamptz
ORDER BY created_at, id
LIMIT 1
"""

INSERT_REPLAY = f"""
INSERT INTO replays (id, app_id, kind, range_from, range_to, state, total, created_at,
                     updated_at)
VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $7)
RETURNING {_REPLAY_COLUMNS}
"""

CLAIM_REPLAY = f"""
UPDATE replays SET state = 'running', lease_until = $2, lease_owner = $3, updated_at = $1
WHERE id = (
    SELECT id FROM replays
    WHERE state = 'queued' OR (state = 'running' AND lease_until <= $1)
    ORDER BY created_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING {_REPLAY_COLUMNS}
"""

LOCK_REPLAY = f"""
SELECT {_REPLAY_COLUMNS}, cursor, lease_owner FROM replays WHERE id = $1 FOR UPDATE
"""

ADVANCE_REPLAY = f"""
UPDATE replays
SET cursor = $2, enqueued = enqueued + $3, updated_at = $4, state = $5, finished_at = $6,
    lease_until = $7, lease_owner = $8
WHERE id = $1
RETURNING {_REPLAY_COLUMNS}
"""

# Dispatching

# Claiming, fair between apps (see ``Store.claim_due``). $1 now, $2 the batch, $5 the apps
# to skip, $6 a JSON object of apps' limits. ``busy``: the apps with due work; each gets an
# equal share of the batch per lane, read oldest first from the lane's index and locked
# (SKIP LOCKED: workers never wait for each other); the candidates are then taken in turns
# (an app's first, every app's second...), a retry's turn counting three, each app within
# its limit.
_CLAIM_LANE = """
    SELECT due.id, busy.app, due.next_attempt_at, {lane} AS lane
    FROM busy CROSS JOIN share CROSS JOIN LATERAL (
        SELECT id, next_attempt_at FROM deliveries
        WHERE app_id = busy.app AND state = 'pending' AND attempts {attempts}
          AND next_attempt_at <= $1
        ORDER BY next_attempt_at
        LIMIT share.per_app
        FOR UPDATE SKIP LOCKED) AS due
"""
# The apps with pending deliveries, found by skipping from one app to the next along a
# lane's index (a loose index scan): the cost follows the apps with work, not all apps.
_APPS_IN_LANE = """
{name}(app) AS (
    SELECT (SELECT app_id FROM deliveries WHERE state = 'pending' AND attempts {attempts}
            ORDER BY app_id LIMIT 1)
    UNION ALL
    SELECT (SELECT app_id FROM deliveries WHERE state = 'pending' AND attempts {attempts}
            AND app_id > {name}.app ORDER BY app_id LIMIT 1)
    FROM {name} WHERE {name}.app IS NOT NULL)"""
CLAIM_DUE = f"""
WITH RECURSIVE
{_APPS_IN_LANE.format(name="first_apps", attempts="= 0")},
{_APPS_IN_LANE.format(name="retry_apps", attempts="> 0")},
busy AS (
    SELECT a.id AS app FROM apps AS a
    WHERE a.id IN (SELECT app FROM first_apps UNION ALL SELECT app FROM retry_apps)
      AND a.push_url IS NOT NULL AND NOT a.paused AND a.id <> ALL($5::text[])
      -- Scalar subqueries, not EXISTS: PostgreSQL may run an OR of EXISTS as one hashed
      -- scan of every due delivery, whose cost grows with the backlog.
      AND ((SELECT true FROM deliveries WHERE app_id = a.id AND state = 'pending'
            AND attempts = 0 AND next_attempt_at <= $1 LIMIT 1)
           OR (SELECT true FROM deliveries WHERE app_id = a.id AND state = 'pending'
               AND attempts > 0 AND next_attempt_at <= $1 LIMIT 1))),
share AS (SELECT (($2 + count(*) - 1) / greatest(count(*), 1))::int AS per_app FROM busy),
candidates AS ({_CLAIM_LANE.format(lane=0, attempts="= 0")} UNION ALL
               {_CLAIM_LANE.format(lane=1, attempts="> 0")}),
chosen AS (
    SELECT id FROM (
        SELECT id, app, next_attempt_at,
               row_number() OVER (PARTITION BY app, lane ORDER BY next_attempt_at)
               * (1 + 2 * lane) AS turn,
               row_number() OVER (PARTITION BY app ORDER BY lane, next_attempt_at) AS nth
        FROM candidates) AS ranked
    WHERE nth <= coalesce(($6::jsonb ->> app)::int, nth)
    ORDER BY turn, next_attempt_at
    LIMIT $2)
UPDATE deliveries AS d
SET state = 'sending', lease_until = $3, lease_owner = $4, updated_at = $1
FROM call_records AS r, record_versions AS v, apps AS a
-- An array, not a join with chosen: each row found by its key, never by a scan of all.
WHERE d.id = ANY(ARRAY(SELECT id FROM chosen))
  AND r.id = d.record_id AND v.id = d.version_id AND a.id = d.app_id
RETURNING d.id, d.app_id, r.call_session_id, a.push_url, v.body, v.seq, v.version, d.attempts,
          d.first_attempt_at, d.next_attempt_at, a.signing, a.signing_secret,
          a.previous_secret, a.previous_secret_until
"""

# A delivery due again while its app is not pushing (no address, or paused) waits as held.
_NEXT_STATE = """
CASE WHEN $1 = 'pending'
      AND (SELECT push_url IS NULL OR paused FROM apps WHERE apps.id = deliveries.app_id)
     THEN 'held' ELSE $1 END
"""

# Completing: one statement for the whole batch, $1.. arrays with one element per attempt,
# $11 the worker. Each delivery is read by its key and locked, in id order (the order of the
# locks), whatever the statistics say. Every attempt is kept, unless its delivery was
# deleted with its app meanwhile (the lock waits for that); the delivery moves on only while
# this worker still holds its lease.
COMPLETE = f"""
WITH done AS (
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::timestamptz[], $4::float8[], $5::int[],
                         $6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[])
        AS u (id, number, started_at, duration_ms, status_code, error_kind, error, excerpt,
              next_state, next_at)
    ORDER BY id, number),
locked AS (
    SELECT done.*, d.app_id, d.state = 'sending' AND d.lease_owner = $11 AS leased
    FROM done CROSS JOIN LATERAL (
        SELECT app_id, state, lease_owner FROM deliveries WHERE id = done.id
        FOR NO KEY UPDATE) AS d),
moved AS (
    UPDATE deliveries
    SET state = {_NEXT_STATE.replace("$1", "l.next_state")}, attempts = l.number,
        next_attempt_at = l.next_at, first_attempt_at = coalesce(first_attempt_at, l.started_at),
        lease_until = NULL, lease_owner = NULL, updated_at = l.started_at
    FROM locked AS l
    WHERE deliveries.id = ANY(ARRAY(SELECT id FROM locked WHERE leased))
      AND deliveries.id = l.id AND l.leased)
INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, error_kind,
                      error, response_excerpt, app_id)
SELECT id, number, started_at, duration_ms, status_code, error_kind, error, excerpt, app_id
FROM locked
"""

RELEASE = f"""
UPDATE deliveries
SET state = {_NEXT_STATE}, lease_until = NULL, lease_owner = NULL, updated_at = $2
WHERE id = ANY($3::bigint[]) AND state = 'sending' AND lease_owner = $4
"""

RELEASE_EXPIRED = f"""
UPDATE deliveries
SET state = {_NEXT_STATE}, lease_until = NULL, lease_owner = NULL, updated_at = $2
WHERE state = 'sending' AND lease_until <= $2
"""


@translating(
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    ConnectionError,
    # class 22 (NUL in text, a number or date out of range) and asyncpg's own refusals of
    # an argument it cannot encode
    refusals=(asyncpg.DataError,),
)
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
        # No JIT: ccpush's statements are short, and with a large backlog the planner's
        # estimates pass jit_above_cost, so compiling would take longer than running (28 ms
        # of a 36 ms claim, measured with a million pending deliveries).
        settings = {"jit": "off"}
        if self.schema:
            settings["search_path"] = self.schema
        try:
            if self.schema:
                conn = await asyncpg.connect(self.dsn)
                try:
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                finally:
                    await conn.close()
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.max_connections,
                server_settings=settings,
                reset=_reset,
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

    # Accounts and keys

    async def create_account(self, *, name: str, now: datetime) -> Account:
        row = await self.pool.fetchrow(
            f"INSERT INTO accounts ({_ACCOUNT_COLUMNS}) VALUES ($1, $2, $3)"
            f" RETURNING {_ACCOUNT_COLUMNS}",
            new_id("acc"),
            name,
            now,
        )
        return _account(_found(row))

    async def get_account(self, account_id: str) -> Account:
        row = await self.pool.fetchrow(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = $1", account_id
        )
        if row is None:
            raise AccountNotFound()
        return _account(row)

    async def list_accounts(self) -> list[Account]:
        rows = await self.pool.fetch(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts ORDER BY created_at, id"
        )
        return [_account(row) for row in rows]

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
        row = await self.pool.fetchrow(
            INSERT_KEY,
            new_id("key"),
            account_id,
            name,
            KeyScope(scope).value,
            secret_hash,
            prefix,
            now,
        )
        if row is None:
            raise AccountNotFound()
        return _key(row)

    async def list_keys(self, account_id: str | None) -> list[ApiKey]:
        return [_key(row) for row in await self.pool.fetch(LIST_KEYS, account_id)]

    async def revoke_key(self, account_id: str | None, key_id: str, *, now: datetime) -> ApiKey:
        row = await self.pool.fetchrow(REVOKE_KEY, key_id, account_id, now)
        if row is None:
            raise KeyNotFound()
        return _key(row)

    async def key_by_hash(self, secret_hash: str) -> ApiKey | None:
        row = await self.pool.fetchrow(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE secret_hash = $1 AND revoked_at IS NULL",
            secret_hash,
        )
        return None if row is None else _key(row)

    # Voice applications

    async def create_app(
        self,
        *,
        name: str,
        push_url: str | None,
        now: datetime,
        account_id: str = DEFAULT_ACCOUNT,
    ) -> App:
        row = await self.pool.fetchrow(
            INSERT_APP, new_app_id(), account_id, name, push_url, now, generate_secret()
        )
        if row is None:
            raise AccountNotFound()
        return _app(row)

    async def get_app(self, app_id: str, account_id: str | None = None) -> App:
        return await _fetch_app(self.pool, app_id, account_id)

    async def list_apps(self, account_id: str | None = None) -> list[App]:
        return [_app(row) for row in await self.pool.fetch(LIST_APPS, account_id)]

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
        columns = ", ".join(f"{column} = ${n}" for n, column in enumerate(changes, start=3))
        async with self.pool.acquire() as conn, conn.transaction():
            before = await _fetch_app(conn, app_id, account_id, lock="FOR UPDATE")
            row = await conn.fetchrow(
                UPDATE_APP.format(columns=f"{columns}, " if columns else ""),
                app_id,
                now,
                *changes.values(),
            )
            after = _app(_found(row))
            if before.pushing and not after.pushing:
                for lane in HOLD_WAITING:
                    await conn.execute(lane, app_id, now)
            elif after.pushing and not before.pushing:
                await conn.execute(RELEASE_HELD, app_id, now)
        return after

    async def signing_keys(self, app_id: str, account_id: str | None = None) -> SigningKeys:
        async with self.pool.acquire() as conn:
            await _fetch_app(conn, app_id, account_id)
            return _signing_keys(_found(await conn.fetchrow(SIGNING_KEYS, app_id)))

    async def rotate_signing_secret(
        self,
        app_id: str,
        *,
        secret: str,
        now: datetime,
        overlap: timedelta,
        account_id: str | None = None,
    ) -> SigningKeys:
        async with self.pool.acquire() as conn, conn.transaction():
            await _fetch_app(conn, app_id, account_id, lock="FOR UPDATE")
            row = await conn.fetchrow(ROTATE_KEYS, app_id, secret, now + overlap, now)
            return _signing_keys(_found(row))

    async def delete_app(self, app_id: str, account_id: str | None = None) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await _fetch_app(conn, app_id, account_id, lock="FOR UPDATE")
            for statement in DELETE_APP:
                await conn.execute(statement, app_id)

    # Records

    async def ingest_many(
        self, requests: Sequence[IngestRequest]
    ) -> list[list[IngestResult] | Exception]:
        """One transaction for all; the requests of one app in order, as one after the other."""
        outcomes: list[list[IngestResult] | Exception] = [AppNotFound() for _ in requests]
        if not requests:
            return outcomes
        by_app: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            by_app.setdefault(request.app_id, []).append(index)
        async with self.pool.acquire() as conn, conn.transaction():
            # Apps in id order, each locked: the app row's lock serialises ingestion per app,
            # so sequence numbers have no holes.
            for app_id in sorted(by_app):
                row = await conn.fetchrow(SELECT_APP + "FOR NO KEY UPDATE", app_id, None)
                if row is None:
                    continue
                app = _app(row)
                for index in by_app[app_id]:
                    request = requests[index]
                    if request.account_id not in (None, app.account_id):
                        continue
                    outcomes[index] = await _ingest_one(conn, app, request)
        return outcomes

    async def list_records(self, app_id: str, query: RecordFilter) -> list[StoredRecord]:
        after_start, after_id = query.after or (None, None)
        rows = await self.pool.fetch(
            LIST_RECORDS, app_id, query.since, query.until, after_start, after_id, query.limit
        )
        return [_stored(row) for row in rows]

    async def records_by_sequence(
        self, app_id: str, first: int, last: int, limit: int
    ) -> list[StoredRecord]:
        rows = await self.pool.fetch(RECORDS_BY_SEQUENCE, app_id, first, last, limit)
        return [_stored(row) for row in rows]

    async def deliveries_of(self, app_id: str, call_session_id: str) -> list[Delivery]:
        async with self.pool.acquire() as conn:
            return await _deliveries(conn, app_id, {"r.call_session_id = {}": call_session_id})

    async def list_deliveries(self, app_id: str, query: DeliveryFilter) -> list[Delivery]:
        filters = {
            "d.state = ANY({}::text[])": sorted(state.value for state in query.states) or None,
            "d.created_at >= {}": query.since,
            "d.created_at < {}": query.until,
            "r.call_session_id = {}": query.call_session_id,
            "d.id < {}": query.before_id,
        }
        async with self.pool.acquire() as conn:
            return await _deliveries(conn, app_id, filters, query.limit)

    async def resend(self, app_id: str, call_session_id: str, *, now: datetime) -> Delivery:
        async with self.pool.acquire() as conn, conn.transaction():
            app = await _fetch_app(conn, app_id, lock="FOR KEY SHARE")
            record_id = await conn.fetchval(
                "SELECT id FROM call_records WHERE app_id = $1 AND call_session_id = $2",
                app_id,
                call_session_id,
            )
            if record_id is None:
                raise RecordNotFound()
            [delivery_id] = await _insert_deliveries(conn, app, [record_id], now)
            [delivery] = await _deliveries(conn, app_id, {"d.id = {}": delivery_id})
        return delivery

    async def count_by_state(self, app_id: str | None = None) -> dict[DeliveryState, int]:
        if app_id is None:
            rows = await self.pool.fetch(COUNT_BY_STATE)
        else:
            rows = await self.pool.fetch(APP_COUNT_BY_STATE, app_id)
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
        kind = ReplayKind(kind)
        async with self.pool.acquire() as conn, conn.transaction():
            await _fetch_app(conn, app_id, lock="FOR NO KEY UPDATE")
            same = await conn.fetchrow(SAME_REPLAY, app_id, kind.value, range_from, range_to)
            if same is not None:
                return _replay(same), False
            selection, args = _replay_selection(kind, range_from, range_to)
            total: int = await conn.fetchval(
                f"SELECT count(*) FROM ({selection}) AS selection", app_id, 0, None, *args
            )
            if total > cap:
                raise ReplayTooLarge(
                    f"the replay covers {total} records, more than the {cap} one replay may;"
                    " narrow the range"
                )
            row = await conn.fetchrow(
                INSERT_REPLAY, new_id("rpl"), app_id, kind.value, range_from, range_to, total, now
            )
        return _replay(_found(row)), True

    async def get_replay(self, app_id: str, replay_id: str) -> ReplayJob:
        row = await self.pool.fetchrow(
            f"SELECT {_REPLAY_COLUMNS} FROM replays WHERE id = $1 AND app_id = $2",
            replay_id,
            app_id,
        )
        if row is None:
            raise ReplayNotFound()
        return _replay(row)

    async def replay_progress(self, replay_id: str) -> dict[DeliveryState, int]:
        rows = await self.pool.fetch(
            "SELECT state, count(*) FROM deliveries WHERE replay_id = $1 GROUP BY state",
            replay_id,
        )
        return counts_by_state(rows)

    async def claim_replay(
        self, *, now: datetime, lease_until: datetime, owner: str
    ) -> ReplayJob | None:
        row = await self.pool.fetchrow(CLAIM_REPLAY, now, lease_until, owner)
        return None if row is None else _replay(row)

    async def advance_replay(
        self, replay_id: str, *, owner: str, chunk: int, now: datetime, lease_until: datetime
    ) -> ReplayJob | None:
        async with self.pool.acquire() as conn, conn.transaction():
            app, job = await _lock_replay(conn, replay_id)
            if job["state"] != ReplayState.RUNNING or job["lease_owner"] != owner:
                return None
            selection, args = _replay_selection(
                ReplayKind(job["kind"]), job["range_from"], job["range_to"]
            )
            taken = [
                row[0] for row in await conn.fetch(selection, app.id, job["cursor"], chunk, *args)
            ]
            await _insert_deliveries(conn, app, taken, now, replay_id)
            done = len(taken) < chunk
            row = await conn.fetchrow(
                ADVANCE_REPLAY,
                replay_id,
                taken[-1] if taken else job["cursor"],
                len(taken),
                now,
                (ReplayState.DONE if done else ReplayState.RUNNING).value,
                now if done else None,
                None if done else lease_until,
                None if done else owner,
            )
        return _replay(_found(row))

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
        rows = await self.pool.fetch(
            CLAIM_DUE,
            now,
            limit,
            lease_until,
            owner,
            list(skip_apps),
            json.dumps(app_limits or {}),
        )
        rows.sort(key=lambda row: row["next_attempt_at"])
        keys: dict[str, tuple[str, ...]] = {}  # per app: the same for all its rows
        return [
            Claimed(
                delivery_id=row["id"],
                app_id=row["app_id"],
                call_session_id=row["call_session_id"],
                push_url=row["push_url"],
                body=row["body"],
                sequence=row["seq"],
                version=row["version"],
                attempt=row["attempts"] + 1,
                first_attempt_at=row["first_attempt_at"],
                signing_keys=keys.get(row["app_id"])
                or keys.setdefault(row["app_id"], _active_keys(row, now)),
            )
            for row in rows
        ]

    async def release(self, delivery_ids: Sequence[int], *, owner: str, now: datetime) -> int:
        if not delivery_ids:
            return 0
        status = await self.pool.execute(
            RELEASE, DeliveryState.PENDING.value, now, list(delivery_ids), owner
        )
        return int(status.split()[-1])

    async def complete(self, completions: Sequence[Completion], *, owner: str) -> None:
        if not completions:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            # Apps first, in id order: the lock order of update_app (app, then deliveries).
            for app_id, streak in sorted(failure_streaks(completions).items()):
                sql = STREAK_RESTART if streak.succeeded else STREAK_CONTINUE
                await conn.execute(sql, app_id, streak.failing_since)
            await conn.execute(
                COMPLETE,
                [done.claimed.delivery_id for done in completions],
                [done.claimed.attempt for done in completions],
                [done.outcome.started_at for done in completions],
                [done.outcome.duration_ms for done in completions],
                [done.outcome.status_code for done in completions],
                [done.outcome.error_kind for done in completions],
                [done.outcome.error for done in completions],
                [done.outcome.response_excerpt for done in completions],
                [done.next_state.value for done in completions],
                [done.next_attempt_at for done in completions],
                owner,
            )

    async def apps_failing_since(self, cutoff: datetime) -> list[App]:
        return [_app(row) for row in await self.pool.fetch(APPS_FAILING, cutoff)]

    async def purge_before(self, cutoff: datetime, *, limit: int) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            ids = [row[0] for row in await conn.fetch(PURGEABLE, cutoff, limit)]
            deliveries = [row[0] for row in await conn.fetch(PURGE_DELIVERIES, ids)]
            await conn.execute(PURGE_ATTEMPTS, deliveries)
            for statement in PURGE:
                await conn.execute(statement, ids)
        return len(ids)

    async def release_expired(self, *, now: datetime) -> int:
        status = await self.pool.execute(RELEASE_EXPIRED, DeliveryState.PENDING.value, now)
        return int(status.split()[-1])

    async def next_due_at(self) -> datetime | None:
        value: datetime | None = await self.pool.fetchval(
            "SELECT min(next_attempt_at) FROM deliveries WHERE state = 'pending'"
        )
        return value

    # Statistics

    async def attempt_stats(
        self, app_id: str, *, since: datetime, bucket: timedelta
    ) -> list[AttemptBucket]:
        # A failed attempt was the delivery's last if the delivery failed with it.
        rows = await self.pool.fetch(
            """
            SELECT floor(extract(epoch FROM a.started_at - $2) / $3)::bigint AS slot,
                   count(*) FILTER (WHERE a.error_kind IS NULL),
                   count(*) FILTER (WHERE a.error_kind IS NOT NULL
                                    AND NOT (d.state = 'failed' AND a.number = d.attempts)),
                   count(*) FILTER (WHERE a.error_kind IS NOT NULL
                                    AND d.state = 'failed' AND a.number = d.attempts)
            FROM attempts AS a JOIN deliveries AS d ON d.id = a.delivery_id
            WHERE a.app_id = $1 AND a.started_at >= $2
            GROUP BY slot ORDER BY slot
            """,
            app_id,
            since,
            bucket.total_seconds(),
        )
        return [_bucket(row, since, bucket) for row in rows]


# Queries shared by several methods


async def _ingest_one(conn: _Conn, app: App, request: IngestRequest) -> list[IngestResult]:
    """Store one request's records (the app locked by the caller)."""
    last = await conn.fetchval("SELECT last_seq FROM apps WHERE id = $1", app.id)
    records = request.records
    plan = plan_ingest(records, await _latest(conn, app.id, records), last)
    if plan.versions:
        versions = await _store_versions(conn, app.id, plan.versions, request.now)
        state = DeliveryState.PENDING if app.pushing else DeliveryState.HELD
        await conn.execute(
            INSERT_VERSION_DELIVERIES,
            [record_id for record_id, _ in versions],
            [version_id for _, version_id in versions],
            app.id,
            state.value,
            request.now,
        )
        await conn.execute(
            "UPDATE apps SET last_seq = $2 WHERE id = $1", app.id, plan.last_sequence
        )
    return plan.results


async def _reset(conn: asyncpg.Connection) -> None:
    """Make a connection given back to the pool ready for the next user. The store keeps no
    session state (its locks are transaction-scoped, it neither listens nor sets anything),
    so asyncpg's default reset, a round trip on every release, only matters for a
    transaction left open."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def _fetch_app(
    conn: _Executor, app_id: str, account_id: str | None = None, *, lock: _AppLock = ""
) -> App:
    """The app (in that account, if one is given), locked as asked; ``AppNotFound`` else."""
    row = await conn.fetchrow(SELECT_APP + lock, app_id, account_id)
    if row is None:
        raise AppNotFound()
    return _app(row)


async def _latest(conn: _Conn, app_id: str, records: Sequence[NewRecord]) -> dict[str, Latest]:
    sids = list({record.call_session_id for record in records})
    rows = await conn.fetch(LATEST_VERSIONS, app_id, sids)
    return {row[0]: Latest(row[1], row[2], row[3]) for row in rows}


async def _store_versions(
    conn: _Conn, app_id: str, planned: Sequence[PlannedVersion], now: datetime
) -> list[tuple[int, int]]:
    """Store the planned versions (and the records new in the batch, once each, and each
    record's latest version); the (record id, version id) of each, in order."""
    final = {item.record.call_session_id: item for item in planned}
    new = [item for sid, item in final.items() if item.record_id is None]
    rows = await conn.fetch(
        INSERT_RECORDS,
        app_id,
        [item.record.call_session_id for item in new],
        [item.record.call_start for item in new],
        [item.version for item in new],
        now,
    )
    ids = {row["call_session_id"]: row["id"] for row in rows}
    changed = [item for item in final.values() if item.record_id is not None]
    await conn.execute(
        UPDATE_RECORDS,
        [item.record_id for item in changed],
        [item.version for item in changed],
        [item.record.call_start for item in changed],
    )
    record_ids = [item.record_id or ids[item.record.call_session_id] for item in planned]
    stored = await conn.fetch(
        INSERT_VERSIONS,
        app_id,
        record_ids,
        [item.version for item in planned],
        [item.sequence for item in planned],
        [item.record.body for item in planned],
        now,
    )
    version_ids = {(row["record_id"], row["version"]): row["id"] for row in stored}
    return [
        (record_id, version_ids[record_id, item.version])
        for record_id, item in zip(record_ids, planned, strict=True)
    ]


async def _insert_deliveries(
    conn: _Conn,
    app: App,
    record_ids: Sequence[int],
    now: datetime,
    replay_id: str | None = None,
) -> list[int]:
    """A delivery of each record due now, held if the app is not pushing; their ids."""
    if not record_ids:
        return []
    state = DeliveryState.PENDING if app.pushing else DeliveryState.HELD
    rows = await conn.fetch(INSERT_DELIVERIES, record_ids, app.id, state.value, now, replay_id)
    return [row[0] for row in rows]


async def _deliveries(
    conn: _Conn, app_id: str, filters: Mapping[str, object], limit: int | None = None
) -> list[Delivery]:
    """The app's deliveries, newest first, with their attempts.

    ``filters``: a condition for each value (``{}`` where the value goes), the ``None``
    ones skipped."""
    given = [(condition, value) for condition, value in filters.items() if value is not None]
    sql = LIST_DELIVERIES.format(
        filters="".join(
            f" AND {condition.format(f'${number}')}"
            for number, (condition, _) in enumerate(given, start=3)
        )
    )
    rows = await conn.fetch(sql, app_id, limit, *(value for _, value in given))
    attempts = await _attempts(conn, [row["id"] for row in rows])
    return [_delivery(row, attempts.get(row["id"], ())) for row in rows]


async def _attempts(conn: _Conn, delivery_ids: list[int]) -> dict[int, tuple[Attempt, ...]]:
    """The attempts of these deliveries, by delivery, in order (one query for all)."""
    found: dict[int, list[Attempt]] = {}
    if delivery_ids:
        for row in await conn.fetch(ATTEMPTS_OF, delivery_ids):
            found.setdefault(row["delivery_id"], []).append(_attempt(row))
    return {delivery_id: tuple(attempts) for delivery_id, attempts in found.items()}


def _replay_selection(
    kind: ReplayKind, range_from: datetime | None, range_to: datetime | None
) -> tuple[str, tuple[datetime | None, ...]]:
    """The query of the records a replay covers, and its arguments after $1, $2 and $3."""
    if kind is ReplayKind.RANGE:
        return REPLAY_RANGE, (range_from, range_to)
    return REPLAY_FAILED, (range_from,)


async def _lock_replay(conn: _Conn, replay_id: str) -> tuple[App, asyncpg.Record]:
    """The replay's app (``FOR KEY SHARE``) then the replay (``FOR UPDATE``), in the order
    ``delete_app`` locks them; ``ReplayNotFound`` if either is gone."""
    app_id = await conn.fetchval("SELECT app_id FROM replays WHERE id = $1", replay_id)
    if app_id is None:
        raise ReplayNotFound()
    try:
        app = await _fetch_app(conn, app_id, lock="FOR KEY SHARE")
    except AppNotFound:
        raise ReplayNotFound() from None
    job = await conn.fetchrow(LOCK_REPLAY, replay_id)
    if job is None:
        raise ReplayNotFound()
    return app, job


# Rows to objects


def _found(row: asyncpg.Record | None) -> asyncpg.Record:
    """The row a statement that always returns one returned."""
    if row is None:
        raise StoreError("the database returned no row")
    return row


def _account(row: asyncpg.Record) -> Account:
    return Account(id=row["id"], name=row["name"], created_at=row["created_at"])


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        id=row["id"],
        account_id=row["account_id"],
        name=row["name"],
        scope=KeyScope(row["scope"]),
        prefix=row["prefix"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


def _app(row: asyncpg.Record) -> App:
    return App(
        id=row["id"],
        account_id=row["account_id"],
        name=row["name"],
        push_url=row["push_url"],
        paused=row["paused"],
        signing=row["signing"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        failing_since=row["failing_since"],
        paused_reason=row["paused_reason"],
    )


def _replay(row: asyncpg.Record) -> ReplayJob:
    return ReplayJob(
        id=row["id"],
        app_id=row["app_id"],
        kind=ReplayKind(row["kind"]),
        range_from=row["range_from"],
        range_to=row["range_to"],
        state=ReplayState(row["state"]),
        total=row["total"],
        enqueued=row["enqueued"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
    )


def _delivery(row: asyncpg.Record, attempts: tuple[Attempt, ...]) -> Delivery:
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
        next_attempt_at=None if state is DeliveryState.HELD else row["next_attempt_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        attempt_log=attempts,
    )


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


def _active_keys(row: asyncpg.Record, now: datetime) -> tuple[str, ...]:
    """The secrets a push of a claimed row, made at ``now``, is signed with."""
    return _signing_keys(row).active(now) if row["signing"] else ()


def _signing_keys(row: asyncpg.Record) -> SigningKeys:
    return SigningKeys(
        current=row["signing_secret"],
        previous=row["previous_secret"],
        previous_until=row["previous_secret_until"],
    )


def _stored(row: asyncpg.Record) -> StoredRecord:
    return StoredRecord(
        id=row["id"],
        call_session_id=row["call_session_id"],
        call_start=row["call_start"],
        version=row["version"],
        sequence=row["seq"],
        received_at=row["received_at"],
        body=row["body"],
    )


def _bucket(row: asyncpg.Record, since: datetime, size: timedelta) -> AttemptBucket:
    slot, delivered, retrying, failed = row
    return AttemptBucket(
        start=since + slot * size, delivered=delivered, retrying=retrying, failed=failed
    )
