"""Reading the console's forms: URL-encoded bodies, and times typed in the console's zone."""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Final
from urllib.parse import parse_qsl

from starlette.requests import Request

MAX_FIELDS: Final = 20
LOCAL_FORMATS: Final = ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d")


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
    """A time typed in a ``datetime-local`` field, read in ``zone``; None if blank.

    ``ValueError`` when it is not a time."""
    text = (text or "").strip()
    if not text:
        return None
    for fmt in LOCAL_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=zone)
        except ValueError:
            continue
    raise ValueError(f"{text!r} is not a date and time")


def local_value(when: datetime | None, zone: tzinfo) -> str:
    """``when`` as a ``datetime-local`` field shows it, in ``zone``."""
    return "" if when is None else when.astimezone(zone).strftime("%Y-%m-%dT%H:%M")
