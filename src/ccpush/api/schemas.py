"""What the API accepts and answers, in camelCase JSON."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Generic, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)
from pydantic.alias_generators import to_camel
from yarl import URL

from ccpush.app_pace import MAX_IN_FLIGHT_MAX, RATE_LIMIT_MAX
from ccpush.endpoint import (
    MAX_PEM_LENGTH,
    Applied,
    ClientCertificate,
    Described,
    Endpoint,
    auth_of,
)
from ccpush.guard import MAX_LABEL_LENGTH, host_problem
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

MAX_NAME_LENGTH: Final = 200
MAX_ID_LENGTH: Final = 128
"""The longest id (or callSessionId) a path or a filter may name: longer ones name nothing."""
MAX_URL_LENGTH: Final = 2048
MAX_TIME_LENGTH: Final = 64
"""The longest text a time may be written in (ISO 8601 with microseconds and an offset
needs 32)."""

_UNPRINTABLE: Final = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def check_printable(value: str) -> str:
    """Refuse C0 control characters, DEL, and lone surrogates (no database can store one;
    JSON can carry one as ``\\ud800``)."""
    found = _UNPRINTABLE.search(value)
    if found is not None:
        what = "a lone surrogate" if found.group() >= "\ud800" else "a control character"
        raise ValueError(
            f"must not contain {what} (U+{ord(found.group()):04X} at position {found.start()})"
        )
    return value


def check_push_url(value: str) -> str:
    """A push address must be an absolute http(s) URL with a host DNS can hold."""
    check_printable(value)
    if any(ch.isspace() for ch in value):
        raise ValueError("must not contain spaces")
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("must name a host, as in https://example.com/cdr")
    if "@" in parts.netloc:
        raise ValueError(
            "must not hold credentials (user:password@): set them as pushAuth, which is"
            " kept encrypted and never shown"
        )
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise ValueError("has an invalid port") from None
    if parts.fragment:
        raise ValueError("must not contain a #fragment")
    problem = _host_problem(value)
    if problem is not None:
        raise ValueError(f"has an invalid host: {problem}")
    return value


def _host_problem(url: str) -> str | None:
    """What is wrong with the host of ``url`` as pushes read it (IDNA-encoded), or None."""
    try:
        host = URL(url).raw_host
    except ValueError:  # UnicodeError included: a Unicode label IDNA cannot encode
        return (
            "it cannot be written in ASCII for DNS (a label is empty, longer than"
            f" {MAX_LABEL_LENGTH} characters, or holds a character host names may not)"
        )
    return host_problem(host) if host else "there is none"


Name = Annotated[
    str, Field(min_length=1, max_length=MAX_NAME_LENGTH), AfterValidator(check_printable)
]
ObjectId = Annotated[
    str, Field(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(check_printable)
]
PushUrl = Annotated[str, Field(max_length=MAX_URL_LENGTH), AfterValidator(check_push_url)]
TimeText = Annotated[str, Field(max_length=MAX_TIME_LENGTH)]


class Schema(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


Item = TypeVar("Item", bound=Schema)


class Page(Schema, Generic[Item]):
    """What every list route answers: a page of items, and where the next one starts."""

    items: list[Item]
    next_cursor: str | None = Field(
        description="Pass as cursor to get the next page; null: this is the last"
    )


class AccountCreate(Schema):
    name: Name


class AccountOut(Schema):
    id: str
    name: str
    created_at: datetime

    @classmethod
    def of(cls, account: Account) -> AccountOut:
        return cls(id=account.id, name=account.name, created_at=account.created_at)


class AccountPage(Page[AccountOut]):
    """Accounts, oldest first."""


class KeyCreate(Schema):
    name: Name
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


class KeyPage(Page[KeyOut]):
    """Keys, oldest first, revoked ones included."""


class KeyCreated(KeyOut):
    secret: str = Field(description="The key itself: shown this once, never again")


MASKED: Final = "********"


class BasicAuthIn(Schema):
    type: Literal["basic"]
    username: str = Field(max_length=512)
    password: str = Field(max_length=512)


class BearerAuthIn(Schema):
    type: Literal["bearer"]
    token: str = Field(max_length=512)


class ClientCertificateIn(Schema):
    cert_pem: str = Field(max_length=MAX_PEM_LENGTH, description="PEM certificate chain")
    key_pem: str = Field(max_length=MAX_PEM_LENGTH, description="Its PEM key, unencrypted")


class EndpointFields(Schema):
    """The app's push headers, credentials and client certificate: written, never read
    back (reads show names and kinds). ``null`` clears one; one not given is kept."""

    push_headers: dict[str, StrictStr] | None = Field(
        default=None, description="Header name → value, sent on every push (at most 20)"
    )
    push_auth: Annotated[BasicAuthIn | BearerAuthIn, Field(discriminator="type")] | None = None
    client_certificate: ClientCertificateIn | None = Field(
        default=None, description="A client certificate for mutual TLS"
    )

    def endpoint_from(self, current: Endpoint) -> Endpoint | None:
        """``current`` with what this body changes; None if it changes none of it."""
        given = self.model_fields_set
        if not given & {"push_headers", "push_auth", "client_certificate"}:
            return None
        changes: dict[str, Any] = {}
        if "push_headers" in given:
            changes["headers"] = tuple((self.push_headers or {}).items())
        if "push_auth" in given:
            changes["auth"] = auth_of(self.push_auth.model_dump()) if self.push_auth else None
        if "client_certificate" in given:
            cert = self.client_certificate
            pair = ClientCertificate(cert.cert_pem, cert.key_pem) if cert else None
            changes["client_certificate"] = pair
        return dataclasses.replace(current, **changes)


RateLimit = Annotated[StrictFloat, Field(gt=0, le=RATE_LIMIT_MAX, allow_inf_nan=False)]
MaxInFlight = Annotated[StrictInt, Field(ge=1, le=MAX_IN_FLIGHT_MAX)]


class PaceFields(Schema):
    """The pace the app's receiver can take (``ccpush.app_pace``), kept by every worker.
    ``null`` removes a limit; one not given is kept."""

    rate_limit: RateLimit | None = Field(
        default=None,
        description="Pushes per second at most (over 0, up to 10,000), in bursts of one"
        " second's worth at most; null: no limit",
    )
    max_in_flight: MaxInFlight | None = Field(
        default=None, description="Pushes at once at most (1 to 1,000); null: no limit"
    )

    def pace_changes(self) -> dict[str, Any]:
        """``rate_limit``/``max_in_flight`` for ``Store.update_app``: those given."""
        given = self.model_fields_set
        return {
            name: getattr(self, name) for name in ("rate_limit", "max_in_flight") if name in given
        }


class AppCreate(EndpointFields, PaceFields):
    name: Name
    push_url: PushUrl | None = None
    account_id: ObjectId | None = Field(
        default=None,
        description="Operator only: the account that owns the app (default: the default account)",
    )


class AppPatch(EndpointFields, PaceFields):
    """Only the fields given change; ``"pushUrl": null`` clears the address."""

    name: Name | None = None
    push_url: PushUrl | None = None
    paused: StrictBool | None = None
    signing: StrictBool | None = None


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
    push_headers: dict[str, str] = Field(description="Header names, their values masked")
    push_auth: BasicAuthOut | BearerAuthOut | None = None
    client_certificate: CertificateOut | None = None
    rate_limit: float | None = Field(default=None, description="Pushes per second at most")
    max_in_flight: int | None = Field(default=None, description="Pushes at once at most")

    @classmethod
    def of(cls, app: App, endpoint: Endpoint | None = None) -> AppOut:
        shown = (endpoint or Endpoint()).described()
        cert = shown.certificate
        return cls(
            push_headers=dict.fromkeys(shown.header_names, MASKED),
            push_auth=_auth_out(shown),
            client_certificate=CertificateOut(subject=cert.subject, not_after=cert.not_after)
            if cert
            else None,
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
            rate_limit=app.rate_limit,
            max_in_flight=app.max_in_flight,
        )


def _auth_out(shown: Described) -> BasicAuthOut | BearerAuthOut | None:
    if shown.auth == "basic":
        return BasicAuthOut(type="basic", username=shown.username or "")
    return BearerAuthOut(type="bearer") if shown.auth == "bearer" else None


class BasicAuthOut(Schema):
    type: Literal["basic"]
    username: str


class BearerAuthOut(Schema):
    type: Literal["bearer"]


class CertificateOut(Schema):
    subject: str
    not_after: datetime


class AppPage(Page[AppOut]):
    """Apps, oldest first."""


class SigningOut(Schema):
    secret: str | None = Field(description="whsec_...: verify pushes with it")
    previous_secret: str | None = Field(description="Still signing pushes until previousUntil")
    previous_until: datetime | None

    @classmethod
    def of(cls, keys: SigningKeys) -> SigningOut:
        return cls(
            secret=keys.current, previous_secret=keys.previous, previous_until=keys.previous_until
        )


class AppLagOut(Schema):
    oldest_waiting_at: datetime | None = Field(
        description="When the app's oldest record not yet pushed (held, pending or being"
        " sent) was ingested, resent or replayed; null: none waits"
    )
    lag_seconds: float = Field(description="How long that record has waited (0: none waits)")

    @classmethod
    def of(cls, oldest: datetime | None, now: datetime) -> AppLagOut:
        waited = 0.0 if oldest is None else max((now - oldest).total_seconds(), 0.0)
        return cls(oldest_waiting_at=oldest, lag_seconds=waited)


class AppliedOut(Schema):
    header_names: list[str]
    auth: str | None
    client_certificate: bool
    proxy: bool


class TestPushOut(Schema):
    delivered: bool = Field(description="The receiver answered 2xx")
    status_code: int | None
    latency_ms: float
    error_kind: ErrorKind | None
    error: str | None
    response_excerpt: str | None
    record: CallRecord = Field(description="The sample record that was pushed")
    applied: AppliedOut | None = Field(
        default=None, description="What of the app's push settings the push used (no values)"
    )

    @classmethod
    def of(
        cls, outcome: Outcome, record: CallRecord, applied: Applied | None = None
    ) -> TestPushOut:
        return cls(
            applied=AppliedOut(
                header_names=list(applied.header_names),
                auth=applied.auth,
                client_certificate=applied.client_certificate,
                proxy=applied.proxy,
            )
            if applied
            else None,
            delivered=outcome.ok,
            status_code=outcome.status_code,
            latency_ms=outcome.duration_ms,
            error_kind=outcome.error_kind,
            error=outcome.error,
            response_excerpt=outcome.response_excerpt,
            record=record,
        )


class RecordStatus(StrEnum):
    """What became of one record of an ingestion request: the store's outcome, or refused."""

    ACCEPTED = IngestStatus.ACCEPTED.value
    UPDATED = IngestStatus.UPDATED.value
    DUPLICATE = IngestStatus.DUPLICATE.value
    REFUSED = "refused"


class RecordResult(Schema):
    """One record's outcome; an ingestion answer lists them in the request's order."""

    call_session_id: str | None = Field(
        description="null only for a refused record without a valid callSessionId"
    )
    status: RecordStatus = Field(
        description="accepted: new; updated: a new version of a record the app had (pushed"
        " again); duplicate: the same content as the app has (not pushed again); refused:"
        " invalid, nothing of it stored (see problems)"
    )
    sequence: int | None = Field(
        description="The app's sequence number of this version (null: duplicate or refused)"
    )
    version: int | None = Field(description="The record's version (null: refused)")
    problems: list[Problem] | None = Field(
        default=None,
        exclude_if=lambda problems: problems is None,
        description="Only for a refused record: each problem, its field path starting with"
        " the record's position in the request ([3].callType)",
    )

    @classmethod
    def of(cls, result: IngestResult) -> RecordResult:
        return cls(
            call_session_id=result.call_session_id,
            status=RecordStatus(result.status.value),
            sequence=result.sequence,
            version=result.version,
        )

    @classmethod
    def refused(cls, call_session_id: str | None, problems: list[Problem]) -> RecordResult:
        return cls(
            call_session_id=call_session_id,
            status=RecordStatus.REFUSED,
            sequence=None,
            version=None,
            problems=problems,
        )


class IngestOut(Schema):
    accepted: int = Field(description="Records to push: new ones and new versions")
    duplicates: int
    refused: int = Field(description="Invalid records: nothing of them stored")
    results: list[RecordResult] = Field(description="One per record, in the request's order")

    @classmethod
    def of(cls, results: list[RecordResult]) -> IngestOut:
        counts = Counter(result.status for result in results)
        return cls(
            accepted=counts[RecordStatus.ACCEPTED] + counts[RecordStatus.UPDATED],
            duplicates=counts[RecordStatus.DUPLICATE],
            refused=counts[RecordStatus.REFUSED],
            results=results,
        )


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


class DeliveryPage(Page[DeliveryOut]):
    """Deliveries, newest first, each with its attempts."""


class StoredRecordOut(Schema):
    sequence: int
    version: int
    received_at: datetime
    record: CallRecord = Field(description="The record exactly as it is pushed")


class RecordPage(Page[StoredRecordOut]):
    """Record versions, by call start time or by sequence number."""


class ReplayCreate(Schema):
    """Either a call-time range (``from`` and ``to``) or ``failedSince``."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    range_from: TimeText | None = Field(default=None, alias="from")
    range_to: TimeText | None = Field(default=None, alias="to")
    failed_since: TimeText | None = Field(default=None, alias="failedSince")


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
