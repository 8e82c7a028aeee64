"""Path and query parameters that need more than a type: ids, 64-bit integers, times in two
notations, page sizes and opaque cursors. Each is checked here, before any reaches the
store: a value the database cannot hold is a 422 naming the parameter, not a failure of
the database. And the pages of lists the store gives whole (``page_after``)."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Annotated, Any, Final, Protocol, TypeVar

from fastapi import Path, Query
from pydantic import AfterValidator

from ccpush.api.errors import PATH, QUERY, ApiError, invalid
from ccpush.api.schemas import MAX_ID_LENGTH, check_printable
from ccpush.record import EARLIEST_YEAR, LATEST_YEAR, Problem
from ccpush.wire import TIME_FORMAT

INT64_MAX: Final = 2**63 - 1
"""The largest number a sequence, an id or a cursor may be: a signed 64-bit column's."""
EARLIEST: Final = datetime(EARLIEST_YEAR, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(LATEST_YEAR + 2, 1, 1, tzinfo=UTC)
"""Times given to filter or replay by lie in [EARLIEST, LATEST): the years a record's time
may have, and a year's margin for a range's end and for time zones."""
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MAX_CURSOR_LENGTH: Final = 200
PAGE_SIZE: Final = 100
MAX_PAGE_SIZE: Final = 1000
"""Every list route answers ``{"items", "nextCursor"}``, ``limit`` items at most: by
default ``PAGE_SIZE``, at most ``MAX_PAGE_SIZE``."""

PathId = Annotated[
    str,
    Path(min_length=1, max_length=MAX_ID_LENGTH),
    AfterValidator(check_printable),
]
"""An id (or a callSessionId) in a path: printable, at most ``MAX_ID_LENGTH`` long."""


def check_path_id(value: str, field: str) -> str:
    """``PathId``'s rule, for a route that reads its path without FastAPI's parameters."""
    reason = None
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        reason = f"must be 1 to {MAX_ID_LENGTH} characters"
    else:
        try:
            check_printable(value)
        except ValueError as exc:
            reason = str(exc)
    if reason is not None:
        raise invalid([Problem(field=field, reason=reason)], PATH)
    return value


Cursor = Annotated[
    str | None,
    Query(max_length=MAX_CURSOR_LENGTH, description="A nextCursor of the previous page"),
]
Limit = Annotated[
    int,
    Query(ge=1, le=MAX_PAGE_SIZE, description=f"Items per page, 1 to {MAX_PAGE_SIZE}"),
]


def parse_time(text: str | None, field: str, zone: tzinfo, where: str = QUERY) -> datetime | None:
    """ISO 8601 with an offset, or ``yyyy-MM-dd HH:mm:ss`` read in the record time zone;
    in UTC, and between ``EARLIEST`` and ``LATEST``."""
    if text is None:
        return None
    value = _read_time(text)
    if value is None:
        reason = "must be ISO 8601 or yyyy-MM-dd HH:mm:ss"
        raise invalid([Problem(field=field, reason=reason)], where)
    moment = plausible_utc(value if value.tzinfo is not None else value.replace(tzinfo=zone))
    if moment is None:
        reason = f"must lie between {EARLIEST.year} and {LATEST.year - 1} (UTC)"
        raise invalid([Problem(field=field, reason=reason)], where)
    return moment


def _read_time(text: str) -> datetime | None:
    if not (text.isascii() and text.isprintable()):  # fromisoformat stops at a NUL
        return None
    try:
        return datetime.strptime(text, TIME_FORMAT)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def plausible_utc(value: datetime) -> datetime | None:
    """``value`` (aware) in UTC, if that lies in [``EARLIEST``, ``LATEST``); else None."""
    try:
        moment = value.astimezone(UTC)
    except (OverflowError, ValueError):  # beyond the years a datetime holds
        return None
    return moment if EARLIEST <= moment < LATEST else None


def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def sequence_cursor(text: str | None) -> int | None:
    """The sequence number a page of records by sequence ended with."""
    return None if text is None else _number(_decode(text), 0, INT64_MAX - 1)


def id_cursor(text: str | None) -> int | None:
    """The id a page of the delivery log ended with."""
    return None if text is None else _number(_decode(text), 1, INT64_MAX)


def time_cursor(text: str | None) -> tuple[datetime, int] | None:
    """The call start (a UNIX time) and id a page of records by time ended with."""
    if text is None:
        return None
    value = _decode(text)
    if isinstance(value, list) and len(value) == 2:
        when, last_id = value
        if isinstance(when, int | float) and not isinstance(when, bool) and math.isfinite(when):
            moment = _from_timestamp(when)
            if moment is not None:
                return moment, _number(last_id, 1, INT64_MAX)
    raise _not_a_cursor()


class Created(Protocol):
    """An object of a list the store gives whole, oldest first: accounts, keys, apps."""

    @property
    def id(self) -> str: ...

    @property
    def created_at(self) -> datetime: ...


C = TypeVar("C", bound=Created)


def page_after(items: Sequence[C], cursor: str | None, limit: int) -> tuple[list[C], str | None]:
    """The page of ``items`` (oldest first, as the store lists them) after the one
    ``cursor`` names, and the cursor of the next page (None: the last)."""
    after = None if cursor is None else _created_cursor(cursor)
    rest = [item for item in items if after is None or _place(item) > after]
    page = rest[:limit]
    return page, encode_cursor(list(_place(page[-1]))) if len(rest) > limit else None


def _place(item: Created) -> tuple[int, str]:
    """Where ``item`` is in its list: its creation time (microseconds, exactly), its id."""
    return (item.created_at - EPOCH) // timedelta(microseconds=1), item.id


def _created_cursor(text: str) -> tuple[int, str]:
    value = _decode(text)
    if isinstance(value, list) and len(value) == 2 and isinstance(value[1], str):
        return _number(value[0], -INT64_MAX, INT64_MAX), value[1]
    raise _not_a_cursor()


def _decode(text: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, RecursionError):  # binascii.Error and UnicodeDecodeError included
        raise _not_a_cursor() from None


def _number(value: Any, least: int, most: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and least <= value <= most:
        return value
    raise _not_a_cursor()


def _from_timestamp(when: float) -> datetime | None:
    try:
        return datetime.fromtimestamp(when, UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _not_a_cursor() -> ApiError:
    return invalid([Problem(field="cursor", reason="is not a cursor this API gave")], QUERY)
