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

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal, TypeAlias
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

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
from ccpush.store.postgres import audit as audit_sql
from ccpush.store.postgres import notifications as notices
from ccpush.store.postgres import queries as sql
from ccpush.store.rows import Rows, as_stored, attempt_bucket

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    _Conn: TypeAlias = PoolConnectionProxy[asyncpg.Record]
    _Executor: TypeAlias = asyncpg.Pool[asyncpg.Record] | _Conn
_AppLock = Literal["", "FOR UPDATE", "FOR NO KEY UPDATE", "FOR KEY SHARE"]

_MIGRATION_LOCK = 0x63637075  # "ccpu": one migrator at a time across all processes

ROWS: Final = Rows(as_stored)

LISTEN_CHECK: Final = 30.0
"""Seconds between checks that the listening connection is alive (and its timeout)."""
LISTEN_RETRY: Final = 1.0
"""Seconds before listening again after the connection failed."""
PACED_CHECK: Final = 1.0
"""Seconds a claim trusts the last look at whether any app has a pace."""

log = logging.getLogger(__name__)


def _bucket(row: asyncpg.Record, sending: int) -> Bucket:
    """A row of ``PACED_APPS``, and the app's deliveries being pushed."""
    pace = Pace(row["rate_limit"], row["max_in_flight"])
    return Bucket(row["id"], pace, row["pace_tokens"], row["pace_at"], sending)


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
    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        max_connections: int = 10,
        box: SecretBox | None = None,
    ) -> None:
        self.box = box or fallback_box()
        if schema is not None and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise StoreError(f"invalid schema name {schema!r}")
        self.dsn = dsn
        self.schema = schema
        self.max_connections = max_connections
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        # At most 63 bytes; schemas alike in their first 56 share one (a wake too many).
        self.channel = f"ccpush.{schema or ''}"[:63]
        """Where deliveries due now are notified (``watch_due``): one per schema."""
        self._any_paced_seen = False
        self._paced_checked = -PACED_CHECK

    @classmethod
    def from_url(cls, url: str, *, box: SecretBox | None = None) -> PostgresStore:
        """``postgresql://user@host:port/db``; ``?schema=name`` keeps ccpush in its own schema."""
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        schema = query.pop("schema", None)
        dsn = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(query)))
        return cls(dsn, schema=schema, box=box)

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
                    await conn.execute(sql.CREATE_SCHEMA.format(schema=self.schema))
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
            await conn.execute(sql.LOCK_MIGRATIONS, _MIGRATION_LOCK)
            await conn.execute(sql.CREATE_MIGRATIONS)
            done = {row[0] for row in await conn.fetch(sql.APPLIED_MIGRATIONS)}
            for migration in load_migrations("postgres"):
                if migration.version in done:
                    continue
                try:
                    await conn.execute(migration.sql)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"migration {migration.version} failed: {exc}") from exc
                await conn.execute(sql.RECORD_MIGRATION, migration.version, migration.name)
                applied.append(migration.label)
            await self._reseal(conn, rotate=False)
        return applied

    async def seal_secrets(self, *, rotate: bool = False) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            return await self._reseal(conn, rotate=rotate)

    async def _reseal(self, conn: _Conn, *, rotate: bool) -> int:
        changed = 0
        for row in await conn.fetch(sql.ALL_SECRETS if rotate else sql.PLAIN_SECRETS):
            values = resealed(self.box, tuple(row)[1:], rotate=rotate)
            if values is not None:
                await conn.execute(sql.RESEAL_APP, row["id"], *values)
                changed += 1
        return changed

    # Accounts and keys

    async def create_account(
        self, *, name: str, now: datetime, audit: AuditEntry | None = None
    ) -> Account:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(sql.INSERT_ACCOUNT, new_id("acc"), name, now)
            account = ROWS.account(_found(row))
            await audit_sql.insert_audit(conn, [audit and audited.account_created(audit, account)])
        return account

    async def get_account(self, account_id: str) -> Account:
        row = await self.pool.fetchrow(sql.SELECT_ACCOUNT, account_id)
        if row is None:
            raise AccountNotFound()
        return ROWS.account(row)

    async def list_accounts(self) -> list[Account]:
        return [ROWS.account(row) for row in await self.pool.fetch(sql.LIST_ACCOUNTS)]

    async def create_key(
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
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                sql.INSERT_KEY,
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
            key = ROWS.key(row)
            await audit_sql.insert_audit(conn, [audit and audited.key_created(audit, key)])
        return key

    async def list_keys(self, account_id: str | None) -> list[ApiKey]:
        return [ROWS.key(row) for row in await self.pool.fetch(sql.LIST_KEYS, account_id)]

    async def revoke_key(
        self,
        account_id: str | None,
        key_id: str,
        *,
        now: datetime,
        audit: AuditEntry | None = None,
    ) -> ApiKey:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(sql.REVOKE_KEY, key_id, account_id, now)
            if row is None:
                raise KeyNotFound()
            key = ROWS.key(row)
            await audit_sql.insert_audit(conn, [audit and audited.key_revoked(audit, key)])
        return key

    async def key_by_hash(self, secret_hash: str) -> ApiKey | None:
        row = await self.pool.fetchrow(sql.KEY_BY_HASH, secret_hash)
        return None if row is None else ROWS.key(row)

    # Voice applications

    async def create_app(
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
        settings = self._initial_settings(endpoint, rate_limit, max_in_flight)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                sql.INSERT_APP,
                new_app_id(),
                account_id,
                name,
                push_url,
                now,
                self.box.seal(generate_secret()),
            )
            if row is None:
                raise AccountNotFound()
            if settings:
                columns = "".join(f"{c} = ${n}, " for n, c in enumerate(settings, start=3))
                row = _found(
                    await conn.fetchrow(
                        sql.UPDATE_APP.format(columns=columns), row["id"], now, *settings.values()
                    )
                )
            app = ROWS.app(row)
            await audit_sql.insert_audit(
                conn, [audit and audited.app_created(audit, app, self._described)]
            )
        return app

    async def get_app(self, app_id: str, account_id: str | None = None) -> App:
        return await _fetch_app(self.pool, app_id, account_id)

    async def list_apps(self, account_id: str | None = None) -> list[App]:
        return [ROWS.app(row) for row in await self.pool.fetch(sql.LIST_APPS, account_id)]

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
        columns = ", ".join(f"{column} = ${n}" for n, column in enumerate(changes, start=3))
        async with self.pool.acquire() as conn, conn.transaction():
            before = await _fetch_app(conn, app_id, account_id, lock="FOR UPDATE")
            row = await conn.fetchrow(
                sql.UPDATE_APP.format(columns=f"{columns}, " if columns else ""),
                app_id,
                now,
                *changes.values(),
            )
            after = ROWS.app(_found(row))
            if before.pushing and not after.pushing:
                for lane in sql.HOLD_WAITING:
                    await conn.execute(lane, app_id, now)
            elif after.pushing and not before.pushing:
                await conn.execute(sql.RELEASE_HELD, app_id, now)
                await conn.execute(sql.NOTIFY_DUE, self.channel)
            if audit is not None:
                entries = audited.app_changes(audit, before, after, self._described)
                await audit_sql.insert_audit(conn, entries)
        return after

    async def signing_keys(self, app_id: str, account_id: str | None = None) -> SigningKeys:
        async with self.pool.acquire() as conn:
            await _fetch_app(conn, app_id, account_id)
            row = _found(await conn.fetchrow(sql.SIGNING_KEYS, app_id))
            return self.opened_keys(ROWS.signing_keys(row))

    async def rotate_signing_secret(
        self,
        app_id: str,
        *,
        secret: str,
        now: datetime,
        overlap: timedelta,
        account_id: str | None = None,
        audit: AuditEntry | None = None,
    ) -> SigningKeys:
        async with self.pool.acquire() as conn, conn.transaction():
            app = await _fetch_app(conn, app_id, account_id, lock="FOR UPDATE")
            sealed = self.box.seal(secret)
            row = await conn.fetchrow(sql.ROTATE_KEYS, app_id, sealed, now + overlap, now)
            keys = self.opened_keys(ROWS.signing_keys(_found(row)))
            await audit_sql.insert_audit(conn, [audit and audited.secret_rotated(audit, app)])
            return keys

    async def delete_app(
        self, app_id: str, account_id: str | None = None, *, audit: AuditEntry | None = None
    ) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            app = await _fetch_app(conn, app_id, account_id, lock="FOR UPDATE")
            for statement in sql.DELETE_APP:
                await conn.execute(statement, app_id)
            await audit_sql.insert_audit(conn, [audit and audited.app_deleted(audit, app)])

    # Records

    async def ingest_many(
        self, requests: Sequence[IngestRequest]
    ) -> list[list[IngestResult] | Exception]:
        """One transaction for all, in a few statements whatever their number: the requests
        of one app are planned together, in order, as if made one after the other."""
        outcomes: list[list[IngestResult] | Exception] = [AppNotFound() for _ in requests]
        if not requests:
            return outcomes
        async with self.pool.acquire() as conn, conn.transaction():
            # The app rows' locks serialise ingestion per app: sequence numbers have no holes.
            rows = await conn.fetch(sql.APPS_TO_INGEST, sorted({r.app_id for r in requests}))
            group = _IngestGroup(requests, {row["id"]: row for row in rows})
            latest = await _group_latest(conn, group.records)
            plans = group.plan(latest)
            if any(plan.versions for plan, _ in plans.values()):
                await conn.execute(sql.STORE_INGESTED, *group.arguments(plans, self.channel))
        for app_id, (plan, _) in plans.items():
            results = iter(plan.results)
            for index in group.allowed[app_id]:
                outcomes[index] = [next(results) for _ in requests[index].records]
        return outcomes

    async def list_records(self, app_id: str, query: RecordFilter) -> list[StoredRecord]:
        after_start, after_id = query.after or (None, None)
        rows = await self.pool.fetch(
            sql.LIST_RECORDS, app_id, query.since, query.until, after_start, after_id, query.limit
        )
        return [ROWS.stored(row) for row in rows]

    async def records_by_sequence(
        self, app_id: str, first: int, last: int, limit: int
    ) -> list[StoredRecord]:
        rows = await self.pool.fetch(sql.RECORDS_BY_SEQUENCE, app_id, first, last, limit)
        return [ROWS.stored(row) for row in rows]

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

    async def resend(
        self,
        app_id: str,
        call_session_id: str,
        *,
        now: datetime,
        audit: AuditEntry | None = None,
    ) -> Delivery:
        async with self.pool.acquire() as conn, conn.transaction():
            app = await _fetch_app(conn, app_id, lock="FOR KEY SHARE")
            record_id = await conn.fetchval(sql.FIND_RECORD, app_id, call_session_id)
            if record_id is None:
                raise RecordNotFound()
            [delivery_id] = await _insert_deliveries(conn, app, [record_id], now, self.channel)
            entry = audit and audited.record_resent(audit, app, call_session_id, delivery_id)
            await audit_sql.insert_audit(conn, [entry])
            [delivery] = await _deliveries(conn, app_id, {"d.id = {}": delivery_id})
        return delivery

    async def count_by_state(self, app_id: str | None = None) -> dict[DeliveryState, int]:
        if app_id is None:
            rows = await self.pool.fetch(sql.COUNT_BY_STATE)
        else:
            rows = await self.pool.fetch(sql.APP_COUNT_BY_STATE, app_id)
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
        audit: AuditEntry | None = None,
    ) -> tuple[ReplayJob, bool]:
        kind = ReplayKind(kind)
        async with self.pool.acquire() as conn, conn.transaction():
            app = await _fetch_app(conn, app_id, lock="FOR NO KEY UPDATE")
            latest = await conn.fetchrow(sql.SAME_REPLAY, app_id, kind.value, range_from, range_to)
            if latest is not None:
                job = ROWS.replay(latest)
                if is_same_replay(job, unfinished=latest["unfinished"], now=now):
                    return job, False
            args = _replay_bounds(kind, range_from, range_to)
            total: int = await conn.fetchval(sql.COUNT_REPLAY[kind], app_id, 0, None, *args)
            check_replay_size(total, cap)
            row = await conn.fetchrow(
                sql.INSERT_REPLAY,
                new_id("rpl"),
                app_id,
                kind.value,
                range_from,
                range_to,
                total,
                now,
            )
            job = ROWS.replay(_found(row))
            await audit_sql.insert_audit(
                conn, [audit and audited.replay_requested(audit, app, job)]
            )
        return job, True

    async def get_replay(self, app_id: str, replay_id: str) -> ReplayJob:
        row = await self.pool.fetchrow(sql.SELECT_REPLAY, replay_id, app_id)
        if row is None:
            raise ReplayNotFound()
        return ROWS.replay(row)

    async def replay_progress(self, replay_id: str) -> dict[DeliveryState, int]:
        return counts_by_state(await self.pool.fetch(sql.REPLAY_PROGRESS, replay_id))

    async def claim_replay(
        self, *, now: datetime, lease_until: datetime, owner: str
    ) -> ReplayJob | None:
        row = await self.pool.fetchrow(sql.CLAIM_REPLAY, now, lease_until, owner)
        return None if row is None else ROWS.replay(row)

    async def advance_replay(
        self, replay_id: str, *, owner: str, chunk: int, now: datetime, lease_until: datetime
    ) -> ReplayJob | None:
        async with self.pool.acquire() as conn, conn.transaction():
            app, job = await _lock_replay(conn, replay_id)
            if job["state"] != ReplayState.RUNNING or job["lease_owner"] != owner:
                return None
            kind = ReplayKind(job["kind"])
            args = _replay_bounds(kind, job["range_from"], job["range_to"])
            chosen = await conn.fetch(sql.REPLAY_CHUNK[kind], app.id, job["cursor"], chunk, *args)
            taken = [row[0] for row in chosen]
            await _insert_deliveries(conn, app, taken, now, self.channel, replay_id)
            done = len(taken) < chunk
            row = await conn.fetchrow(
                sql.ADVANCE_REPLAY,
                replay_id,
                taken[-1] if taken else job["cursor"],
                len(taken),
                now,
                (ReplayState.DONE if done else ReplayState.RUNNING).value,
                now if done else None,
                None if done else lease_until,
                None if done else owner,
            )
        return ROWS.replay(_found(row))

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
        claim = (now, limit, lease_until, owner)
        if await self._any_paced():
            rows = await self._claim_paced(claim, skip_apps, app_limits)
        else:
            limits = json.dumps(app_limits or {})
            rows = await self.pool.fetch(sql.CLAIM_DUE, *claim, list(skip_apps), limits, [])
        rows.sort(key=lambda row: row["next_attempt_at"])
        with_endpoint = {row["app_id"] for row in rows if row["has_endpoint"]}
        endpoints = await self._endpoints(with_endpoint) if with_endpoint else {}
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
                or keys.setdefault(row["app_id"], self.box.open_all(_active_keys(row, now))),
                endpoint=endpoints.get(row["app_id"]),
                enqueued_at=row["created_at"],
                rate_limit=row["rate_limit"],
                max_in_flight=row["max_in_flight"],
            )
            for row in rows
        ]

    async def _any_paced(self) -> bool:
        """Whether some app has a pace, as seen at most ``PACED_CHECK`` seconds ago. Until
        a new pace is seen, its app is left out of claims (never claimed beyond it)."""
        if time.monotonic() >= self._paced_checked + PACED_CHECK:
            self._any_paced_seen = bool(await self.pool.fetchval(sql.ANY_PACED))
            self._paced_checked = time.monotonic()
        return self._any_paced_seen

    async def _claim_paced(
        self,
        claim: tuple[datetime, int, datetime, str],
        skip_apps: Sequence[str],
        app_limits: Mapping[str, int] | None,
    ) -> list[asyncpg.Record]:
        """A claim that locks the paced apps with due work, takes no more of each than its
        bucket and its pushes in flight allow, and spends the buckets before it commits."""
        now = claim[0]
        async with self.pool.acquire() as conn, conn.transaction():
            locked = await conn.fetch(sql.PACED_APPS, now)
            counted = [row["id"] for row in locked if row["max_in_flight"] is not None]
            sending: dict[str, int] = {}
            if counted:
                sending.update((r[0], r[1]) for r in await conn.fetch(sql.SENDING_OF_APPS, counted))
            buckets = [_bucket(row, sending.get(row["id"], 0)) for row in locked]
            skip, limits = paced_limits(buckets, now, list(skip_apps), dict(app_limits or {}))
            paced = [bucket.app_id for bucket in buckets]
            rows = await conn.fetch(sql.CLAIM_DUE, *claim, skip, json.dumps(limits), paced)
            spent = spent_buckets(buckets, Counter(row["app_id"] for row in rows), now)
            if spent:
                await conn.execute(
                    sql.SPEND_PACE, *(list(column) for column in zip(*spent, strict=True))
                )
        return rows

    async def _endpoints(self, app_ids: set[str]) -> dict[str, Endpoint | None]:
        """The push settings of these apps, opened."""
        rows = await self.pool.fetch(sql.APP_ENDPOINTS, sorted(app_ids))
        return {row["id"]: self.opened_endpoint(row["endpoint"]) for row in rows}

    async def release(self, delivery_ids: Sequence[int], *, owner: str, now: datetime) -> int:
        if not delivery_ids:
            return 0
        status = await self.pool.execute(
            sql.RELEASE, DeliveryState.PENDING.value, now, list(delivery_ids), owner
        )
        return int(status.split()[-1])

    async def complete(self, completions: Sequence[Completion], *, owner: str) -> None:
        if not completions:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            # Apps first, in id order: the lock order of update_app (app, then deliveries).
            for app_id, streak in sorted(failure_streaks(completions).items()):
                statement = sql.STREAK_RESTART if streak.succeeded else sql.STREAK_CONTINUE
                await conn.execute(statement, app_id, streak.failing_since)
            await conn.execute(
                sql.COMPLETE,
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
        return [ROWS.app(row) for row in await self.pool.fetch(sql.APPS_FAILING, cutoff)]

    async def purge_before(self, cutoff: datetime, *, limit: int) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            ids = [row[0] for row in await conn.fetch(sql.PURGEABLE, cutoff, limit)]
            deliveries = [row[0] for row in await conn.fetch(sql.PURGE_DELIVERIES, ids)]
            await conn.execute(sql.PURGE_ATTEMPTS, deliveries)
            for statement in sql.PURGE:
                await conn.execute(statement, ids)
        return len(ids)

    async def release_expired(self, *, now: datetime) -> int:
        status = await self.pool.execute(sql.RELEASE_EXPIRED, DeliveryState.PENDING.value, now)
        return int(status.split()[-1])

    async def next_due_at(self) -> datetime | None:
        value: datetime | None = await self.pool.fetchval(sql.NEXT_DUE)
        return value

    async def oldest_waiting_at(self, app_id: str) -> datetime | None:
        value: datetime | None = await self.pool.fetchval(sql.OLDEST_WAITING, app_id)
        return value

    async def watch_due(self, wake: Callable[[], None], stop: asyncio.Event) -> None:
        """LISTEN on a connection of its own (not the pool's), made again when it drops.
        ``wake`` is also called on each connection: a notification sent while none was
        listening is lost. Failures are logged, never raised: the poll still finds the work."""
        while not stop.is_set():
            try:
                await self._listen(wake, stop)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("listening for due deliveries failed (%s); trying again", exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), LISTEN_RETRY)

    async def _listen(self, wake: Callable[[], None], stop: asyncio.Event) -> None:
        """Listen until ``stop`` is set or the connection is lost (checked every
        ``LISTEN_CHECK`` seconds, for a connection dropped without a word)."""
        conn = await asyncpg.connect(self.dsn, timeout=LISTEN_CHECK)
        try:
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _: lost.set())
            await conn.add_listener(self.channel, lambda *_: wake())
            wake()
            while not (stop.is_set() or lost.is_set()):
                await _first_of(stop, lost, within=LISTEN_CHECK)
                if not (stop.is_set() or lost.is_set()):
                    await conn.execute("SELECT 1", timeout=LISTEN_CHECK)
        finally:
            await conn.close(timeout=LISTEN_CHECK)

    # The audit log

    async def record_audit(self, entries: Sequence[AuditEntry]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await audit_sql.insert_audit(conn, entries)

    async def list_audit(self, query: AuditFilter) -> list[AuditEntry]:
        return await audit_sql.list_audit(self.pool, query)

    async def purge_audit(self, before: datetime, *, limit: int) -> int:
        return await audit_sql.purge_audit(self.pool, before, limit)

    # Idempotency keys

    async def claim_idempotency_key(
        self, request: IdempotentRequest, *, now: datetime
    ) -> IdempotentRequest | None:
        key = _idempotency_args(request)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(sql.LOCK_IDEMPOTENCY_KEY, *key)
            held = ROWS.idempotent_request(_found(row))
            if held.holder == request.holder:  # made now
                return None
            if not idempotency_key_free(held, now=now):
                return held
            await conn.execute(sql.PUT_IDEMPOTENCY_KEY, *key)
        return None

    async def answer_idempotent_request(
        self, request: IdempotentRequest, *, status: int, answer: bytes
    ) -> None:
        await self.pool.execute(
            sql.ANSWER_IDEMPOTENCY_KEY, request.caller, request.key, request.holder, status, answer
        )

    async def release_idempotency_key(self, request: IdempotentRequest) -> None:
        await self.pool.execute(
            sql.RELEASE_IDEMPOTENCY_KEY, request.caller, request.key, request.holder
        )

    async def purge_idempotency_keys(self, *, now: datetime, limit: int) -> int:
        status = await self.pool.execute(sql.PURGE_IDEMPOTENCY_KEYS, now, limit)
        return int(status.split()[-1])

    # Statistics

    async def attempt_stats(
        self, app_id: str, *, since: datetime, bucket: timedelta
    ) -> list[AttemptBucket]:
        rows = await self.pool.fetch(sql.ATTEMPT_STATS, app_id, since, bucket.total_seconds())
        return [attempt_bucket(row, since, bucket) for row in rows]

    async def app_activity(
        self, *, since: datetime, account_id: str | None = None
    ) -> dict[str, AppActivity]:
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            outcomes = await conn.fetch(sql.ACTIVITY_OUTCOMES, account_id, since)
            waiting = await conn.fetch(sql.ACTIVITY_WAITING, account_id)
        return ROWS.app_activity(outcomes, waiting)

    # Console sessions

    async def end_console_session(self, session_id: str, *, now: datetime) -> None:
        await self.pool.execute(sql.END_CONSOLE_SESSION, session_id, now)

    async def console_session_ended(self, session_id: str) -> bool:
        return await self.pool.fetchval(sql.CONSOLE_SESSION_ENDED, session_id) is not None

    async def purge_console_sessions(self, *, ended_before: datetime) -> int:
        status = await self.pool.execute(sql.PURGE_CONSOLE_SESSIONS, ended_before)
        return int(status.split()[-1])

    # Portal links

    async def create_portal_link(
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
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                sql.INSERT_PORTAL_LINK,
                new_id("portal"), account_id, app_id, token_hash, read_only, now, expires_at,
            )  # fmt: skip
            if row is None:
                await self.get_account(account_id)  # AccountNotFound, or else the app is missing
                raise AppNotFound()
            link = ROWS.portal_link(row)
            await audit_sql.insert_audit(conn, [audit and audited.portal_link_issued(audit, link)])
        return link

    async def use_portal_link(
        self, token_hash: str, *, now: datetime, audit: AuditEntry | None = None
    ) -> PortalLink | None:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(sql.USE_PORTAL_LINK, token_hash, now)
            if row is None:
                return None
            link = ROWS.portal_link(row)
            await audit_sql.insert_audit(conn, [audit and audited.portal_link_used(audit, link)])
        return link

    async def purge_portal_links(self, *, expired_before: datetime) -> int:
        status = await self.pool.execute(sql.PURGE_PORTAL_LINKS, expired_before)
        return int(status.split()[-1])

    # Operational notifications

    async def notification_target(self, account_id: str) -> NotificationTarget | None:
        return await notices.target(self.pool, self.box, account_id)

    async def put_notification_target(
        self, account_id: str, *, url: str | None, email: str | None, secret: str, now: datetime
    ) -> NotificationTarget:
        values = NotificationTarget(
            account_id=account_id, url=url, email=email, secret=secret, updated_at=now
        )
        await notices.put_target(self.pool, self.box, account_id, values)
        return values

    async def watch_apps(self) -> list[AppWatch]:
        async with self.pool.acquire() as conn:
            return await notices.watch_apps(conn)

    async def last_notice_at(self, app_id: str, type: EventType) -> datetime | None:
        return await notices.last_notice_at(self.pool, app_id, type)

    async def record_notice(
        self,
        notice: Notice,
        destinations: Sequence[Destination],
        *,
        change: MarkChange | None = None,
    ) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            return await notices.record_notice(conn, notice, destinations, change)

    async def claim_notice_deliveries(
        self, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[NoticeDelivery]:
        return await notices.claim(self.pool, now, lease_until, limit)

    async def finish_notice_delivery(
        self,
        delivery_id: int,
        *,
        error: str | None,
        next_attempt_at: datetime | None,
        now: datetime,
    ) -> None:
        await notices.finish(self.pool, delivery_id, error, next_attempt_at, now)

    async def purge_notices(self, *, created_before: datetime, limit: int) -> int:
        status = await self.pool.execute(notices.PURGE, created_before, limit)
        return int(status.split()[-1])

    async def list_notice_deliveries(
        self,
        account_id: str | None,
        *,
        platform: bool,
        limit: int,
        before_id: int | None = None,
    ) -> list[NoticeDelivery]:
        return await notices.list_deliveries(self.pool, account_id, platform, limit, before_id)


# Statements shared by several methods


async def _first_of(*events: asyncio.Event, within: float) -> None:
    """Return when one of ``events`` is set, or after ``within`` seconds."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


class _IngestGroup:
    """The requests of a group commit, by app: those whose app exists (in the caller's
    account, if one is given), each app's records in order, and when each was received."""

    def __init__(self, requests: Sequence[IngestRequest], apps: Mapping[str, asyncpg.Record]):
        self.apps = {app_id: ROWS.app(row) for app_id, row in apps.items()}
        self.last_sequences: dict[str, int] = {
            app_id: row["last_seq"] for app_id, row in apps.items()
        }
        self.allowed: dict[str, list[int]] = {}
        self.records: dict[str, list[NewRecord]] = {}
        self.received: dict[int, datetime] = {}
        for index, request in enumerate(requests):
            app = self.apps.get(request.app_id)
            if app is None or request.account_id not in (None, app.account_id):
                continue
            self.allowed.setdefault(app.id, []).append(index)
            self.records.setdefault(app.id, []).extend(request.records)
            self.received.update((id(record), request.now) for record in request.records)

    def plan(self, latest: Mapping[str, dict[str, Latest]]) -> dict[str, tuple[IngestPlan, App]]:
        return {
            app_id: (
                plan_ingest(records, latest.get(app_id, {}), self.last_sequences[app_id]),
                self.apps[app_id],
            )
            for app_id, records in self.records.items()
        }

    def arguments(
        self, plans: Mapping[str, tuple[IngestPlan, App]], channel: str
    ) -> tuple[object, ...]:
        """The arguments of ``STORE_INGESTED``."""
        versions = [(app, item) for plan, app in plans.values() for item in plan.versions]
        final = {(app.id, item.record.call_session_id): item for app, item in versions}
        new = [(app_id, item) for (app_id, _), item in final.items() if item.record_id is None]
        changed = [item for item in final.values() if item.record_id is not None]
        states = {app.id: new_delivery_state(app) for _, app in plans.values()}
        due = DeliveryState.PENDING in {states[app.id] for app, _ in versions}
        return (
            [app_id for app_id, _ in new],
            [item.record.call_session_id for _, item in new],
            [item.record.call_start for _, item in new],
            [self.received[id(item.record)] for _, item in new],
            [item.version for _, item in new],
            [item.record_id for item in changed],
            [item.version for item in changed],
            [item.record.call_start for item in changed],
            [app.id for app, _ in versions],
            [item.record_id for _, item in versions],
            [item.record.call_session_id for _, item in versions],
            [item.version for _, item in versions],
            [item.sequence for _, item in versions],
            [item.record.body for _, item in versions],
            [self.received[id(item.record)] for _, item in versions],
            [states[app.id].value for app, _ in versions],
            list(plans),
            [plan.last_sequence for plan, _ in plans.values()],
            channel if due else None,
        )


async def _group_latest(
    conn: _Conn, records: Mapping[str, Sequence[NewRecord]]
) -> dict[str, dict[str, Latest]]:
    """What the store has of the records of a group, by app and session id."""
    pairs = {(app_id, record.call_session_id) for app_id, rs in records.items() for record in rs}
    rows = await conn.fetch(
        sql.LATEST_VERSIONS, [app for app, _ in pairs], [sid for _, sid in pairs]
    )
    latest: dict[str, dict[str, Latest]] = {}
    for row in rows:
        latest.setdefault(row[0], {})[row[1]] = Latest(row[2], row[3], row[4])
    return latest


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
    row = await conn.fetchrow(sql.SELECT_APP + lock, app_id, account_id)
    if row is None:
        raise AppNotFound()
    return ROWS.app(row)


async def _insert_deliveries(
    conn: _Conn,
    app: App,
    record_ids: Sequence[int],
    now: datetime,
    channel: str,
    replay_id: str | None = None,
) -> list[int]:
    """A delivery of each record due now (notified on ``channel``), held if the app is not
    pushing; their ids."""
    if not record_ids:
        return []
    state = new_delivery_state(app)
    rows = await conn.fetch(sql.INSERT_DELIVERIES, record_ids, app.id, state.value, now, replay_id)
    if state is DeliveryState.PENDING:
        await conn.execute(sql.NOTIFY_DUE, channel)
    return [row[0] for row in rows]


async def _deliveries(
    conn: _Conn, app_id: str, filters: Mapping[str, object], limit: int | None = None
) -> list[Delivery]:
    """The app's deliveries, newest first, with their attempts.

    ``filters``: a condition for each value (``{}`` where the value goes), the ``None``
    ones skipped."""
    given = [(condition, value) for condition, value in filters.items() if value is not None]
    statement = sql.LIST_DELIVERIES.format(
        filters="".join(
            f" AND {condition.format(f'${number}')}"
            for number, (condition, _) in enumerate(given, start=3)
        )
    )
    rows = await conn.fetch(statement, app_id, limit, *(value for _, value in given))
    attempts = await _attempts(conn, [row["id"] for row in rows])
    return [ROWS.delivery(row, attempts.get(row["id"], ())) for row in rows]


async def _attempts(conn: _Conn, delivery_ids: list[int]) -> dict[int, tuple[Attempt, ...]]:
    """The attempts of these deliveries, by delivery, in order (one query for all)."""
    if not delivery_ids:
        return {}
    return ROWS.attempts_by_delivery(await conn.fetch(sql.ATTEMPTS_OF, delivery_ids))


def _idempotency_args(request: IdempotentRequest) -> tuple[object, ...]:
    """The arguments of ``LOCK_IDEMPOTENCY_KEY`` and ``PUT_IDEMPOTENCY_KEY``."""
    return (
        request.caller,
        request.key,
        request.fingerprint,
        request.holder,
        request.held_until,
        request.expires_at,
    )


def _replay_bounds(
    kind: ReplayKind, range_from: datetime | None, range_to: datetime | None
) -> tuple[datetime | None, ...]:
    """The arguments after $1, $2 and $3 of ``REPLAY_CHUNK[kind]`` (and ``COUNT_REPLAY``)."""
    if kind is ReplayKind.RANGE:
        return range_from, range_to
    return (range_from,)


async def _lock_replay(conn: _Conn, replay_id: str) -> tuple[App, asyncpg.Record]:
    """The replay's app (``FOR KEY SHARE``) then the replay (``FOR UPDATE``), in the order
    ``delete_app`` locks them; ``ReplayNotFound`` if either is gone."""
    app_id = await conn.fetchval(sql.REPLAY_APP, replay_id)
    if app_id is None:
        raise ReplayNotFound()
    try:
        app = await _fetch_app(conn, app_id, lock="FOR KEY SHARE")
    except AppNotFound:
        raise ReplayNotFound() from None
    job = await conn.fetchrow(sql.LOCK_REPLAY, replay_id)
    if job is None:
        raise ReplayNotFound()
    return app, job


def _found(row: asyncpg.Record | None) -> asyncpg.Record:
    """The row a statement that always returns one returned."""
    if row is None:
        raise StoreError("the database returned no row")
    return row


def _active_keys(row: asyncpg.Record, now: datetime) -> tuple[str, ...]:
    """The secrets a push of a claimed row (of ``CLAIM_DUE``), made at ``now``, is signed with."""
    return ROWS.signing_keys(row).active(now) if row["signing"] else ()
