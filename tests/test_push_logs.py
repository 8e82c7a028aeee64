"""Push log lines name the app, delivery, call and attempt, and say what follows: in the
text itself, and as fields of a JSON line."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from ccpush.logs import (
    LogFormat,
    attempt_message,
    configure_logging,
    log_attempt,
)
from ccpush.models import Claimed, Completion, DeliveryState, ErrorKind, Outcome

STARTED = datetime(2023, 11, 17, 5, 42, 49, tzinfo=UTC)
NEXT = datetime(2023, 11, 17, 6, 12, 49, tzinfo=UTC)


def completion(
    *,
    attempt: int = 2,
    status: int | None = 500,
    kind: ErrorKind | None = ErrorKind.HTTP_STATUS,
    error: str | None = "HTTP 500 Internal Server Error",
    state: DeliveryState = DeliveryState.PENDING,
    next_at: datetime | None = NEXT,
) -> Completion:
    claimed = Claimed(
        delivery_id=42, app_id="app_x", call_session_id="23111713424802472",
        push_url="http://h/", body=b"{}", sequence=7, version=1, attempt=attempt,
        first_attempt_at=None, signing_keys=("whsec_c2VjcmV0",),
    )  # fmt: skip
    outcome = Outcome(
        started_at=STARTED, duration_ms=12.4, status_code=status, error_kind=kind,
        error=error, response_excerpt="busy",
    )  # fmt: skip
    return Completion(claimed=claimed, outcome=outcome, next_state=state, next_attempt_at=next_at)


WHO = "app app_x delivery 42 call 23111713424802472"


@pytest.mark.parametrize(
    ("done", "message", "outcome"),
    [
        (
            completion(),
            f"push failed: {WHO} attempt 2: HTTP 500 Internal Server Error;"
            " next attempt at 2023-11-17T06:12:49+00:00",
            "retrying",
        ),
        (
            completion(attempt=4, state=DeliveryState.FAILED, next_at=None),
            f"push failed: {WHO} attempt 4: HTTP 500 Internal Server Error;"
            " no attempt left, the delivery failed",
            "failed",
        ),
        (
            completion(status=None, kind=ErrorKind.TIMEOUT, error=None),
            f"push failed: {WHO} attempt 2: timeout; next attempt at 2023-11-17T06:12:49+00:00",
            "retrying",
        ),
        (
            completion(attempt=1, status=200, kind=None, error=None,
                       state=DeliveryState.DELIVERED, next_at=None),
            f"push delivered: {WHO} attempt 1: HTTP 200 in 12 ms",
            "delivered",
        ),
    ],
)  # fmt: skip
def test_a_push_line_says_what_was_pushed_and_what_follows(
    done: Completion, message: str, outcome: str
) -> None:
    assert attempt_message(done) == message
    assert done.result == outcome


@pytest.fixture
def logging_in() -> Iterator[Callable[[LogFormat], None]]:
    """Sets ccpush's logging up in a format, at DEBUG, on the stderr of the moment (called in
    the test, where ``capsys`` captures it); put back as the tests have it after."""
    yield lambda fmt: configure_logging("DEBUG", fmt)
    configure_logging("WARNING", "text")


def test_a_text_line_names_the_push(
    logging_in: Callable[[LogFormat], None], capsys: pytest.CaptureFixture[str]
) -> None:
    logging_in("text")
    log_attempt(completion())
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith(
        f" INFO ccpush.pushes: push failed: {WHO} attempt 2: HTTP 500 Internal Server Error;"
        " next attempt at 2023-11-17T06:12:49+00:00"
    )


def test_a_json_line_carries_the_push_as_fields(
    logging_in: Callable[[LogFormat], None], capsys: pytest.CaptureFixture[str]
) -> None:
    logging_in("json")
    log_attempt(completion())
    log_attempt(completion(attempt=1, status=200, kind=None, error=None,
                           state=DeliveryState.DELIVERED, next_at=None))  # fmt: skip
    failed, delivered = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert failed["message"] == attempt_message(completion())
    assert {key: failed[key] for key in FIELDS} == {
        "level": "INFO", "app_id": "app_x", "delivery_id": 42,
        "call_session_id": "23111713424802472", "attempt": 2, "outcome": "retrying",
        "status_code": 500, "error_kind": "http_status",
        "next_attempt_at": "2023-11-17T06:12:49+00:00",
    }  # fmt: skip
    assert (delivered["level"], delivered["outcome"], delivered["attempt"]) == (
        "DEBUG",
        "delivered",
        1,
    )
    assert "whsec_" not in json.dumps([failed, delivered])


FIELDS = (
    "level", "app_id", "delivery_id", "call_session_id", "attempt", "outcome", "status_code",
    "error_kind", "next_attempt_at",
)  # fmt: skip


def test_delivered_pushes_cost_nothing_unless_debugging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "ccpush.pushes")
    log_attempt(completion(status=200, kind=None, error=None, state=DeliveryState.DELIVERED))
    assert caplog.records == []
