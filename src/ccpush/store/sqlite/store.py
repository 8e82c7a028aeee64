"""The SQLite store: the zero-setup default. One file, WAL, one writer thread.

Every unit of work runs on one dedicated thread that owns the connection, so the event
loop never blocks on disk and transactions never interleave: a method is written as plain
blocking code, and ``on_writer`` makes it the coroutine that runs it there. Writes take
``BEGIN IMMEDIATE`` so they wait for the lock instead of failing half-way.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Concatenate, Final, ParamSpec, TypeVar
from urllib.parse import parse_qs, urlsplit

from ccpush import audit as audited
from ccpush.app_pace import Bucket, Pace, paced_limits, spent_buckets
from ccpush.audit import AuditEntry, AuditFilter
from ccpush.endpoint import Endpoint
from ccpush.errors import (
    AccountNotFound,
    AppNotFound,
    KeyNotFound,
    MigrationError,
    RecordNotFound,
    ReplayNotFound,
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
    IngestResult,
    KeyScope,
    NewRecord,
    PortalLink,
    ReplayJob,
    ReplayKind,
    ReplayState,
    SigningKeys,
    StoredRecord,
)
from ccpush.notifications.records import (
    AppWatch,
    Destination,
    EventType,
    MarkChange,
    Notice,
    NoticeDelivery,
    NotificationTarget,
)
from ccpush.secret_box import SecretBox, fallback_box
from ccpush.signing import generate_secret
from ccpush.store.base import (
    DEFAULT_ACCOUNT,
    UNSET,
    AppActivity,
    DeliveryFilter,
    IdempotentRequest,
    IngestRequest,
    RecordFilter,
    Store,
    _Unset,
    resealed,
    translating,
)
from ccpush.store.migrations import load_migrations
from ccpush.store.planning import (
    IngestPlan,
    Latest,
    app_changes,
    check_replay_size,
    counts_by_state,
    failure_streaks,
    idempotency_key_free,
    is_same_replay,
    new_app_id,
    new_delivery_state,
    new_id,
    plan_ingest,
)
from ccpush.store.rows import Rows, attempt_bucket, from_epoch
from ccpush.store.sqlite import audit as audit_sql
from ccpush.store.sqlite import notifications as notices
from ccpush.store.sqlite import queries as sql

T = TypeVar("T")
P = ParamSpec("P")

KEY_CACHE_SECONDS: Final = 5.0
"""How long a key found by ``key_by_hash`` is answered from memory."""
KEY_CACHE_SIZE: Final = 1024

ROWS: Final = Rows(from_epoch)


def _ts(when: datetime) -> float:
    return when.timestamp()


def _ts_or_none(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def _dt(value: float | None) -> datetime | None:
    """``ROWS.maybe_time`` without its calls, for the claims' hot path."""
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _bucket(row: sqlite3.Row) -> Bucket:
    """A row of ``PACED_APPS``."""
    pace = Pace(row[1], row[2])
    return Bucket(row[0], pace, row[3], _dt(row[4]), row[5])


def _marks(count: int) -> str:
    """``?,?,?``: placeholders for an ``IN`` list."""
    return ",".join("?" * count)


def _value_rows(rows: int, columns: int) -> str:
    """``(?, ?), (?, ?)``: placeholders for a multi-row VALUES."""
    row = "(" + ", ".join("?" * columns) + ")"
    return ", ".join([row] * rows)


def _chunks(items: Sequence[T], size: int = 1000) -> Iterator[Sequence[T]]:
    """Slices of at most ``size`` (a statement has at most 32,766 parameters)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _make_private(path: Path) -> None:
    """The database file made for this user only (0600), in a directory made 0700 if missing.
    The file holds signing secrets and phone numbers; SQLite gives the ``-wal`` and ``-shm``
    files it creates the database file's mode, and those left by an earlier run are set too."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDONLY, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with suppress(FileNotFoundError):
            file.chmod(0o600)


def on_writer(
    method: Callable[Concatenate[SqliteStore, P], T],
) -> Callable[Concatenate[SqliteStore, P], Coroutine[Any, Any, T]]:
    """The coroutine that runs ``method`` on the store's writer thread, the one thread
    that uses the connection."""

    @functools.wraps(method)
    async def on_thread(self: SqliteStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(functools.partial(method, self, *args, **kwargs))

    return on_thread


@translating(
    sqlite3.Error,
    # a value SQLite cannot take (too big, or text with a lone surrogate): bad input
    refusals=(sqlite3.DataError, UnicodeEncodeError),
)
class SqliteStore(Store):
    def __init__(
        self, path: str | Path, *, synchronous: str = "NORMAL", box: SecretBox | None = None
    ) -> None:
        self.box = box or fallback_box()
        self.path = str(path)
        self.synchronous = synchronous.upper()
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._keys: dict[str, tuple[ApiKey, float]] = {}

    @classmethod
    def from_url(cls, url: str, *, box: SecretBox | None = None) -> SqliteStore:
        """``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``?synchronous=full``."""
        parts = urlsplit(url)
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        options = parse_qs(parts.query)
        synchronous = options.get("synchronous", ["NORMAL"])[0]
        return cls(path or ":memory:", synchronous=synchronous, box=box)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("the store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _read(self, statement: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        return await self._run(lambda: self._db.execute(statement, params).fetchall())

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
            _make_private(Path(self.path))
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

    @on_writer
    def migrate(self) -> list[str]:
        applied = []
        with self._write() as db:
            db.execute(sql.CREATE_MIGRATIONS)
            done = {row[0] for row in db.execute(sql.APPLIED_MIGRATIONS)}
            for migration in load_migrations("sqlite"):
                if migration.version in done:
                    continue
                try:
                    for statement in migration.sql.split(";"):
                        if statement.strip():
                            db.execute(statement)
                except sqlite3.Error as exc:
                    raise MigrationError(f"migration {migration.version} failed: {exc}") from exc
                db.execute(sql.RECORD_MIGRATION, (migration.version, migration.name))
                applied.append(migration.label)
            self._reseal(db, rotate=False)
        return applied

    @on_writer
    def seal_secrets(self, *, rotate: bool = False) -> int:
        with self._write() as db:
            return self._reseal(db, rotate=rotate)

    def _reseal(self, db: sqlite3.Connection, *, rotate: bool) -> int:
        changed = 0
        for row in db.execute(sql.ALL_SECRETS if rotate else sql.PLAIN_SECRETS).fetchall():
            values = resealed(self.box, tuple(row)[1:], rotate=rotate)
            if values is not None:
                db.execute(sql.RESEAL_APP, (row[0], *values))
                changed += 1
        return changed

    # Accounts and keys

    @on_writer
    def create_account(
        self, *, name: str, now: datetime, audit: AuditEntry | None = None
    ) -> Account:
        account = Account(id=new_id("acc"), name=name, created_at=now)
        with self._write() as db:
            db.execute(sql.INSERT_ACCOUNT, (account.id, name, _ts(now)))
            audit_sql.insert_audit(db, [audit and audited.account_created(audit, account)])
        return account

    @on_writer
    def get_account(self, account_id: str) -> Account:
        return _fetch_account(self._db, account_id)

    @on_writer
    def list_accounts(self) -> list[Account]:
        return [ROWS.account(row) for row in self._db.execute(sql.LIST_ACCOUNTS)]

    @on_writer
    def create_key(
        self,
        *,
        account_id: str | None,
        name: str,
        scope: KeyScope,
        secret_hash: str,
        prefix: str,
        now: datetime,
        audit: AuditEntry | None = None,
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
        with self._write() as db:
            if account_id is not None:
                _fetch_account(db, account_id)
            db.execute(
                sql.INSERT_KEY, (key.id, account_id, name, scope, secret_hash, prefix, _ts(now))
            )
            audit_sql.insert_audit(db, [audit and audited.key_created(audit, key)])
        return key

    @on_writer
    def list_keys(self, account_id: str | None) -> list[ApiKey]:
        return [ROWS.key(row) for row in self._db.execute(sql.LIST_KEYS, (account_id,))]

    async def revoke_key(
        self,
        account_id: str | None,
        key_id: str,
        *,
        now: datetime,
        audit: AuditEntry | None = None,
    ) -> ApiKey:
        try:
            return await self._revoke_key(account_id, key_id, now, audit)
        finally:
            self._keys.clear()  # on the loop, after any lookup that read the key before

    @on_writer
    def _revoke_key(
        self, account_id: str | None, key_id: str, now: datetime, audit: AuditEntry | None
    ) -> ApiKey:
        with self._write() as db:
            row = db.execute(sql.REVOKE_KEY, (key_id, account_id, _ts(now))).fetchone()
            if row is None:
                raise KeyNotFound()
            key = ROWS.key(row)
            audit_sql.insert_audit(db, [audit and audited.key_revoked(audit, key)])
        return key

    async def key_by_hash(self, secret_hash: str) -> ApiKey | None:
        # Every API request looks its key up: answered from memory for KEY_CACHE_SECONDS,
        # not through the store's one thread, where it would queue behind commits. SQLite is
        # one process's: keys change here, and a revocation clears the cache at once.
        now = time.monotonic()
        cached = self._keys.get(secret_hash)
        if cached is not None and cached[1] > now:
            return cached[0]
        rows = await self._read(sql.KEY_BY_HASH, (secret_hash,))
        key = ROWS.key(rows[0]) if rows else None
        if key is not None:
            if len(self._keys) >= KEY_CACHE_SIZE:
                self._keys.clear()
            self._keys[secret_hash] = (key, now + KEY_CACHE_SECONDS)
        return key

    # Voice applications

    @on_writer
    def create_app(
        self,
        *,
        name: str,
        push_url: str | None,
        now: datetime,
        account_id: str = DEFAULT_ACCOUNT,
        audit: AuditEntry | None = None,
        endpoint: Endpoint | None = None,
        rate_limit: float | None = None,
        max_in_flight: int | None = None,
    ) -> App:
        app_id, at = new_app_id(), _ts(now)
        settings = self._initial_settings(endpoint, rate_limit, max_in_flight)
        with self._write() as db:
            _fetch_account(db, account_id)
            db.execute(
                sql.INSERT_APP,
                (app_id, account_id, name, push_url, at, self.box.seal(generate_secret())),
            )
            columns = "".join(f"{column} = :{column}, " for column in settings)
            row = db.execute(
                sql.UPDATE_APP.format(columns=columns), {**settings, "id": app_id, "now": at}
            ).fetchone()
            app = ROWS.app(row)
            audit_sql.insert_audit(db, [audit and audited.app_created(audit, app, self._described)])
        return app

    @on_writer
    def get_app(self, app_id: str, account_id: str | None = None) -> App:
        return _fetch_app(self._db, app_id, account_id)

    @on_writer
    def list_apps(self, account_id: str | None = None) -> list[App]:
        return [ROWS.app(row) for row in self._db.execute(sql.LIST_APPS, (account_id,))]

    @on_writer
    def update_app(
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
        audit: AuditEntry | None = None,
        endpoint: Endpoint | _Unset | None = UNSET,
        rate_limit: float | _Unset | None = UNSET,
        max_in_flight: int | _Unset | None = UNSET,
    ) -> App:
        changes = app_changes(
            rate_limit=rate_limit,
            max_in_flight=max_in_flight,
            name=name,
            push_url=push_url,
            paused=paused,
            signing=signing,
            paused_reason=paused_reason,
            endpoint=endpoint if isinstance(endpoint, _Unset) else self.sealed_endpoint(endpoint),
        )
        columns = ", ".join(f"{column} = :{column}" for column in changes)
        at = _ts(now)
        with self._write() as db:
            before = _fetch_app(db, app_id, account_id)
            row = db.execute(
                sql.UPDATE_APP.format(columns=f"{columns}, " if columns else ""),
                {**changes, "id": app_id, "now": at},
            ).fetchone()
            after = ROWS.app(row)
            if before.pushing and not after.pushing:
                for lane in sql.HOLD_WAITING:
                    db.execute(lane, (app_id, at))
            elif after.pushing and not before.pushing:
                db.execute(sql.RELEASE_HELD, (app_id, at))
            if audit is not None:
                entries = audited.app_changes(audit, before, after, self._described)
                audit_sql.insert_audit(db, entries)
        return after

    @on_writer
    def signing_keys(self, app_id: str, account_id: str | None = None) -> SigningKeys:
        _fetch_app(self._db, app_id, account_id)
        row = self._db.execute(sql.SIGNING_KEYS, (app_id,)).fetchone()
        return self.opened_keys(ROWS.signing_keys(row))

    @on_writer
    def rotate_signing_secret(
        self,
        app_id: str,
        *,
        secret: str,
        now: datetime,
        overlap: timedelta,
        account_id: str | None = None,
        audit: AuditEntry | None = None,
    ) -> SigningKeys:
        with self._write() as db:
            app = _fetch_app(db, app_id, account_id)
            sealed = self.box.seal(secret)
            row = db.execute(sql.ROTATE_KEYS, (app_id, sealed, _ts(now + overlap), _ts(now)))
            keys = self.opened_keys(ROWS.signing_keys(row.fetchone()))
            audit_sql.insert_audit(db, [audit and audited.secret_rotated(audit, app)])
            return keys

    @on_writer
    def delete_app(
        self, app_id: str, account_id: str | None = None, *, audit: AuditEntry | None = None
    ) -> None:
        with self._write() as db:
            app = _fetch_app(db, app_id, account_id)
            for statement in sql.DELETE_APP:
                db.execute(statement, (app_id,))
            audit_sql.insert_audit(db, [audit and audited.app_deleted(audit, app)])

    # Records

    async def ingest_many(
        self, requests: Sequence[IngestRequest]
    ) -> list[list[IngestResult] | Exception]:
        return await self._ingest_many(requests) if requests else []

    @on_writer
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
                row = db.execute(sql.APP_TO_INGEST, (app_id,)).fetchone()
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
                plan = plan_ingest(records, _latest(db, app_id, records), row["last_seq"])
                _store_plan(db, ROWS.app(row), plan, received)
                results = iter(plan.results)
                for index in allowed:
                    outcomes[index] = [next(results) for _ in requests[index].records]
        return outcomes

    @on_writer
    def list_records(self, app_id: str, query: RecordFilter) -> list[StoredRecord]:
        filters: list[str] = []
        params: dict[str, Any] = {"app": app_id, "limit": query.limit}
        if query.since is not None:
            filters.append(" AND r.call_start >= :since")
            params["since"] = _ts(query.since)
        if query.until is not None:
            filters.append(" AND r.call_start < :until")
            params["until"] = _ts(query.until)
        if query.after is not None:
            filters.append(" AND (r.call_start, v.id) > (:after_start, :after_id)")
            params["after_start"], params["after_id"] = _ts(query.after[0]), query.after[1]
        rows = self._db.execute(sql.LIST_RECORDS.format(filters="".join(filters)), params)
        return [ROWS.stored(row) for row in rows]

    @on_writer
    def records_by_sequence(
        self, app_id: str, first: int, last: int, limit: int
    ) -> list[StoredRecord]:
        rows = self._db.execute(sql.RECORDS_BY_SEQUENCE, (app_id, first, last, limit))
        return [ROWS.stored(row) for row in rows]

    @on_writer
    def deliveries_of(self, app_id: str, call_session_id: str) -> list[Delivery]:
        query = DeliveryFilter(call_session_id=call_session_id, limit=1_000_000)
        return _deliveries(self._db, app_id, query)

    @on_writer
    def list_deliveries(self, app_id: str, query: DeliveryFilter) -> list[Delivery]:
        return _deliveries(self._db, app_id, query)

    @on_writer
    def resend(
        self,
        app_id: str,
        call_session_id: str,
        *,
        now: datetime,
        audit: AuditEntry | None = None,
    ) -> Delivery:
        with self._write() as db:
            app = _fetch_app(db, app_id)
            row = db.execute(sql.FIND_RECORD, (app_id, call_session_id)).fetchone()
            if row is None:
                raise RecordNotFound()
            [delivery_id] = _insert_deliveries(db, app, [row[0]], _ts(now))
            entry = audit and audited.record_resent(audit, app, call_session_id, delivery_id)
            audit_sql.insert_audit(db, [entry])
        return _deliveries(db, app_id, DeliveryFilter(before_id=delivery_id + 1, limit=1))[0]

    @on_writer
    def count_by_state(self, app_id: str | None = None) -> dict[DeliveryState, int]:
        if app_id is None:
            return counts_by_state(self._db.execute(sql.COUNT_BY_STATE))
        return counts_by_state(self._db.execute(sql.APP_COUNT_BY_STATE, (app_id,)))

    # Replays

    @on_writer
    def create_replay(
        self,
        app_id: str,
        *,
        kind: ReplayKind,
        range_from: datetime | None,
        range_to: datetime | None,
        cap: int,
        now: datetime,
        audit: AuditEntry | None = None,
    ) -> tuple[ReplayJob, bool]:
        params = {
            "app": app_id,
            "kind": kind,
            "from": _ts_or_none(range_from),
            "to": _ts_or_none(range_to),
            "now": _ts(now),
        }
        with self._write() as db:
            app = _fetch_app(db, app_id)
            latest = db.execute(sql.SAME_REPLAY, params).fetchone()
            if latest is not None:
                job = ROWS.replay(latest)
                if is_same_replay(job, unfinished=bool(latest["unfinished"]), now=now):
                    return job, False
            total = db.execute(sql.COUNT_REPLAY[ReplayKind(kind)], params).fetchone()[0]
            check_replay_size(total, cap)
            row = db.execute(sql.INSERT_REPLAY, {**params, "id": new_id("rpl"), "total": total})
            job = ROWS.replay(row.fetchone())
            audit_sql.insert_audit(db, [audit and audited.replay_requested(audit, app, job)])
            return job, True

    @on_writer
    def get_replay(self, app_id: str, replay_id: str) -> ReplayJob:
        row = self._db.execute(sql.SELECT_REPLAY, (replay_id, app_id)).fetchone()
        if row is None:
            raise ReplayNotFound()
        return ROWS.replay(row)

    @on_writer
    def replay_progress(self, replay_id: str) -> dict[DeliveryState, int]:
        return counts_by_state(self._db.execute(sql.REPLAY_PROGRESS, (replay_id,)))

    @on_writer
    def claim_replay(self, *, now: datetime, lease_until: datetime, owner: str) -> ReplayJob | None:
        params = {"lease": _ts(lease_until), "owner": owner, "now": _ts(now)}
        with self._write() as db:
            row = db.execute(sql.CLAIM_REPLAY, params).fetchone()
        return None if row is None else ROWS.replay(row)

    @on_writer
    def advance_replay(
        self, replay_id: str, *, owner: str, chunk: int, now: datetime, lease_until: datetime
    ) -> ReplayJob | None:
        at = _ts(now)
        with self._write() as db:
            job = db.execute(sql.LOCK_REPLAY, (replay_id,)).fetchone()
            if job is None:
                raise ReplayNotFound()
            if job["state"] != ReplayState.RUNNING or job["lease_owner"] != owner:
                return None
            app = _fetch_app(db, job["app_id"])
            params = {
                "app": app.id,
                "from": job["range_from"],
                "to": job["range_to"],
                "cursor": job["cursor"],
                "chunk": chunk,
            }
            taken = [
                row[0] for row in db.execute(sql.REPLAY_CHUNK[ReplayKind(job["kind"])], params)
            ]
            _insert_deliveries(db, app, taken, at, replay_id)
            done = len(taken) < chunk
            row = db.execute(
                sql.ADVANCE_REPLAY,
                {
                    "id": replay_id,
                    "cursor": taken[-1] if taken else job["cursor"],
                    "count": len(taken),
                    "now": at,
                    "state": ReplayState.DONE if done else ReplayState.RUNNING,
                    "finished": at if done else None,
                    "lease": None if done else _ts(lease_until),
                    "owner": None if done else owner,
                },
            )
            return ROWS.replay(row.fetchone())

    # Dispatching

    @on_writer
    def claim_due(
        self,
        *,
        now: datetime,
        limit: int,
        lease_until: datetime,
        owner: str,
        skip_apps: Sequence[str] = (),
        app_limits: Mapping[str, int] | None = None,
    ) -> list[Claimed]:
        # Every statement answers one row at most (JSON arrays): the store's thread takes the
        # GIL back once per statement, not once per delivery, and under load every take can
        # wait for the event loop's thread.
        at = _ts(now)
        with self._write() as db:
            # The paced apps' buckets are read and spent in the claim's transaction.
            buckets = [_bucket(row) for row in db.execute(sql.PACED_APPS, (at,))]
            if buckets:
                skip_apps, app_limits = paced_limits(
                    buckets, now, list(skip_apps), dict(app_limits or {})
                )
            skip, limits = json.dumps(list(skip_apps)), json.dumps(app_limits or {})
            ids, data, bodies = db.execute(sql.CLAIM_DUE, (at, limit, skip, limits)).fetchone()
            if ids == "[]":
                return []
            db.execute(sql.CLAIM_LEASE, (_ts(lease_until), owner, at, ids))
            rows = json.loads(data)
            if buckets:
                spent = spent_buckets(buckets, Counter(row[1] for row in rows), now)
                db.execute(sql.SPEND_PACE, (json.dumps([(a, t, _ts(s)) for a, t, s in spent]),))
        end = 0
        for row in rows:
            start, end = end, end + row[4]
            row[4] = bodies[start:end]
        rows.sort(key=lambda row: row[7])
        keys: dict[str, tuple[str, ...]] = {}  # per app: the same for all its rows
        endpoints = self._endpoints({row[1] for row in rows if row[14]})
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
                signing_keys=keys.get(row[1])
                or keys.setdefault(row[1], self.box.open_all(_active_keys(row, now))),
                endpoint=endpoints.get(row[1]),
                enqueued_at=_dt(row[15]),
                rate_limit=row[16],
                max_in_flight=row[17],
            )
            for row in rows
        ]

    def _endpoints(self, app_ids: set[str]) -> dict[str, Endpoint | None]:
        """The push settings of these apps, opened (on the store's thread)."""
        if not app_ids:
            return {}
        rows = self._db.execute(sql.APP_ENDPOINTS, (json.dumps(sorted(app_ids)),))
        return {app_id: self.opened_endpoint(sealed) for app_id, sealed in rows}

    async def release(self, delivery_ids: Sequence[int], *, owner: str, now: datetime) -> int:
        return await self._release(delivery_ids, owner, now) if delivery_ids else 0

    @on_writer
    def _release(self, delivery_ids: Sequence[int], owner: str, now: datetime) -> int:
        params = {
            "ids": json.dumps(list(delivery_ids)),
            "owner": owner,
            "now": _ts(now),
            "state": DeliveryState.PENDING,
        }
        with self._write() as db:
            return db.execute(sql.RELEASE, params).rowcount

    async def complete(self, completions: Sequence[Completion], *, owner: str) -> None:
        if completions:
            await self._complete(completions, owner)

    @on_writer
    def _complete(self, completions: Sequence[Completion], owner: str) -> None:
        rows = json.dumps([_completion_row(done) for done in completions])
        streaks = json.dumps(
            [
                [app_id, int(streak.succeeded), _ts_or_none(streak.failing_since)]
                for app_id, streak in failure_streaks(completions).items()
            ]
        )
        with self._write() as db:
            db.execute(sql.INSERT_ATTEMPTS, (rows,))
            db.execute(sql.COMPLETE, (rows, owner))
            db.execute(sql.STREAKS, (streaks,))

    @on_writer
    def release_expired(self, *, now: datetime) -> int:
        with self._write() as db:
            params = {"state": DeliveryState.PENDING, "now": _ts(now)}
            return db.execute(sql.RELEASE_EXPIRED, params).rowcount

    @on_writer
    def next_due_at(self) -> datetime | None:
        return ROWS.maybe_time(self._db.execute(sql.NEXT_DUE).fetchone()[0])

    @on_writer
    def oldest_waiting_at(self, app_id: str) -> datetime | None:
        return ROWS.maybe_time(self._db.execute(sql.OLDEST_WAITING, (app_id,)).fetchone()[0])

    # Upkeep

    @on_writer
    def apps_failing_since(self, cutoff: datetime) -> list[App]:
        return [ROWS.app(row) for row in self._db.execute(sql.APPS_FAILING, (_ts(cutoff),))]

    @on_writer
    def purge_before(self, cutoff: datetime, *, limit: int) -> int:
        with self._write() as db:
            ids = [row[0] for row in db.execute(sql.PURGEABLE, (_ts(cutoff), limit))]
            marks = _marks(len(ids))
            for statement in sql.PURGE:
                db.execute(statement.format(marks=marks), ids)
        return len(ids)

    # The audit log

    @on_writer
    def record_audit(self, entries: Sequence[AuditEntry]) -> None:
        with self._write() as db:
            audit_sql.insert_audit(db, entries)

    @on_writer
    def list_audit(self, query: AuditFilter) -> list[AuditEntry]:
        return audit_sql.list_audit(self._db, query)

    @on_writer
    def purge_audit(self, before: datetime, *, limit: int) -> int:
        with self._write() as db:
            return audit_sql.purge_audit(db, before, limit)

    # Idempotency keys

    @on_writer
    def claim_idempotency_key(
        self, request: IdempotentRequest, *, now: datetime
    ) -> IdempotentRequest | None:
        with self._write() as db:
            row = db.execute(sql.SELECT_IDEMPOTENCY_KEY, (request.caller, request.key)).fetchone()
            if row is not None:
                held = ROWS.idempotent_request(row)
                if not idempotency_key_free(held, now=now):
                    return held
            db.execute(sql.PUT_IDEMPOTENCY_KEY, _idempotency_params(request))
        return None

    @on_writer
    def answer_idempotent_request(
        self, request: IdempotentRequest, *, status: int, answer: bytes
    ) -> None:
        params = {**_idempotency_params(request), "status": status, "answer": answer}
        with self._write() as db:
            db.execute(sql.ANSWER_IDEMPOTENCY_KEY, params)

    @on_writer
    def release_idempotency_key(self, request: IdempotentRequest) -> None:
        with self._write() as db:
            db.execute(sql.RELEASE_IDEMPOTENCY_KEY, _idempotency_params(request))

    @on_writer
    def purge_idempotency_keys(self, *, now: datetime, limit: int) -> int:
        with self._write() as db:
            return db.execute(sql.PURGE_IDEMPOTENCY_KEYS, (_ts(now), limit)).rowcount

    # Statistics

    @on_writer
    def attempt_stats(
        self, app_id: str, *, since: datetime, bucket: timedelta
    ) -> list[AttemptBucket]:
        params = {"app": app_id, "since": _ts(since), "size": bucket.total_seconds()}
        rows = self._db.execute(sql.ATTEMPT_STATS, params)
        return [attempt_bucket(row, since, bucket) for row in rows]

    @on_writer
    def app_activity(
        self, *, since: datetime, account_id: str | None = None
    ) -> dict[str, AppActivity]:
        params = {"account": account_id, "since": _ts(since)}
        outcomes = self._db.execute(sql.ACTIVITY_OUTCOMES, params).fetchall()
        return ROWS.app_activity(outcomes, self._db.execute(sql.ACTIVITY_WAITING, params))

    # Console sessions

    @on_writer
    def end_console_session(self, session_id: str, *, now: datetime) -> None:
        with self._write() as db:
            db.execute(sql.END_CONSOLE_SESSION, (session_id, _ts(now)))

    @on_writer
    def console_session_ended(self, session_id: str) -> bool:
        return self._db.execute(sql.CONSOLE_SESSION_ENDED, (session_id,)).fetchone() is not None

    @on_writer
    def purge_console_sessions(self, *, ended_before: datetime) -> int:
        with self._write() as db:
            return db.execute(sql.PURGE_CONSOLE_SESSIONS, (_ts(ended_before),)).rowcount

    # Portal links

    @on_writer
    def create_portal_link(
        self,
        *,
        account_id: str,
        app_id: str | None,
        read_only: bool,
        token_hash: str,
        now: datetime,
        expires_at: datetime,
        audit: AuditEntry | None = None,
    ) -> PortalLink:
        with self._write() as db:
            _fetch_account(db, account_id)
            if app_id is not None:
                _fetch_app(db, app_id, account_id)
            row = db.execute(
                sql.INSERT_PORTAL_LINK,
                (new_id("portal"), account_id, app_id, token_hash, read_only, _ts(now),
                 _ts(expires_at)),
            ).fetchone()  # fmt: skip
            link = ROWS.portal_link(row)
            audit_sql.insert_audit(db, [audit and audited.portal_link_issued(audit, link)])
        return link

    @on_writer
    def use_portal_link(
        self, token_hash: str, *, now: datetime, audit: AuditEntry | None = None
    ) -> PortalLink | None:
        with self._write() as db:
            params = {"token_hash": token_hash, "now": _ts(now)}
            row = db.execute(sql.USE_PORTAL_LINK, params).fetchone()
            if row is None:
                return None
            link = ROWS.portal_link(row)
            audit_sql.insert_audit(db, [audit and audited.portal_link_used(audit, link)])
        return link

    @on_writer
    def purge_portal_links(self, *, expired_before: datetime) -> int:
        with self._write() as db:
            return db.execute(sql.PURGE_PORTAL_LINKS, (_ts(expired_before),)).rowcount

    # Operational notifications

    @on_writer
    def notification_target(self, account_id: str) -> NotificationTarget | None:
        return notices.target(self._db, self.box, account_id)

    @on_writer
    def put_notification_target(
        self, account_id: str, *, url: str | None, email: str | None, secret: str, now: datetime
    ) -> NotificationTarget:
        values = NotificationTarget(
            account_id=account_id, url=url, email=email, secret=secret, updated_at=now
        )
        with self._write() as db:
            notices.put_target(db, self.box, account_id, values)
        return values

    @on_writer
    def watch_apps(self) -> list[AppWatch]:
        return notices.watch_apps(self._db)

    @on_writer
    def last_notice_at(self, app_id: str, type: EventType) -> datetime | None:
        return notices.last_notice_at(self._db, app_id, type)

    @on_writer
    def record_notice(
        self,
        notice: Notice,
        destinations: Sequence[Destination],
        *,
        change: MarkChange | None = None,
    ) -> bool:
        with self._write() as db:
            return notices.record_notice(db, notice, destinations, change)

    @on_writer
    def claim_notice_deliveries(
        self, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[NoticeDelivery]:
        with self._write() as db:
            return notices.claim(db, now, lease_until, limit)

    @on_writer
    def finish_notice_delivery(
        self,
        delivery_id: int,
        *,
        error: str | None,
        next_attempt_at: datetime | None,
        now: datetime,
    ) -> None:
        with self._write() as db:
            notices.finish(db, delivery_id, error, next_attempt_at, now)

    @on_writer
    def purge_notices(self, *, created_before: datetime, limit: int) -> int:
        with self._write() as db:
            return db.execute(notices.PURGE, (created_before.timestamp(), limit)).rowcount

    @on_writer
    def list_notice_deliveries(
        self,
        account_id: str | None,
        *,
        platform: bool,
        limit: int,
        before_id: int | None = None,
    ) -> list[NoticeDelivery]:
        return notices.list_deliveries(self._db, account_id, platform, limit, before_id)


# Statements shared by several methods (on the writer thread)


def _idempotency_params(request: IdempotentRequest) -> dict[str, Any]:
    return {
        "caller": request.caller,
        "key": request.key,
        "fingerprint": request.fingerprint,
        "holder": request.holder,
        "held_until": _ts(request.held_until),
        "expires_at": _ts(request.expires_at),
    }


def _fetch_account(db: sqlite3.Connection, account_id: str) -> Account:
    """The account; ``AccountNotFound`` else."""
    row = db.execute(sql.SELECT_ACCOUNT, (account_id,)).fetchone()
    if row is None:
        raise AccountNotFound()
    return ROWS.account(row)


def _fetch_app(db: sqlite3.Connection, app_id: str, account_id: str | None = None) -> App:
    """The app (in that account, if one is given); ``AppNotFound`` else."""
    row = db.execute(sql.SELECT_APP, (app_id,)).fetchone()
    if row is None or (account_id is not None and row["account_id"] != account_id):
        raise AppNotFound()
    return ROWS.app(row)


def _latest(db: sqlite3.Connection, app_id: str, records: Sequence[NewRecord]) -> dict[str, Latest]:
    sids = list({record.call_session_id for record in records})
    found = {}
    for chunk in _chunks(sids, 500):
        rows = db.execute(sql.LATEST_VERSIONS.format(marks=_marks(len(chunk))), [app_id, *chunk])
        for sid, record_id, version, body in rows:
            found[sid] = Latest(record_id, version, bytes(body))
    return found


def _store_plan(
    db: sqlite3.Connection, app: App, plan: IngestPlan, received: dict[int, float]
) -> None:
    """Store a plan's versions (and the records new in it, once each, with their latest
    version) and a delivery of each version, in about five statements."""
    if plan.versions:
        final = {item.record.call_session_id: item for item in plan.versions}
        new = [item for item in final.values() if item.record_id is None]
        for chunk in _chunks(new):
            db.execute(
                sql.INSERT_RECORDS.format(rows=_value_rows(len(chunk), 5)),
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
                sql.UPDATE_RECORDS.format(rows=_value_rows(len(chunk), 3)),
                [
                    value
                    for item in chunk
                    for value in (item.record_id, item.version, _ts(item.record.call_start))
                ],
            )
        for chunk in _chunks(plan.versions):
            db.execute(
                sql.INSERT_VERSIONS.format(rows=_value_rows(len(chunk), 5)),
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
        db.execute(
            sql.INSERT_VERSION_DELIVERIES,
            (
                new_delivery_state(app),
                app.id,
                plan.versions[0].sequence,
                plan.versions[-1].sequence,
            ),
        )
    db.execute(sql.SET_LAST_SEQUENCE, (plan.last_sequence, app.id))


def _insert_deliveries(
    db: sqlite3.Connection,
    app: App,
    record_ids: Sequence[int],
    now: float,
    replay_id: str | None = None,
) -> list[int]:
    """A delivery of each record due now, held if the app is not pushing; their ids."""
    if not record_ids:
        return []
    params = {
        "ids": json.dumps(list(record_ids)),
        "app": app.id,
        "state": new_delivery_state(app),
        "now": now,
        "replay": replay_id,
    }
    return [row[0] for row in db.execute(sql.INSERT_DELIVERIES, params)]


def _deliveries(db: sqlite3.Connection, app_id: str, query: DeliveryFilter) -> list[Delivery]:
    """The app's deliveries, newest first, with their attempts."""
    filters: list[str] = []
    params: dict[str, Any] = {"app": app_id, "limit": query.limit}
    if query.states:
        names = sorted(query.states)
        filters.append(f" AND d.state IN ({', '.join(f':s{i}' for i in range(len(names)))})")
        params.update({f"s{i}": name for i, name in enumerate(names)})
    if query.since is not None:
        filters.append(" AND d.created_at >= :since")
        params["since"] = _ts(query.since)
    if query.until is not None:
        filters.append(" AND d.created_at < :until")
        params["until"] = _ts(query.until)
    if query.call_session_id is not None:
        filters.append(" AND r.call_session_id = :sid")
        params["sid"] = query.call_session_id
    if query.before_id is not None:
        filters.append(" AND d.id < :before")
        params["before"] = query.before_id
    statement = sql.LIST_DELIVERIES.format(filters="".join(filters))
    rows = db.execute(statement, params).fetchall()
    attempts = _attempts(db, [row["id"] for row in rows])
    return [ROWS.delivery(row, attempts.get(row["id"], ())) for row in rows]


def _attempts(db: sqlite3.Connection, delivery_ids: list[int]) -> dict[int, tuple[Attempt, ...]]:
    """The attempts of these deliveries, by delivery, in order (a query per 500)."""
    return ROWS.attempts_by_delivery(
        itertools.chain.from_iterable(
            db.execute(sql.ATTEMPTS_OF.format(marks=_marks(len(ids))), ids)
            for ids in _chunks(delivery_ids, 500)
        )
    )


# Values for statements, and claimed rows


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


def _active_keys(row: list[Any], now: datetime) -> tuple[str, ...]:
    """The secrets a push of a claimed row (of ``CLAIM_DUE``), made at ``now``, is signed with."""
    return ROWS.keys(row[9], row[10], row[11]).active(now) if row[8] else ()
