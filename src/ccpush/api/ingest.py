"""Reading call records from a request body: one record or an array, all valid or none stored."""

from __future__ import annotations

import json
from datetime import tzinfo
from typing import Any

from fastapi import Request
from pydantic import ValidationError

from ccpush.api.errors import ApiError, invalid
from ccpush.models import NewRecord
from ccpush.record import CallRecord, Problem, problems_from


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the request body is larger than {limit} bytes")


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
