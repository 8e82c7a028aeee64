"""The call record: the 23 fields of the push contract, validated, and their exact JSON.

Decisions on what the contract leaves open (the README explains each):

* Every push carries all 23 fields in the contract's order. A field without a value is
  JSON ``null``, except ``labels``, which is ``[]``.
* ``callSessionId``, ``callType``, ``callDuration``, ``callStartTime`` and ``callEndTime`` are
  required at ingestion; the other fields may be absent or null.
* Times are ``yyyy-MM-dd HH:mm:ss`` wall-clock strings in the platform's record time zone
  (setting ``CCPUSH_RECORD_TIMEZONE``, announced on every push in a header), in the years
  ``EARLIEST_YEAR`` to ``LATEST_YEAR``; they are pushed exactly as ingested.
* Text fits real records: the limits below (``MAX_FREE_TEXT``, ``MAX_IDENTIFIER``,
  ``MAX_SESSION_ID``, ``MAX_LABELS``) count characters (Unicode code points), and no text
  holds a control character other than tab, CR and LF (none at all in ``callSessionId``).
* ``callType``, ``hangupReason`` and ``hangingDirection`` accept values beyond the documented
  ones (0..999), because a call center that adds a reason must not lose records; the
  documented values are the enums of ``ccpush.codes``.
* A field that is not in the contract is refused (422, naming the field).
* ``baseCost`` and ``cost`` are decimal strings (``"0.0150"``), never JSON numbers.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo
from typing import Annotated, Any, Final

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

MAX_FREE_TEXT: Final = 4096
"""Characters of a free-text field: ``calledInfo``, ``ccodeName``, ``agentName``,
``agentGroupName``, ``remark``, ``voiceUrl`` and each label."""
MAX_IDENTIFIER: Final = 256
"""Characters of a number or an id: ``callId``, ``called``, ``caller``, ``ccode``,
``agentAccount``, ``hangupCode``."""
MAX_SESSION_ID: Final = 256
"""Characters of ``callSessionId``, the record's identity (a key in the store)."""
MAX_LABELS: Final = 100
"""Labels one record may carry."""
EARLIEST_YEAR: Final = 1970
LATEST_YEAR: Final = 2099
"""Times lie in the years ``EARLIEST_YEAR`` to ``LATEST_YEAR``: a call outside them is a
clock's or a program's mistake, and any such time converts to UTC in every zone."""

_TEXT_CONTROLS: Final = r"\x00-\x08\x0B\x0C\x0E-\x1F\x7F"
_ALL_CONTROLS: Final = r"\x00-\x1F\x7F"
TEXT_PATTERN: Final = rf"^[^{_TEXT_CONTROLS}]*$"
"""Text without C0 control characters (tab, LF and CR allowed) nor DEL."""
SESSION_ID_PATTERN: Final = rf"^[^{_ALL_CONTROLS}]*$"
"""An identity without any control character."""
MONEY_PATTERN: Final = r"^-?\d{1,12}(\.\d{1,10})?$"
_TIME_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")


def _check_time(value: str) -> str:
    if not _TIME_SHAPE.fullmatch(value):
        raise ValueError("must be a time in the format yyyy-MM-dd HH:mm:ss")
    if not EARLIEST_YEAR <= int(value[:4]) <= LATEST_YEAR:
        raise ValueError(f"must be a time in the years {EARLIEST_YEAR} to {LATEST_YEAR}")
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


FreeText = Annotated[str, Field(max_length=MAX_FREE_TEXT, pattern=TEXT_PATTERN)]
Identifier = Annotated[str, Field(max_length=MAX_IDENTIFIER, pattern=TEXT_PATTERN)]
Time = Annotated[
    str,
    AfterValidator(_check_time),
    Field(
        description=f"yyyy-MM-dd HH:mm:ss in the record time zone, years {EARLIEST_YEAR}"
        f" to {LATEST_YEAR}",
        json_schema_extra={
            "pattern": f"^{_TIME_SHAPE.pattern}$",
            "examples": ["2023-11-17 13:42:30"],
        },
    ),
]
Money = Annotated[
    str,
    Field(pattern=MONEY_PATTERN, description="USD amount as a decimal string"),
]
Code = Annotated[int, Field(ge=0, le=999)]
SessionId = Annotated[
    str, Field(min_length=1, max_length=MAX_SESSION_ID, pattern=SESSION_ID_PATTERN)
]
Label = Annotated[str, Field(min_length=1, max_length=MAX_FREE_TEXT, pattern=TEXT_PATTERN)]


class CallRecord(BaseModel):
    """One call record, field for field as the push contract names it."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    callId: Identifier | None = None
    callSessionId: SessionId
    called: Identifier | None = None
    calledInfo: FreeText | None = None
    caller: Identifier | None = None
    ccode: Identifier | None = None
    ccodeName: FreeText | None = None
    agentName: FreeText | None = None
    agentGroupName: FreeText | None = None
    agentAccount: Identifier | None = None
    callDuration: Annotated[int, Field(ge=0, le=31 * 24 * 3600)]
    callType: Code
    hangupCode: Identifier | None = None
    hangupReason: Code | None = None
    hangingDirection: Code | None = None
    labels: Annotated[list[Label], Field(max_length=MAX_LABELS)] = Field(default_factory=list)
    baseCost: Money | None = None
    cost: Money | None = None
    remark: FreeText | None = None
    callStartTime: Time
    answerTime: Time | None = None
    callEndTime: Time
    voiceUrl: FreeText | None = None

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
    "string_unicode": "must be Unicode text (it holds a lone surrogate such as \\ud800)",
    "list_type": "must be a JSON array of strings",
    "model_type": "must be a JSON object with the call record's fields",
    "model_attributes_type": "must be a JSON object with the call record's fields",
}
_CONTROLS_FOUND: Final = {
    TEXT_PATTERN: (
        re.compile(f"[{_TEXT_CONTROLS}]"),
        "must not contain control characters other than tab, CR and LF",
    ),
    SESSION_ID_PATTERN: (
        re.compile(f"[{_ALL_CONTROLS}]"),
        "must not contain control characters",
    ),
}


def _reason(item: Any) -> str:
    kind = item["type"]
    if kind in _REASONS:
        return str(_REASONS[kind])
    if kind == "string_pattern_mismatch":
        return _mismatch_reason(item["ctx"]["pattern"], item["input"])
    message = str(item["msg"])
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _mismatch_reason(pattern: str, value: str) -> str:
    if pattern == MONEY_PATTERN:
        return 'must be a decimal string such as "0.0150"'
    control, reason = _CONTROLS_FOUND[pattern]
    found = control.search(value)
    where = f" (U+{ord(found.group()):04X} at character {found.start() + 1})" if found else ""
    return reason + where
