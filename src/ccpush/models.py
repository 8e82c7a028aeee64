"""The objects the store keeps: voice applications, deliveries and their attempts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Final, NamedTuple

if TYPE_CHECKING:
    from ccpush.endpoint import Endpoint


class DeliveryState(StrEnum):
    """Where a record's delivery to its app's push address stands."""

    HELD = "held"
    """Stored, not pushed: the app has no push address or is paused. Released on resume."""
    PENDING = "pending"
    """Due at ``next_attempt_at``."""
    SENDING = "sending"
    """Claimed by a worker under a lease; back to pending if the lease expires."""
    DELIVERED = "delivered"
    """The receiver answered 2xx."""
    FAILED = "failed"
    """Every attempt of the schedule failed. Kept, never deleted by the dispatcher."""


WAITING: Final = frozenset({DeliveryState.HELD, DeliveryState.PENDING, DeliveryState.SENDING})
FINISHED: Final = frozenset({DeliveryState.DELIVERED, DeliveryState.FAILED})


class ErrorKind(StrEnum):
    """Why an attempt failed, when it did."""

    HTTP_STATUS = "http_status"
    """The receiver answered with a status other than 2xx (redirects included)."""
    TIMEOUT = "timeout"
    CONNECT = "connect"
    """The connection was refused, reset or the host could not be resolved."""
    TLS = "tls"
    PROTOCOL = "protocol"
    """The receiver's answer was not valid HTTP."""
    INVALID_URL = "invalid_url"
    BLOCKED = "blocked"
    """The push address resolves to an address pushes may not reach (loopback, private...)."""
    INTERRUPTED = "interrupted"
    """The process making the push stopped during it: the receiver may have had it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class App:
    id: str
    account_id: str
    name: str
    push_url: str | None
    paused: bool
    signing: bool
    """Whether pushes carry a ``webhook-signature`` (on unless turned off for the app)."""
    created_at: datetime
    updated_at: datetime
    failing_since: datetime | None = None
    """When the pushes to its address started failing without a success since."""
    paused_reason: str | None = None
    """Why pushing is paused, when ccpush paused it (an address failing for days)."""
    endpoint: str | None = field(default=None, repr=False)
    """Its ``ccpush.endpoint.Endpoint`` as sealed JSON (``Store.endpoint_of`` opens it)."""
    rate_limit: float | None = None
    """Pushes per second at most, set by the customer (``ccpush.app_pace``); None: no limit."""
    max_in_flight: int | None = None
    """Pushes at once at most, set by the customer; None: no limit."""

    @property
    def pushing(self) -> bool:
        """Whether its records go out now (an address is set and pushing is not paused)."""
        return self.push_url is not None and not self.paused


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRecord:
    """A validated record ready to store: its identity, push body and call start time."""

    call_session_id: str
    body: bytes
    call_start: datetime


class IngestStatus(StrEnum):
    ACCEPTED = "accepted"
    """A record the app did not have: version 1."""
    UPDATED = "updated"
    """A record the app had, with other content: a new version, pushed again."""
    DUPLICATE = "duplicate"
    """Exactly the content the app already has: not stored or pushed again."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestResult:
    call_session_id: str
    status: IngestStatus
    sequence: int | None
    """The app's sequence number given to this version (None for a duplicate)."""
    version: int

    @property
    def accepted(self) -> bool:
        """True when this will be pushed (a new record or a new version of one)."""
        return self.status is not IngestStatus.DUPLICATE


class Claimed(NamedTuple):
    """A delivery a worker holds under a lease: everything needed for one push.

    This, ``Outcome`` and ``Completion`` are made for every push: named tuples, immutable
    like the frozen dataclasses here and three times faster to make."""

    delivery_id: int
    app_id: str
    call_session_id: str
    push_url: str
    body: bytes
    sequence: int
    """The app's sequence number of this version of the record."""
    version: int
    attempt: int
    """The number of the attempt about to be made, 1 for the first."""
    first_attempt_at: datetime | None
    signing_keys: tuple[str, ...] = ()
    """The secrets to sign this push with: none if signing is off, two during a rotation."""
    enqueued_at: datetime | None = None
    """When the delivery was made (its record ingested, resent or replayed)."""
    rate_limit: float | None = None
    """The app's pushes per second at most (``App.rate_limit``)."""
    max_in_flight: int | None = None
    """The app's pushes at once at most (``App.max_in_flight``)."""
    endpoint: Endpoint | None = None
    """The app's push headers, credentials and client certificate, opened; None: none."""


class Outcome(NamedTuple):
    """What one HTTP attempt gave."""

    started_at: datetime
    duration_ms: float
    status_code: int | None
    error_kind: ErrorKind | None
    error: str | None
    response_excerpt: str | None
    retry_after: float | None = None
    """Seconds a 429 or 503 answer's ``Retry-After`` asked to wait (at most
    ``ccpush.pacing.RETRY_AFTER_CAP``); None without one."""

    @property
    def ok(self) -> bool:
        return self.error_kind is None


class Completion(NamedTuple):
    """An attempt's outcome and what follows from it, written back in one batch."""

    claimed: Claimed
    outcome: Outcome
    next_state: DeliveryState
    next_attempt_at: datetime | None

    @property
    def result(self) -> str:
        """``delivered``, ``retrying`` (another attempt is scheduled) or ``failed`` (none
        is): how logs and metrics name what the attempt came to."""
        if self.outcome.ok:
            return "delivered"
        return "failed" if self.next_state is DeliveryState.FAILED else "retrying"


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    number: int
    started_at: datetime
    duration_ms: float
    status_code: int | None
    error_kind: ErrorKind | None
    error: str | None
    response_excerpt: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    id: int
    app_id: str
    call_session_id: str
    record_id: int
    replay_id: str | None
    version: int
    sequence: int
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    attempt_log: tuple[Attempt, ...] = ()


class KeyScope(StrEnum):
    """What an API key may do."""

    MANAGE = "manage"
    """Everything on its own account's apps, records and keys."""
    INGEST = "ingest"
    """Only send call records (the call center's key)."""


class ReplayKind(StrEnum):
    RANGE = "range"
    """Every record of the app whose call started in [from, to)."""
    FAILED = "failed"
    """Every record whose latest delivery failed, failing since a time."""


class ReplayState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    id: str
    account_id: str | None
    """None for a platform key (ingest into any app)."""
    name: str
    scope: KeyScope
    prefix: str
    """The first characters of the secret, to tell keys apart without showing them."""
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredRecord:
    """A version of a record as stored: the exact body pushed, and its place in the app's
    timeline (call start) and sequence."""

    id: int
    """The version's id (a cursor position)."""
    call_session_id: str
    call_start: datetime
    version: int
    sequence: int
    received_at: datetime
    body: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayJob:
    id: str
    app_id: str
    kind: ReplayKind
    range_from: datetime | None
    range_to: datetime | None
    state: ReplayState
    total: int
    enqueued: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKeys:
    """An app's signing secrets: the current one, and the one being rotated out."""

    current: str | None
    previous: str | None = None
    previous_until: datetime | None = None

    def active(self, now: datetime) -> tuple[str, ...]:
        """The secrets a push made at ``now`` is signed with."""
        keys: tuple[str, ...] = (self.current,) if self.current else ()
        if self.previous and self.previous_until and now < self.previous_until:
            keys += (self.previous,)
        return keys

    def __repr__(self) -> str:
        return f"SigningKeys(previous_until={self.previous_until!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptBucket:
    """The push attempts of an app that started in one period, by what came of them."""

    start: datetime
    delivered: int
    """Answered 2xx: each one a delivery delivered."""
    retrying: int
    """Failed, and the delivery was (or will be) tried again."""
    failed: int
    """Failed, and it was the delivery's last attempt: the delivery failed."""

    @property
    def attempts(self) -> int:
        return self.delivered + self.retrying + self.failed


@dataclass(frozen=True, slots=True, kw_only=True)
class PortalLink:
    """A one-time link that signs a browser into the console, scoped to an account (or one of
    its apps), read-only if asked. Its token is kept only as a hash."""

    id: str
    account_id: str
    app_id: str | None
    """The one app the session may see; None: every app of the account."""
    read_only: bool
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
