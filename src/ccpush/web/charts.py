"""Charts drawn on the server: pushes per period as stacked bars (delivered, retrying,
failed) and the success rate as a line, laid out here and drawn as SVG by a template."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from ccpush.models import AttemptBucket

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 48, 14, 30
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
EN_DASH = "\u2013"


@dataclass(frozen=True, slots=True)
class Window:
    """A span of time cut into equal periods, the last one holding now."""

    since: datetime
    period: timedelta
    count: int

    @property
    def starts(self) -> list[datetime]:
        return [self.since + index * self.period for index in range(self.count)]


def window(now: datetime, zone: tzinfo, *, span: timedelta, period: timedelta) -> Window:
    """Periods aligned on the clock of ``zone`` (hours, or 00:00, 06:00...), ending after now."""
    local = now.astimezone(zone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    current = midnight + ((local - midnight) // period) * period
    count = span // period
    return Window((current + period - count * period).astimezone(UTC), period, count)


@dataclass(frozen=True, slots=True)
class Totals:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0

    @property
    def attempts(self) -> int:
        return self.delivered + self.retrying + self.failed

    @property
    def rate(self) -> float | None:
        """The share of attempts answered 2xx; None without attempts."""
        return self.delivered / self.attempts if self.attempts else None

    def __add__(self, other: Totals | AttemptBucket) -> Totals:
        return Totals(
            self.delivered + other.delivered,
            self.retrying + other.retrying,
            self.failed + other.failed,
        )


def series(frame: Window, buckets: Iterable[AttemptBucket]) -> list[Totals]:
    """One total per period of ``frame`` (zero where nothing happened), from finer buckets."""
    totals = [Totals()] * frame.count
    for bucket in buckets:
        index = (bucket.start - frame.since) // frame.period
        if 0 <= index < frame.count:
            totals[index] = totals[index] + bucket
    return totals


def total(values: Iterable[Totals]) -> Totals:
    return sum(values, Totals())


@dataclass(frozen=True, slots=True)
class Segment:
    y: float
    height: float
    kind: str
    """delivered, retrying or failed (the CSS class that colours it)."""


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    segments: tuple[Segment, ...]
    label: str


@dataclass(frozen=True, slots=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    """A chart laid out in a ``WIDTH`` by ``HEIGHT`` box, ready for ``_chart.html``."""

    id: str
    title: str
    summary: str
    bars: tuple[Bar, ...]
    rate_path: str
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    rows: tuple[tuple[str, Totals], ...]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    plot_width: int = PLOT_W
    plot_height: int = PLOT_H


@dataclass(frozen=True, slots=True)
class Labels:
    """How a chart names its periods: ``period`` formats a start in tooltips and tables,
    ``tick`` on the axis, at the periods that start on a multiple of ``tick_hours``."""

    period: str
    tick: str
    tick_hours: int


def draw(
    chart_id: str, title: str, frame: Window, values: Sequence[Totals], zone: tzinfo, names: Labels
) -> Chart:
    top = nice_top(max((value.attempts for value in values), default=0))
    slot = PLOT_W / frame.count
    bars, ticks, rows = [], [], []
    for index, (start, value) in enumerate(zip(frame.starts, values, strict=True)):
        local = start.astimezone(zone)
        name = f"{local:{names.period}}{EN_DASH}{local + frame.period:%H:%M}"
        rows.append((name, value))
        bars.append(_bar(LEFT + index * slot, slot, value, top, name))
        if local.hour % names.tick_hours == 0 and local.minute == 0:
            ticks.append(Tick(LEFT + index * slot, f"{local:{names.tick}}"))
    everything = total(values)
    return Chart(
        id=chart_id,
        title=title,
        summary=describe(everything),
        bars=tuple(bars),
        rate_path=rate_path(values, slot),
        y_ticks=tuple(
            Tick(TOP + PLOT_H * (1 - step / 4), f"{top * step // 4:,}") for step in range(5)
        ),
        x_ticks=tuple(ticks),
        rows=tuple(rows),
    )


def _bar(x: float, slot: float, value: Totals, top: int, name: str) -> Bar:
    segments, base = [], float(TOP + PLOT_H)
    for kind, count in (
        ("delivered", value.delivered),
        ("retrying", value.retrying),
        ("failed", value.failed),
    ):
        if count:
            height = PLOT_H * count / top
            base -= height
            segments.append(Segment(round(base, 1), round(height, 1), kind))
    return Bar(round(x + slot * 0.15, 1), round(slot * 0.7, 1), tuple(segments), _tip(name, value))


def _tip(name: str, value: Totals) -> str:
    if not value.attempts:
        return f"{name}: no pushes"
    return f"{name}: {describe(value)}"


def describe(value: Totals) -> str:
    """``52 delivered, 1 retrying, 0 failed; 98.1 % answered 2xx``."""
    counts = f"{value.delivered:,} delivered, {value.retrying:,} retrying, {value.failed:,} failed"
    if value.rate is None:
        return "no pushes"
    return f"{counts}; {100 * value.rate:.1f} % answered 2xx"


def rate_path(values: Sequence[Totals], slot: float) -> str:
    """An SVG path through the success rate of each period with pushes, broken where none."""
    parts, drawing = [], False
    for index, value in enumerate(values):
        if value.rate is None:
            drawing = False
            continue
        x = LEFT + (index + 0.5) * slot
        y = TOP + PLOT_H * (1 - value.rate)
        parts.append(f"{'L' if drawing else 'M'}{x:.1f} {y:.1f}")
        drawing = True
    return " ".join(parts)


def nice_top(largest: int) -> int:
    """The axis top: at least ``largest``, four equal steps of 1, 2 or 5 times a power of 10."""
    step, factors = 1.0, itertools.cycle((2, 2.5, 2))
    while step * 4 < largest:
        step *= next(factors)
    return int(step) * 4
