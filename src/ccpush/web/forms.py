"""Reading the console's forms: URL-encoded bodies, and times typed as the console shows them."""

from __future__ import annotations

import re
from datetime import datetime, tzinfo
from typing import Final
from urllib.parse import parse_qsl

from starlette.requests import Request

from ccpush.api.params import EARLIEST, LATEST, plausible_utc
from ccpush.web.pages import shown_time
from ccpush.wire import TIME_FORMAT, parse_zone

MAX_FIELDS: Final = 20
TYPED_FORMATS: Final = (
    TIME_FORMAT,
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M",
)
"""A time as the console shows it, or with its seconds or time of day left out (``T`` in
place of the space, too: the format of links made before)."""
TYPED_ZONE: Final = re.compile(r"\s+UTC([+-]\d{2}:\d{2})?$", re.IGNORECASE)
"""The zone after a time, as the console shows it: `` UTC+08:00``, `` UTC``."""
TIME_EXAMPLE: Final = "YYYY-MM-DD HH:MM:SS"


async def read_form(request: Request) -> dict[str, str]:
    """The URL-encoded form of a POST, read once per request (its size capped by BodyLimit)."""
    cached: dict[str, str] | None = getattr(request.state, "form", None)
    if cached is None:
        text = (await request.body()).decode("utf-8", errors="replace")
        try:
            cached = dict(parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS))
        except ValueError:
            cached = {}
        request.state.form = cached
    return cached


def parse_local(text: str | None, zone: tzinfo) -> datetime | None:
    """A time typed as the console shows times (``2026-03-01 16:00:00 UTC+08:00``), read in
    the zone typed after it, else in ``zone``; None if blank.

    ``ValueError`` when it is not a time, or not one the API's filters take."""
    text = (text or "").strip()
    if not text:
        return None
    if typed := TYPED_ZONE.search(text):
        zone = parse_zone(typed.group(1) or "UTC")
        text = text[: typed.start()]
    for fmt in TYPED_FORMATS:
        try:
            value = datetime.strptime(text, fmt).replace(tzinfo=zone)
        except ValueError:
            continue
        if plausible_utc(value) is None:
            raise ValueError(f"{text!r} is not between {EARLIEST.year} and {LATEST.year - 1}")
        return value
    raise ValueError(f"{text!r} is not a date and time")


def local_value(when: datetime | None, zone: tzinfo) -> str:
    """``when`` as a time field shows it: as every time on the page, in ``zone``."""
    return "" if when is None else shown_time(when, zone)
