"""The call record: the 23 fields of the push contract, validated, and their exact JSON.

Decisions on what the contract leaves open (the README explains each):

* Every push carries all 23 fields in the contract's order. A field without a value is
  JSON ``null``, except ``labels``, which is ``[]``.
* ``callSessionId``, ``callType``, ``callDuration``, ``callStartTime`` and ``callEndTime`` are
  required at ingestion; the other fields may be absent or null.
* Times are ``yyyy-MM-dd HH:mm:ss`` wall-clock strings in the platform's record time zone
  (setting ``CCPUSH_RECORD_TIMEZONE``, announced on every push in a header); they are pushed
  exactly as ingested.
* ``callType``, ``hangupReason`` and ``hangingDirection`` accept values beyond the documented
  ones (0..999), because a call center that adds a reason must not lose records; the
  documented values are the enums below.
* A field that is not in the contract is refused (422, naming the field).
* ``baseCost`` and ``cost`` are decimal strings (``"0.0150"``), never JSON numbers.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Annotated, Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
CONTENT_TYPE: Final = "application/json;charset=UTF-8"


_TIME_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")


def _check_time(value: str) -> str:
    if not _TIME_SHAPE.fullmatch(value):
        raise ValueError("must be a time in the format yyyy-MM-dd HH:mm:ss")
    try:
        parse_time(value)
    except ValueError:
        raise ValueError("is not a real calendar time (yyyy-MM-dd HH:mm:ss)") from None
    return value


def parse_time(value: str) -> datetime:
    """A ``yyyy-MM-dd HH:mm:ss`` time (its shape already checked) as a naive datetime.

    ``fromisoformat`` reads exactly this shape, calendar checks included, at a fraction of
    ``strptime``'s cost (ingestion reads three times a record)."""
    return datetime.fromisoformat(value)


def _check_printable(value: str) -> str:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("must not contain control characters")
    return value


Text = Annotated[str, Field(max_length=256)]
LongText = Annotated[str, Field(max_length=4096)]
Url = Annotated[str, Field(max_length=2048)]
Time = Annotated[str, AfterValidator(_check_time)]
Money = Annotated[
    str,
    Field(pattern=r"^-?\d{1,12}(\.\d{1,10})?$", description="USD amount as a decimal string"),
]
Code = Annotated[int, Field(ge=0, le=999)]
SessionId = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_check_printable)]
Label = Annotated[str, Field(min_length=1, max_length=128)]


class CallRecord(BaseModel):
    """One call record, field for field as the push contract names it."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    callId: Text | None = None
    callSessionId: SessionId
    called: Text | None = None
    calledInfo: Text | None = None
    caller: Text | None = None
    ccode: Annotated[str, Field(max_length=8)] | None = None
    ccodeName: Text | None = None
    agentName: Text | None = None
    agentGroupName: Text | None = None
    agentAccount: Text | None = None
    callDuration: Annotated[int, Field(ge=0, le=31 * 24 * 3600)]
    callType: Code
    hangupCode: Annotated[str, Field(max_length=16)] | None = None
    hangupReason: Code | None = None
    hangingDirection: Code | None = None
    labels: Annotated[list[Label], Field(max_length=64)] = Field(default_factory=list)
    baseCost: Money | None = None
    cost: Money | None = None
    remark: LongText | None = None
    callStartTime: Time
    answerTime: Time | None = None
    callEndTime: Time
    voiceUrl: Url | None = None

    # The time format sorts lexically in time order, so the strings compare as times.

    @field_validator("answerTime")
    @classmethod
    def _answered_after_start(cls, value: str | None, info: ValidationInfo) -> str | None:
        start = info.data.get("callStartTime")
        if value is not None and start is not None and value < start:
            raise ValueError("is before callStartTime")
        return value

    @field_validator("callEndTime")
    @classmethod
    def _ended_after_start(cls, value: str, info: ValidationInfo) -> str:
        start, answered = info.data.get("callStartTime"), info.data.get("answerTime")
        if start is not None and value < start:
            raise ValueError("is before callStartTime")
        if answered is not None and value < answered:
            raise ValueError("is before answerTime")
        return value

    def push_body(self) -> bytes:
        """The exact JSON body of a push: all 23 fields, contract order, UTF-8."""
        return _RECORD_ADAPTER.dump_json(self)

    def call_start(self, zone: tzinfo) -> datetime:
        """``callStartTime`` as an aware datetime in UTC, read in the record time zone."""
        naive = parse_time(self.callStartTime)
        return naive.replace(tzinfo=zone).astimezone(UTC)


FIELD_NAMES: Final = tuple(CallRecord.model_fields)
_RECORD_ADAPTER: Final = TypeAdapter(CallRecord)


class Problem(BaseModel):
    """One reason an input was refused: where, and why."""

    field: str
    reason: str


def problems_from(error: ValidationError, prefix: str = "") -> list[Problem]:
    """Translate pydantic's errors into field paths (``[3].callType``) and plain reasons."""
    found = []
    for item in error.errors(include_url=False):
        path = prefix
        for part in item["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        found.append(Problem(field=path or "(record)", reason=_reason(item)))
    return found


_REASONS: Final = {
    "extra_forbidden": "is not a field of the call record contract",
    "missing": "is required",
    "int_type": "must be a JSON integer",
    "string_type": "must be a JSON string (or null)",
    "list_type": "must be a JSON array of strings",
    "model_type": "must be a JSON object with the call record's fields",
    "model_attributes_type": "must be a JSON object with the call record's fields",
}


def _reason(item: Any) -> str:
    kind = item["type"]
    if kind in _REASONS:
        return str(_REASONS[kind])
    if kind == "string_pattern_mismatch" and item["loc"][-1:] in (("cost",), ("baseCost",)):
        return 'must be a decimal string such as "0.0150"'
    message = str(item["msg"])
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def parse_zone(text: str) -> tzinfo:
    """A record time zone from ``+08:00``, ``-05:30``, ``UTC`` or an IANA name."""
    match = re.fullmatch(r"([+-])(\d{2}):(\d{2})", text.strip())
    if match:
        sign = 1 if match.group(1) == "+" else -1
        hours, minutes = int(match.group(2)), int(match.group(3))
        if hours > 14 or minutes > 59:
            raise ValueError(f"time zone offset {text!r} is out of range")
        return timezone(sign * timedelta(hours=hours, minutes=minutes))
    if text.strip().upper() in ("UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(text.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {text!r}: use an offset like +08:00 or a name like Asia/Shanghai"
        ) from None


def zone_label(zone: tzinfo) -> str:
    """How the record time zone is announced on a push (``+08:00`` or an IANA name)."""
    if isinstance(zone, ZoneInfo):
        return zone.key
    offset = zone.utcoffset(None) or timedelta(0)
    total = int(offset.total_seconds()) // 60
    sign = "-" if total < 0 else "+"
    return f"{sign}{abs(total) // 60:02d}:{abs(total) % 60:02d}"
