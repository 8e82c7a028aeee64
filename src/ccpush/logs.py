"""Logging: readable lines on a terminal, or one JSON object per line for a log pipeline.

Log records about a push carry ``app_id``, ``delivery_id`` and ``call_session_id`` as
fields (``extra=``), so a JSON log can be filtered by them. Secrets are never logged:
keys and signing secrets do not reach any log call.
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
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def log_attempt(done: Completion) -> None:
    """An ``AttemptListener``: a failed attempt at INFO, a delivered one at DEBUG."""
    outcome, claimed = done.outcome, done.claimed
    if outcome.ok and not log.isEnabledFor(logging.DEBUG):
        return  # the hot path: most attempts succeed, and DEBUG is off
    fields = {
        "app_id": claimed.app_id,
        "delivery_id": claimed.delivery_id,
        "call_session_id": claimed.call_session_id,
        "attempt": claimed.attempt,
        "status_code": outcome.status_code,
        "error_kind": outcome.error_kind.value if outcome.error_kind else None,
        "duration_ms": outcome.duration_ms,
        "next_state": done.next_state.value,
    }
    if outcome.ok:
        log.debug("push delivered", extra=fields)
    else:
        log.info("push failed: %s", outcome.error, extra=fields)
