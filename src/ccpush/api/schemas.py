"""What the API accepts and answers, in camelCase JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from ccpush.models import App, Attempt, Delivery, DeliveryState, ErrorKind, IngestResult
from ccpush.record import Problem


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


class AppCreate(Schema):
    name: AppName
    push_url: PushUrl | None = None


class AppPatch(Schema):
    """Only the fields given change; ``"pushUrl": null`` clears the address."""

    name: AppName | None = None
    push_url: PushUrl | None = None


class AppOut(Schema):
    id: str
    name: str
    push_url: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, app: App) -> AppOut:
        return cls(
            id=app.id,
            name=app.name,
            push_url=app.push_url,
            created_at=app.created_at,
            updated_at=app.updated_at,
        )


class RecordResult(Schema):
    call_session_id: str
    status: str = Field(description="accepted, or duplicate: the app already had this record")

    @classmethod
    def of(cls, result: IngestResult) -> RecordResult:
        return cls(
            call_session_id=result.call_session_id,
            status="accepted" if result.accepted else "duplicate",
        )


class IngestOut(Schema):
    accepted: int
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


class ErrorBody(Schema):
    code: str
    message: str
    problems: list[Problem] = []


class ErrorOut(Schema):
    error: ErrorBody
