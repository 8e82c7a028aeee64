"""The store interface: one contract (``Store``), one package per backend (sqlite, postgres).

Here too what the interface speaks of (filters, ingestion requests), and ``translating``,
the one place a backend's driver errors become the store's. The rules every backend
follows are in ``ccpush.store.planning``; the row mappers they share in ``ccpush.store.rows``.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, ParamSpec, TypeVar

from ccpush.audit import AuditEntry, AuditFilter
from ccpush.endpoint import Described, Endpoint, endpoint_from_json
from ccpush.errors import StoreError, StoreRefusedValue
from ccpush.models import (
    Account,
    ApiKey,
    App,
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
from ccpush.secret_box import SecretBox


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


DEFAULT_ACCOUNT: Final = "acc_default"
"""Apps created by the operator without naming an account belong to this one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryFilter:
    """Which deliveries of an app to list, newest first."""

    states: frozenset[DeliveryState] = frozenset()
    """Empty: every state."""
    since: datetime | None = None
    until: datetime | None = None
    call_session_id: str | None = None
    before_id: int | None = None
    """Cursor: only deliveries older than this one."""
    limit: int = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordFilter:
    """Which records of an app to list, by call start time then id."""

    since: datetime | None = None
    until: datetime | None = None
    after: tuple[datetime, int] | None = None
    """Cursor: only versions after this (call start, version id)."""
    limit: int = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestRequest:
    """One ingestion request, for ``Store.ingest_many``."""

    app_id: str
    records: Sequence[NewRecord]
    now: datetime
    account_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AppActivity:
    """An app's pushes since a time, and its deliveries waiting now (``Store.app_activity``)."""

    app_id: str
    delivered: int = 0
    """Deliveries delivered since then: attempts answered 2xx."""
    failed: int = 0
    """Deliveries failed since then: their last attempt failed."""
    retried: int = 0
    """Failed attempts since then after which the delivery was (or is to be) tried again."""
    held: int = 0
    pending: int = 0
    sending: int = 0
    oldest_due: datetime | None = None
    """When the earliest pending delivery was (or is) due."""
    oldest_waiting: datetime | None = None
    """When the oldest delivery waiting (held, pending or sending) was made: its record
    ingested, resent or replayed."""

    @property
    def attempts(self) -> int:
        return self.delivered + self.failed + self.retried

    @property
    def failed_attempts(self) -> int:
        return self.failed + self.retried

    @property
    def waiting(self) -> int:
        return self.held + self.pending + self.sending

    def lag(self, now: datetime) -> timedelta:
        """How long its earliest due delivery has waited for a worker (zero if none is due)."""
        if self.oldest_due is None or self.oldest_due >= now:
            return timedelta(0)
        return now - self.oldest_due

    def waited(self, now: datetime) -> timedelta:
        """How long its oldest waiting delivery has waited to be delivered (zero if none
        waits): its retries' wait included, unlike ``lag``."""
        if self.oldest_waiting is None or self.oldest_waiting >= now:
            return timedelta(0)
        return now - self.oldest_waiting


@dataclass(frozen=True, slots=True, kw_only=True)
class IdempotentRequest:
    """A request sent with an ``Idempotency-Key``: who sent it with which key and content,
    how long it may hold the key, and its answer once it has one."""

    caller: str
    """Whose key it is: an API key's id, or ``admin``."""
    key: str
    fingerprint: str
    """What the request asked (its method, path and body), hashed."""
    holder: str
    """A random id of the request holding the key: only it may answer or let go."""
    held_until: datetime
    """Until then no other request may take the key while this one has no answer."""
    expires_at: datetime
    """From then the key is free again, answered or not."""
    status: int | None = None
    """None: no answer yet (the request still runs)."""
    answer: bytes | None = None
    """The answer's body, sealed for the caller."""


P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S", bound="type[Store]")


def translating(
    *failures: type[Exception], refusals: tuple[type[Exception], ...] = ()
) -> Callable[[S], S]:
    """Class decorator of a backend: its public coroutine methods raise ``StoreError`` for
    its driver's ``failures`` (database down, connection lost, disk full...) and
    ``StoreRefusedValue`` for its ``refusals`` (a value the database cannot hold: bad
    input, which no retry mends). The one place driver errors are translated: callers
    (API, dispatcher) know only these two."""

    def decorate(cls: S) -> S:
        for name, member in list(vars(cls).items()):
            if not name.startswith("_") and inspect.iscoroutinefunction(member):
                setattr(cls, name, _translated(member, failures, refusals + _REFUSALS))
        return cls

    return decorate


_REFUSALS: Final = (OverflowError,)
"""Refused by every driver: a Python integer too large for the column's type."""


def _translated(
    method: Callable[P, Awaitable[R]],
    failures: tuple[type[Exception], ...],
    refusals: tuple[type[Exception], ...],
) -> Callable[P, Awaitable[R]]:
    @functools.wraps(method)
    async def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except refusals as exc:
            raise StoreRefusedValue(f"{type(exc).__name__}: {exc}") from exc
        except failures as exc:
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc

    return translated


class Store(abc.ABC):
    """Durable state of ccpush: accounts, keys, apps, records, deliveries and attempts.

    Every method is one transaction. Times come from the caller's clock, so a test that
    moves a ``ManualClock`` moves the store's idea of "now" too. Methods that take an
    ``account_id`` scope their lookup to that account (``None``: the operator, every
    account), and answer ``NotFound`` for another account's objects.
    """

    @abc.abstractmethod
    async def open(self, *, migrate: bool = True) -> None:
        """Connect, and (unless told not to) bring the schema up to date."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def migrate(self) -> list[str]:
        """Apply the migrations not yet applied; the names of those applied. Then seal
        every secret still kept in plain text (``seal_secrets``)."""

    # Secrets at rest: the store seals them with ``box`` (``ccpush.secret_box``)

    box: SecretBox

    @abc.abstractmethod
    async def seal_secrets(self, *, rotate: bool = False) -> int:
        """Seal the apps' secrets kept in plain text; with ``rotate``, seal every sealed one
        again with the box's first key too. How many apps changed."""

    def _described(self, app: App) -> Described:
        """The app's push settings as the audit log keeps them: names and kinds."""
        return self.endpoint_of(app).described()

    def endpoint_of(self, app: App) -> Endpoint:
        """The app's push headers, credentials and client certificate, opened."""
        return self.opened_endpoint(app.endpoint) or Endpoint()

    def opened_endpoint(self, sealed: str | None) -> Endpoint | None:
        return endpoint_from_json(self.box.open(sealed)) if sealed else None

    def sealed_endpoint(self, endpoint: Endpoint | None) -> str | None:
        """What the store keeps of ``endpoint``: sealed JSON, or NULL when it has nothing."""
        return None if endpoint is None or endpoint.empty else self.box.seal(endpoint.to_json())

    def _initial_settings(
        self, endpoint: Endpoint | None, rate_limit: float | None, max_in_flight: int | None
    ) -> dict[str, Any]:
        """The columns a new app's push settings set: those it has."""
        settings = {
            "endpoint": self.sealed_endpoint(endpoint),
            "rate_limit": rate_limit,
            "max_in_flight": max_in_flight,
        }
        return {column: value for column, value in settings.items() if value is not None}

    def opened_keys(self, keys: SigningKeys) -> SigningKeys:
        """``keys`` as read from the store, opened."""
        opened = self.box.open
        return SigningKeys(
            current=opened(keys.current) if keys.current else None,
            previous=opened(keys.previous) if keys.previous else None,
            previous_until=keys.previous_until,
        )

    # Accounts and keys

    @abc.abstractmethod
    async def create_account(
        self, *, name: str, now: datetime, audit: AuditEntry | None = None
    ) -> Account: ...

    @abc.abstractmethod
    async def get_account(self, account_id: str) -> Account:
        """The account; ``AccountNotFound`` if there is none."""

    @abc.abstractmethod
    async def list_accounts(self) -> list[Account]: ...

    @abc.abstractmethod
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
        """Keep a new key (only the hash of its secret). ``account_id=None``: a platform key."""

    @abc.abstractmethod
    async def list_keys(self, account_id: str | None) -> list[ApiKey]:
        """The keys of an account (``None``: the platform keys), revoked ones included."""

    @abc.abstractmethod
    async def revoke_key(
        self,
        account_id: str | None,
        key_id: str,
        *,
        now: datetime,
        audit: AuditEntry | None = None,
    ) -> ApiKey:
        """Revoke a key of that account (``None``: a platform key); ``KeyNotFound`` else."""

    @abc.abstractmethod
    async def key_by_hash(self, secret_hash: str) -> ApiKey | None:
        """The unrevoked key with this secret hash, if any."""

    # Voice applications

    @abc.abstractmethod
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
        """Make an app with its push settings, all in one transaction."""

    @abc.abstractmethod
    async def get_app(self, app_id: str, account_id: str | None = None) -> App:
        """The app; ``AppNotFound`` if there is none (in that account)."""

    @abc.abstractmethod
    async def list_apps(self, account_id: str | None = None) -> list[App]: ...

    @abc.abstractmethod
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
        rate_limit: float | _Unset | None = UNSET,
        max_in_flight: int | _Unset | None = UNSET,
        endpoint: Endpoint | _Unset | None = UNSET,
    ) -> App:
        """Change an app. When it stops pushing (address cleared, paused) its waiting
        deliveries are held; when it starts again they are released, due now. Pending
        retries go to whatever address is current when they are due. ``paused_reason`` is
        kept while paused (resuming clears it); a changed address or a resume forgets
        the failing streak. ``rate_limit`` and ``max_in_flight`` set its pace
        (``ccpush.app_pace``; None: no limit), kept by every claim. ``endpoint``: its push
        headers, credentials and client certificate, kept sealed (None clears them)."""

    @abc.abstractmethod
    async def signing_keys(self, app_id: str, account_id: str | None = None) -> SigningKeys:
        """The app's signing secrets (made with the app), opened."""

    @abc.abstractmethod
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
        """Make ``secret`` the current one; the old one keeps signing until ``now + overlap``."""

    @abc.abstractmethod
    async def delete_app(
        self, app_id: str, account_id: str | None = None, *, audit: AuditEntry | None = None
    ) -> None:
        """Delete an app with its records, deliveries, attempts and replays."""

    # Records

    async def ingest(
        self,
        app_id: str,
        records: Sequence[NewRecord],
        *,
        now: datetime,
        account_id: str | None = None,
    ) -> list[IngestResult]:
        """Store records and their deliveries in one transaction (all or nothing).

        Each record is planned by ``plan_ingest``: a new record, a new version of one the
        app has (content changed: pushed again), or a duplicate (neither stored nor pushed)."""
        request = IngestRequest(app_id=app_id, records=records, now=now, account_id=account_id)
        [outcome] = await self.ingest_many([request])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    @abc.abstractmethod
    async def ingest_many(
        self, requests: Sequence[IngestRequest]
    ) -> list[list[IngestResult] | Exception]:
        """Several ingestion requests, each all or nothing, committed together (group
        commit): for each, its results or the error that refused it (``AppNotFound``).
        An error of the store itself is raised for all."""

    @abc.abstractmethod
    async def list_records(self, app_id: str, query: RecordFilter) -> list[StoredRecord]:
        """Record versions of an app by call start time (the reconciliation query)."""

    @abc.abstractmethod
    async def records_by_sequence(
        self, app_id: str, first: int, last: int, limit: int
    ) -> list[StoredRecord]:
        """Record versions of an app with sequence numbers from ``first`` to ``last``."""

    @abc.abstractmethod
    async def deliveries_of(self, app_id: str, call_session_id: str) -> list[Delivery]:
        """The deliveries of one record, newest first, each with its attempts."""

    @abc.abstractmethod
    async def list_deliveries(self, app_id: str, query: DeliveryFilter) -> list[Delivery]:
        """Deliveries of an app, newest first, each with its attempts."""

    @abc.abstractmethod
    async def resend(
        self,
        app_id: str,
        call_session_id: str,
        *,
        now: datetime,
        audit: AuditEntry | None = None,
    ) -> Delivery:
        """A new delivery of a record's latest version, due now (held if the app is not
        pushing)."""

    @abc.abstractmethod
    async def count_by_state(self, app_id: str | None = None) -> dict[DeliveryState, int]: ...

    # Replays

    @abc.abstractmethod
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
        """Queue a replay; ``(job, created)``. The app's latest identical replay is returned
        instead of a new one (``created=False``) while ``is_same_replay`` says it is the
        same request. ``ReplayTooLarge`` if it would cover more than ``cap`` records."""

    @abc.abstractmethod
    async def get_replay(self, app_id: str, replay_id: str) -> ReplayJob:
        """The replay; ``ReplayNotFound`` if the app has none with this id."""

    @abc.abstractmethod
    async def replay_progress(self, replay_id: str) -> dict[DeliveryState, int]:
        """The states of the deliveries a replay has created so far."""

    @abc.abstractmethod
    async def claim_replay(
        self, *, now: datetime, lease_until: datetime, owner: str
    ) -> ReplayJob | None:
        """Lease one unfinished replay (queued, or running with an expired lease)."""

    @abc.abstractmethod
    async def advance_replay(
        self, replay_id: str, *, owner: str, chunk: int, now: datetime, lease_until: datetime
    ) -> ReplayJob | None:
        """Create deliveries for the replay's next ``chunk`` records and renew the lease,
        in one transaction; the job is done when none are left. None: ``owner`` no longer
        holds the replay (its lease ran out and another runner took it over).
        ``ReplayNotFound`` if the replay (or its app) was deleted."""

    # Dispatching

    @abc.abstractmethod
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
        """Lease up to ``limit`` pending deliveries due at ``now``, fairly between apps.

        Each app with due work gets a share of ``limit`` (its oldest due first), taken in
        turns: an app's first, every app's second... First attempts and retries are two
        lanes with their own turns, first attempts taking three places in four while both
        wait, so a wave of retries cannot starve new records. Apps in ``skip_apps`` (those
        the worker already holds enough of) get none, and an app in ``app_limits`` at most
        that many."""

    @abc.abstractmethod
    async def release(self, delivery_ids: Sequence[int], *, owner: str, now: datetime) -> int:
        """Give back deliveries ``owner`` claimed but did not push: pending again (held if
        the app stopped pushing), due when they were; the number given back."""

    @abc.abstractmethod
    async def complete(self, completions: Sequence[Completion], *, owner: str) -> None:
        """Record attempts and move their deliveries on, in one transaction.

        The attempt is always kept; the delivery moves only if ``owner`` still holds it."""

    @abc.abstractmethod
    async def release_expired(self, *, now: datetime) -> int:
        """Return deliveries whose lease ran out (their worker died) to pending."""

    @abc.abstractmethod
    async def next_due_at(self) -> datetime | None:
        """When the earliest pending delivery is due, if any."""

    @abc.abstractmethod
    async def oldest_waiting_at(self, app_id: str) -> datetime | None:
        """When the app's oldest delivery not yet finished (held, pending or sending) was
        made (its record ingested, resent or replayed); None if none waits."""

    async def watch_due(self, wake: Callable[[], None], stop: asyncio.Event) -> None:
        """Call ``wake`` whenever another process makes deliveries due (records ingested,
        an app resumed, a resend or a replay), until ``stop`` is set. A store only one
        process uses (SQLite) has nothing to watch: that process wakes its own dispatcher."""
        await stop.wait()

    # Upkeep

    @abc.abstractmethod
    async def apps_failing_since(self, cutoff: datetime) -> list[App]:
        """Apps pushing now whose every push has failed since ``cutoff`` or earlier."""

    @abc.abstractmethod
    async def purge_before(self, cutoff: datetime, *, limit: int) -> int:
        """Delete up to ``limit`` records received before ``cutoff`` that wait for no push,
        with their versions, deliveries and attempts; how many were deleted."""

    # The audit log

    @abc.abstractmethod
    async def record_audit(self, entries: Sequence[AuditEntry]) -> None:
        """Keep entries that go with no change (a sign-in), in one transaction. A change's
        entry is kept by the method that makes it (``audit=``), in the change's transaction:
        the entry's who, the what filled in by ``ccpush.audit``'s rules."""

    @abc.abstractmethod
    async def list_audit(self, query: AuditFilter) -> list[AuditEntry]:
        """Entries, newest first."""

    @abc.abstractmethod
    async def purge_audit(self, before: datetime, *, limit: int) -> int:
        """Delete up to ``limit`` entries made before ``before``; how many."""

    # Idempotency keys

    @abc.abstractmethod
    async def claim_idempotency_key(
        self, request: IdempotentRequest, *, now: datetime
    ) -> IdempotentRequest | None:
        """Hold ``request.key`` of ``request.caller`` for ``request``, about to run: None
        when it now holds it (the key was unknown, or ``idempotency_key_free`` at ``now``);
        else the request that holds the key or answered it."""

    @abc.abstractmethod
    async def answer_idempotent_request(
        self, request: IdempotentRequest, *, status: int, answer: bytes
    ) -> None:
        """Keep the answer of ``request``, if it still holds its key."""

    @abc.abstractmethod
    async def release_idempotency_key(self, request: IdempotentRequest) -> None:
        """Free the key ``request`` holds without an answer (it failed: it changed nothing)."""

    @abc.abstractmethod
    async def purge_idempotency_keys(self, *, now: datetime, limit: int) -> int:
        """Delete up to ``limit`` keys expired at ``now``; how many were deleted."""

    # Statistics

    @abc.abstractmethod
    async def attempt_stats(
        self, app_id: str, *, since: datetime, bucket: timedelta
    ) -> list[AttemptBucket]:
        """The app's push attempts started at or after ``since``, counted by outcome in
        periods of ``bucket`` from ``since``; oldest first, periods without attempts left out."""

    @abc.abstractmethod
    async def app_activity(
        self, *, since: datetime, account_id: str | None = None
    ) -> dict[str, AppActivity]:
        """By app of the account (``None``: of every account): what came of its attempts
        started at or after ``since``, and its deliveries waiting now. Apps with neither
        are left out."""

    # Console sessions

    @abc.abstractmethod
    async def end_console_session(self, session_id: str, *, now: datetime) -> None:
        """Keep that the console session ``session_id`` was signed out at ``now``."""

    @abc.abstractmethod
    async def console_session_ended(self, session_id: str) -> bool:
        """Whether the console session ``session_id`` was signed out."""

    @abc.abstractmethod
    async def purge_console_sessions(self, *, ended_before: datetime) -> int:
        """Forget the console sessions signed out before ``ended_before``; how many."""

    # Portal links

    @abc.abstractmethod
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
        """Keep a link into the console for the account (or its app ``app_id``), its token
        only as ``token_hash``; ``AccountNotFound``, or ``AppNotFound`` if the account has
        no such app."""

    @abc.abstractmethod
    async def use_portal_link(
        self, token_hash: str, *, now: datetime, audit: AuditEntry | None = None
    ) -> PortalLink | None:
        """The link of ``token_hash``, marked used at ``now``, if it was unused and had not
        expired; None else. Of two uses at once, only one gets it. ``audit``: who opened
        it (the link is the actor)."""

    @abc.abstractmethod
    async def purge_portal_links(self, *, expired_before: datetime) -> int:
        """Delete the links that expired before ``expired_before``; how many."""

    # Operational notifications (``ccpush.notifications``)

    @abc.abstractmethod
    async def notification_target(self, account_id: str) -> NotificationTarget | None:
        """Where the account's notifications go, if it said."""

    @abc.abstractmethod
    async def put_notification_target(
        self, account_id: str, *, url: str | None, email: str | None, secret: str, now: datetime
    ) -> NotificationTarget:
        """Set where the account's notifications go, and their signing secret (kept
        sealed); ``AccountNotFound`` if there is no such account."""

    @abc.abstractmethod
    async def watch_apps(self) -> list[AppWatch]:
        """The apps failing, paused by ccpush, or told so and not yet recovered."""

    @abc.abstractmethod
    async def last_notice_at(self, app_id: str, type: EventType) -> datetime | None:
        """When the latest event of ``type`` was made for the app."""

    @abc.abstractmethod
    async def record_notice(
        self,
        notice: Notice,
        destinations: Sequence[Destination],
        *,
        change: MarkChange | None = None,
    ) -> bool:
        """Keep an event with a delivery due now per destination and, given ``change``,
        its app's new mark, in one transaction; False (nothing kept) if the app's mark is
        no longer ``change.before`` or the app is gone."""

    @abc.abstractmethod
    async def claim_notice_deliveries(
        self, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[NoticeDelivery]:
        """Take up to ``limit`` deliveries due at ``now`` (pending, or claimed by a sender
        whose claim ran out) until ``lease_until``, with their notification's body."""

    @abc.abstractmethod
    async def finish_notice_delivery(
        self,
        delivery_id: int,
        *,
        error: str | None,
        next_attempt_at: datetime | None,
        now: datetime,
    ) -> None:
        """Count an attempt: delivered (no ``error``), due again at ``next_attempt_at``,
        or failed (neither)."""

    @abc.abstractmethod
    async def purge_notices(self, *, created_before: datetime, limit: int) -> int:
        """Delete up to ``limit`` events made before ``created_before`` that wait for no
        delivery, with their deliveries; how many."""

    @abc.abstractmethod
    async def list_notice_deliveries(
        self,
        account_id: str | None,
        *,
        platform: bool,
        limit: int,
        before_id: int | None = None,
    ) -> list[NoticeDelivery]:
        """The deliveries of the account's notifications (``None``: every account's),
        newest first, older than ``before_id`` if given; the operator's platform-wide ones
        too if ``platform``."""


def resealed(
    box: SecretBox, values: Sequence[str | None], *, rotate: bool
) -> list[str | None] | None:
    """``values`` (an app's secrets as kept) with the plain ones sealed and, with ``rotate``,
    the sealed ones sealed again with the first key; None if nothing changes."""
    changed = False
    out: list[str | None] = []
    for value in values:
        if value is not None and not box.is_sealed(value):
            value, changed = box.seal(value), True
        elif value is not None and rotate:
            value, changed = box.reseal(value), True
        out.append(value)
    return out if changed else None
