"""Query parameters that need more than a type: times in two notations, opaque cursors."""

from __future__ import annotations

import base64
import json
from datetime import datetime, tzinfo
from typing import Any

from ccpush.api.errors import invalid
from ccpush.record import TIME_FORMAT, Problem


def parse_time(text: str | None, field: str, zone: tzinfo) -> datetime | None:
    """ISO 8601 with an offset, or ``yyyy-MM-dd HH:mm:ss`` read in the record time zone."""
    if text is None:
        return None
    try:
        value = datetime.strptime(text, TIME_FORMAT)
    except ValueError:
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise invalid(
                [Problem(field=field, reason="must be ISO 8601 or yyyy-MM-dd HH:mm:ss")],
                "query",
            ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=zone)


def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_cursor(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except ValueError:
        raise invalid(
            [Problem(field="cursor", reason="is not a cursor this API gave")], "query"
        ) from None
