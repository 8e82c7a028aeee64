"""Rendering the console's pages: Jinja2 templates, times shown in the console's zone."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, tzinfo
from typing import Any, Final

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ccpush import __version__
from ccpush.retry import RetrySchedule
from ccpush.wire import TIME_FORMAT


def security_headers(frame_ancestors: str = "'none'", images: str = "") -> dict[str, str]:
    """The headers of every page: the pages may be framed by ``frame_ancestors`` only (CSP
    sources; ``X-Frame-Options: DENY`` too when none may), and load images from ``images``
    (an origin, for a logo) besides the console."""
    image_sources = " ".join(filter(None, ("'self' data:", images)))
    policy = (
        f"default-src 'none'; script-src 'self'; style-src 'self'; img-src {image_sources};"
        f" connect-src 'self'; form-action 'self'; frame-ancestors {frame_ancestors};"
        " base-uri 'none'"
    )
    headers = {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }
    if frame_ancestors == "'none'":
        headers["X-Frame-Options"] = "DENY"
    return headers


SECURITY_HEADERS: Final = security_headers()


def zone_name(when: datetime) -> str:
    """``UTC+08:00``: the offset of an aware time, as shown after every time."""
    offset = when.strftime("%z")
    if offset in ("", "+0000"):
        return "UTC"
    return f"UTC{offset[:3]}:{offset[3:]}"


def shown_time(value: datetime, zone: tzinfo) -> str:
    """``2026-03-01 16:00:00 UTC+08:00``: how every time is shown, and typed, in the console."""
    local = value.astimezone(zone)
    return f"{local:{TIME_FORMAT}} {zone_name(local)}"


class Pages:
    """The console's templates, with filters that show times in ``zone``."""

    def __init__(self, zone: tzinfo, headers: dict[str, str] | None = None) -> None:
        self.zone = zone
        self.headers = SECURITY_HEADERS if headers is None else headers
        self.env = Environment(
            loader=PackageLoader("ccpush.web", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            when=self.when,
            short_time=self.short_time,
            duration=duration,
            percent=percent,
            number=number,
            pretty_json=pretty_json,
            retries=retries,
            spoken=spoken,
            age=age,
        )
        self.env.globals.update(version=__version__)

    def when(self, value: datetime | None) -> Markup:
        """A time in the console's zone, with the zone, in a ``<time>`` element."""
        if value is None:
            return Markup("—")
        local = value.astimezone(self.zone)
        text = shown_time(local, self.zone)
        return Markup('<time datetime="{}">{}</time>').format(local.isoformat(), text)

    def short_time(self, value: datetime, fmt: str = "%H:%M") -> str:
        return value.astimezone(self.zone).strftime(fmt)

    def zone_label(self, now: datetime) -> str:
        return zone_name(now.astimezone(self.zone))

    def render(
        self,
        request: Request,
        template: str,
        context: dict[str, Any],
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> HTMLResponse:
        page = self.env.get_template(template).render(
            request=request, url=lambda name, **params: url_to(request, name, **params), **context
        )
        return HTMLResponse(page, status, headers={**self.headers, **(headers or {})})


def url_to(request: Request, name: str, /, **params: Any) -> str:
    """The path of a console route (``static`` for a file), wherever the console is mounted."""
    path = request.app.url_path_for(name, **{key: str(value) for key, value in params.items()})
    prefix = str(request.scope.get("root_path", "")).rstrip("/")
    return prefix + str(path)


def redirect(request: Request, url: str) -> Response:
    """See ``url`` next (303), or tell htmx to go there."""
    if request.headers.get("hx-request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def duration(ms: float) -> str:
    return f"{ms:,.0f} ms" if ms < 10_000 else f"{ms / 1000:,.1f} s"


def percent(part: int, whole: int) -> str:
    if whole == 0:
        return "—"
    value = 100 * part / whole
    return "100 %" if part == whole else f"{min(value, 99.9):.1f} %"


def number(value: int) -> str:
    return f"{value:,}"


def pretty_json(body: bytes) -> str:
    """A pushed body laid out for reading (the bytes pushed are compact)."""
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body.decode("utf-8", errors="replace")


def retries(schedule: RetrySchedule) -> str:
    """The retry schedule in words: ``A push that fails is tried again every 30 minutes, up to
    3 more times.``"""
    delays = schedule.delays
    if not delays:
        return "A push that fails is not tried again."
    times = f"{len(delays)} more time{'s' if len(delays) > 1 else ''}"
    if len(set(delays)) == 1:
        return f"A push that fails is tried again every {spoken(delays[0])}, up to {times}."
    spaced = ", ".join(spoken(delay) for delay in delays)
    return f"A push that fails is tried again {times}, after {spaced}."


def spoken(delay: timedelta) -> str:
    """``30 minutes``, ``1 hour``, ``1.5 seconds``."""
    seconds = delay.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count > 1 else ''}"
    return f"{seconds:g} second{'s' if seconds != 1 else ''}"


def age(span: timedelta) -> str:
    """``42 s``, ``12 min``, ``3 h 20 min``, ``2 d 4 h``: how long something has waited."""
    seconds = int(span.total_seconds())
    if seconds < 60:
        return "under 1 s" if seconds < 1 else f"{seconds} s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if hours == 0:
        return f"{minutes} min"
    if days == 0:
        return f"{hours} h {minutes % 60} min" if minutes % 60 else f"{hours} h"
    return f"{days} d {hours % 24} h" if hours % 24 else f"{days} d"
