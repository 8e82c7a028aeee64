"""The overview's charts: periods on the console's clock, totals, and the drawing's numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ccpush.models import AttemptBucket
from ccpush.web.charts import (
    PLOT_H,
    TOP,
    Labels,
    Totals,
    draw,
    nice_top,
    rate_path,
    series,
    total,
    window,
)
from ccpush.wire import parse_zone

ZONE = parse_zone("+08:00")
HOUR = timedelta(hours=1)


def test_periods_end_with_the_one_holding_now_aligned_on_the_local_clock() -> None:
    now = datetime(2026, 3, 9, 2, 20, tzinfo=UTC)  # 10:20 at +08:00
    day = window(now, ZONE, span=timedelta(days=1), period=HOUR)
    assert (day.count, day.since) == (24, datetime(2026, 3, 8, 3, 0, tzinfo=UTC))
    week = window(now, ZONE, span=timedelta(days=7), period=6 * HOUR)
    assert week.count == 28
    assert week.since.astimezone(ZONE) == datetime(2026, 3, 2, 12, 0, tzinfo=ZONE)
    assert week.starts[-1] <= now < week.starts[-1] + week.period


def test_finer_buckets_are_added_up_into_periods() -> None:
    frame = window(datetime(2026, 3, 9, 0, 0, tzinfo=UTC), UTC, span=6 * HOUR, period=3 * HOUR)
    start = frame.since
    buckets = [
        AttemptBucket(start=start - HOUR, delivered=9, retrying=9, failed=9),  # before: ignored
        AttemptBucket(start=start, delivered=2, retrying=1, failed=0),
        AttemptBucket(start=start + 2 * HOUR, delivered=1, retrying=0, failed=1),
        AttemptBucket(start=start + 4 * HOUR, delivered=5, retrying=0, failed=0),
    ]
    assert series(frame, buckets) == [Totals(3, 1, 1), Totals(5, 0, 0)]
    assert total(series(frame, buckets)).rate == pytest.approx(8 / 10)
    assert Totals().rate is None


@pytest.mark.parametrize(
    ("largest", "top"), [(0, 4), (3, 4), (5, 8), (9, 20), (33, 40), (41, 80), (399, 400)]
)
def test_the_axis_top_is_a_round_number(largest: int, top: int) -> None:
    assert nice_top(largest) == top


def test_the_rate_line_breaks_where_nothing_was_pushed() -> None:
    values = [Totals(1, 0, 0), Totals(1, 1, 0), Totals(), Totals(0, 0, 2)]
    path = rate_path(values, slot=10)
    moves = path.split(" ")
    assert [part[0] for part in moves[::2]] == ["M", "L", "M"]
    assert path.endswith(f"{TOP + PLOT_H:.1f}")  # 0 % at the bottom


def test_a_chart_labels_periods_in_the_zone_and_sums_up() -> None:
    frame = window(datetime(2026, 3, 9, 2, 20, tzinfo=UTC), ZONE, span=6 * HOUR, period=HOUR)
    values = [Totals(), Totals(3, 1, 0), Totals(), Totals(), Totals(), Totals(0, 0, 1)]
    chart = draw("c", "Pushes", frame, values, ZONE, Labels("%H:%M", "%H:%M", tick_hours=3))
    assert chart.rows[1][0] == "06:00\u201307:00"
    assert [tick.label for tick in chart.x_ticks] == ["06:00", "09:00"]
    assert (
        chart.bars[1].label
        == "06:00\u201307:00: 3 delivered, 1 retrying, 0 failed; 75.0 % answered 2xx"
    )
    assert chart.bars[0].segments == ()
    assert [segment.kind for segment in chart.bars[1].segments] == ["delivered", "retrying"]
    assert chart.summary == "3 delivered, 1 retrying, 1 failed; 60.0 % answered 2xx"
