"""Logging: readable lines on a terminal, or one JSON object per line for a log pipeline.

Log records about a push name its app, delivery, call session and attempt in their text,
and carry them as fields (``extra=``: ``app_id``, ``delivery_id``, ``call_session_id``,
``attempt``, ``outcome``...), so a JSON log can be filtered by them. In JSON, every line
is a JSON object: Python's warnings go through the log too. Secrets are never logged:
keys and signing secrets do not reach any log call, and the access log keeps the names of
a request's query parameters but not their values (a client may send a token there).
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

from ccpush.models import Completion

LogFormat = Literal["text", "json"]

log = logging.getLogger("ccpush.pushes")


def configure_logging(level: str, fmt: LogFormat) -> None:
    """Send ccpush's (and uvicorn's) logs to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    logging.captureWarnings(True)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # On the logger rather than the handler: it holds for any handler that prints the line.
    logging.getLogger("uvicorn.access").addFilter(QUERY_VALUES_REDACTED)


REDACTED = "[redacted]"


def redact_query(target: str) -> str:
    """``target`` (a path and query) with every query value replaced: ``/v1/apps?token=x``
    becomes ``/v1/apps?token=[redacted]``; a parameter without ``=`` is replaced whole."""
    path, mark, query = target.partition("?")
    if not mark:
        return target
    parameters = (parameter.partition("=") for parameter in query.split("&"))
    redacted = (f"{name}={REDACTED}" if equals else REDACTED for name, equals, _ in parameters)
    return f"{path}?{'&'.join(redacted)}"


class QueryValuesRedacted(logging.Filter):
    """Redacts the query values of the request target in uvicorn's access log records
    (``'%s - "%s %s HTTP/%s" %d'``, the target among the arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_query(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


QUERY_VALUES_REDACTED = QueryValuesRedacted()


def log_attempt(done: Completion) -> None:
    """An ``AttemptListener``: a failed attempt at INFO, a delivered one at DEBUG. The line
    names the app, delivery, call and attempt and says what follows, in its text and (for a
    JSON log) as fields."""
    outcome = done.outcome
    if outcome.ok and not log.isEnabledFor(logging.DEBUG):
        return  # the hot path: most attempts succeed, and DEBUG is off
    claimed = done.claimed
    fields = {
        "app_id": claimed.app_id,
        "delivery_id": claimed.delivery_id,
        "call_session_id": claimed.call_session_id,
        "attempt": claimed.attempt,
        "outcome": done.result,
        "status_code": outcome.status_code,
        "error_kind": outcome.error_kind.value if outcome.error_kind else None,
        "duration_ms": outcome.duration_ms,
        "next_state": done.next_state.value,
        "next_attempt_at": done.next_attempt_at.isoformat() if done.next_attempt_at else None,
    }
    level = logging.DEBUG if outcome.ok else logging.INFO
    log.log(level, "%s", attempt_message(done), extra=fields)


def attempt_message(done: Completion) -> str:
    """``push failed: app app_x delivery 42 call 2311... attempt 2: HTTP 500 Internal Server
    Error; next attempt at 2023-11-17T06:12:30+00:00``: what the attempt was, how it went
    and what follows."""
    claimed, outcome = done.claimed, done.outcome
    what = (
        f"app {claimed.app_id} delivery {claimed.delivery_id} call {claimed.call_session_id}"
        f" attempt {claimed.attempt}"
    )
    if outcome.ok:
        return f"push delivered: {what}: HTTP {outcome.status_code} in {outcome.duration_ms:.0f} ms"
    error = outcome.error or (outcome.error_kind.value if outcome.error_kind else "failed")
    if done.next_attempt_at is None:
        follows = "no attempt left, the delivery failed"
    else:
        follows = f"next attempt at {done.next_attempt_at.isoformat(timespec='seconds')}"
    return f"push failed: {what}: {error}; {follows}"
