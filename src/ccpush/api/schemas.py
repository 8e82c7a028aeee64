"""What the API accepts and answers, in camelCase JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from ccpush.models import (
    Account,
    ApiKey,
    App,
    Attempt,
    Delivery,
    DeliveryState,
    ErrorKind,
    IngestResult,
    IngestStatus,
    KeyScope,
    Outcome,
    ReplayJob,
    ReplayKind,
    ReplayState,
    SigningKeys,
)
from ccpush.record import CallRecord, Problem


def check_push_url(value: str) -> str:
    """A push address must be an absolute http(s) URL with a host."""
    if any(ch.isspace() for ch in value):
        raise ValueError("must not contain spaces")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("must name a host, as in https://example.com/cdr")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise ValueError("has an invalid port") from None
    if parts.fragment:
        raise ValueError("must not contain a #fragment")
    return value


PushUrl = Annotated[str, Field(max_length=2048), AfterValidator(check_push_url)]
AppName = Annotated[str, Field(min_length=1, max_length=200)]


class Schema(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class AccountCreate(Schema):
    name: Annotated[str, Field(min_length=1, max_length=200)]


class AccountOut(Schema):
    id: str
    name: str
    created_at: datetime

    @classmethod
    def of(cls, account: Account) -> AccountOut:
        return cls(id=account.id, name=account.name, created_at=account.created_at)


class KeyCreate(Schema):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    scope: KeyScope = Field(
        default=KeyScope.MANAGE,
        description="manage: the account's apps, records and keys; ingest: only send records",
    )


class KeyOut(Schema):
    id: str
    account_id: str | None
    name: str
    scope: KeyScope
    prefix: str = Field(description="The secret's first characters, to recognise the key")
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        return cls(
            id=key.id,
            account_id=key.account_id,
            name=key.name,
            scope=key.scope,
            prefix=key.prefix,
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


class KeyCreated(KeyOut):
    secret: str = Field(description="The key itself: shown this once, never again")


class AppCreate(Schema):
    name: AppName
    push_url: PushUrl | None = None
    account_id: str | None = Field(
        default=None,
        description="Operator only: the account that owns the app (default: the default account)",
    )


class AppPatch(Schema):
    """Only the fields given change; ``"pushUrl": null`` clears the address."""

    name: AppName | None = None
    push_url: PushUrl | None = None
    paused: bool | None = None
    signing: bool | None = None


class AppOut(Schema):
    id: str
    account_id: str
    name: str
    push_url: str | None
    paused: bool
    pushing: bool = Field(description="An address is set and pushing is not paused")
    signing: bool = Field(description="Pushes carry a webhook-signature header")
    paused_reason: str | None = Field(description="Why ccpush paused the app, if it did")
    failing_since: datetime | None = Field(
        description="Since when every push to the address has failed (null: it works)"
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, app: App) -> AppOut:
        return cls(
            id=app.id,
            account_id=app.account_id,
            name=app.name,
            push_url=app.push_url,
            paused=app.paused,
            pushing=app.pushing,
            signing=app.signing,
            paused_reason=app.paused_reason,
            failing_since=app.failing_since,
            created_at=app.created_at,
            updated_at=app.updated_at,
        )


class SigningOut(Schema):
    secret: str | None = Field(description="whsec_...: verify pushes with it")
    previous_secret: str | None = Field(description="Still signing pushes until previousUntil")
    previous_until: datetime | None

    @classmethod
    def of(cls, keys: SigningKeys) -> SigningOut:
        return cls(
            secret=keys.current, previous_secret=keys.previous, previous_until=keys.previous_until
        )


class TestPushOut(Schema):
    delivered: bool = Field(description="The receiver answered 2xx")
    status_code: int | None
    latency_ms: float
    error_kind: ErrorKind | None
    error: str | None
    response_excerpt: str | None
    record: CallRecord = Field(description="The sample record that was pushed")

    @classmethod
    def of(cls, outcome: Outcome, record: CallRecord) -> TestPushOut:
        return cls(
            delivered=outcome.ok,
            status_code=outcome.status_code,
            latency_ms=outcome.duration_ms,
            error_kind=outcome.error_kind,
            error=outcome.error,
            response_excerpt=outcome.response_excerpt,
            record=record,
        )


class RecordResult(Schema):
    call_session_id: str
    status: IngestStatus = Field(
        description="accepted: new; updated: a new version of a record the app had (pushed"
        " again); duplicate: the same content as the app has (not pushed again)"
    )
    sequence: int | None = Field(description="The app's sequence number of this version")
    version: int

    @classmethod
    def of(cls, result: IngestResult) -> RecordResult:
        return cls(
            call_session_id=result.call_session_id,
            status=result.status,
            sequence=result.sequence,
            version=result.version,
        )


class IngestOut(Schema):
    accepted: int = Field(description="Records to push: new ones and new versions")
    duplicates: int
    results: list[RecordResult]


class AttemptOut(Schema):
    number: int
    started_at: datetime
    duration_ms: float
    status_code: int | None
    error_kind: ErrorKind | None
    error: str | None
    response_excerpt: str | None

    @classmethod
    def of(cls, attempt: Attempt) -> AttemptOut:
        return cls(
            number=attempt.number,
            started_at=attempt.started_at,
            duration_ms=attempt.duration_ms,
            status_code=attempt.status_code,
            error_kind=attempt.error_kind,
            error=attempt.error,
            response_excerpt=attempt.response_excerpt,
        )


class DeliveryOut(Schema):
    id: int
    call_session_id: str
    version: int
    sequence: int
    replay_id: str | None
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    attempt_log: list[AttemptOut]

    @classmethod
    def of(cls, delivery: Delivery) -> DeliveryOut:
        return cls(
            id=delivery.id,
            call_session_id=delivery.call_session_id,
            version=delivery.version,
            sequence=delivery.sequence,
            replay_id=delivery.replay_id,
            state=delivery.state,
            attempts=delivery.attempts,
            next_attempt_at=(
                delivery.next_attempt_at if delivery.state is DeliveryState.PENDING else None
            ),
            created_at=delivery.created_at,
            updated_at=delivery.updated_at,
            attempt_log=[AttemptOut.of(attempt) for attempt in delivery.attempt_log],
        )


class DeliveriesOut(Schema):
    call_session_id: str
    deliveries: list[DeliveryOut]


class DeliveryPage(Schema):
    deliveries: list[DeliveryOut]
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null: last")


class StoredRecordOut(Schema):
    sequence: int
    version: int
    received_at: datetime
    record: CallRecord = Field(description="The record exactly as it is pushed")


class RecordPage(Schema):
    items: list[StoredRecordOut]
    next_cursor: str | None


class ReplayCreate(Schema):
    """Either a call-time range (``from`` and ``to``) or ``failedSince``."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    range_from: str | None = Field(default=None, alias="from")
    range_to: str | None = Field(default=None, alias="to")
    failed_since: str | None = Field(default=None, alias="failedSince")


class ReplayOut(Schema):
    id: str
    kind: ReplayKind
    range_from: datetime | None = Field(serialization_alias="from")
    range_to: datetime | None = Field(serialization_alias="to")
    state: ReplayState
    total: int = Field(description="Records the replay covers")
    enqueued: int = Field(description="Records given a new delivery so far")
    deliveries: dict[DeliveryState, int] = Field(description="The new deliveries by state")
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, job: ReplayJob, progress: dict[DeliveryState, int]) -> ReplayOut:
        return cls(
            id=job.id,
            kind=job.kind,
            range_from=job.range_from,
            range_to=job.range_to,
            state=job.state,
            total=job.total,
            enqueued=job.enqueued,
            deliveries=progress,
            created_at=job.created_at,
            finished_at=job.finished_at,
        )


class ErrorBody(Schema):
    code: str
    message: str
    problems: list[Problem] = []


class ErrorOut(Schema):
    error: ErrorBody
