"""Reading call records from a request body: one record or an array, all valid or none stored."""

from __future__ import annotations

import json
from datetime import tzinfo
from typing import Any

from pydantic import ValidationError

from ccpush.api.errors import ApiError, invalid
from ccpush.models import NewRecord
from ccpush.record import CallRecord, Problem, problems_from


def parse_records(body: bytes, *, zone: tzinfo, max_records: int) -> list[NewRecord]:
    """Validate every record; raise one 4xx error that lists every problem found."""
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None
    single = isinstance(data, dict)
    items = [data] if single else data
    if not isinstance(items, list):
        raise invalid([Problem(field="(body)", reason="must be a call record or an array of them")])
    if not items:
        raise invalid([Problem(field="(body)", reason="the array holds no records")])
    if len(items) > max_records:
        raise ApiError(413, "too_many_records", f"a batch may hold at most {max_records} records")
    records, problems = [], []
    for index, item in enumerate(items):
        try:
            record = CallRecord.model_validate(item)
        except ValidationError as exc:
            problems.extend(problems_from(exc, "" if single else f"[{index}]"))
            continue
        records.append(
            NewRecord(
                call_session_id=record.callSessionId,
                body=record.push_body(),
                call_start=record.call_start(zone),
            )
        )
    if problems:
        raise invalid(problems)
    return records
