from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ccpush.retry import RetrySchedule, parse_duration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CONTRACT = RetrySchedule.parse("30m,30m,30m")


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        (1, T0 + timedelta(minutes=30)),
        (2, T0 + timedelta(minutes=30)),
        (3, T0 + timedelta(minutes=30)),
        (4, None),
        (5, None),
    ],
)
def test_the_contract_schedule(attempt: int, expected: datetime | None) -> None:
    assert CONTRACT.next_attempt_at(attempt, T0) == expected


def test_the_contract_schedule_allows_four_attempts() -> None:
    assert CONTRACT.max_attempts == 4


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("90s", 90), ("1.5h", 5400), ("2d", 172800), ("250ms", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["30", "m30", "-5m", "30 minutes", "", "1w"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "delays"),
    [("", ()), ("1m", (60,)), ("1m, 5m ,1h", (60, 300, 3600))],
)
def test_schedules(text: str, delays: tuple[int, ...]) -> None:
    schedule = RetrySchedule.parse(text)
    assert tuple(d.total_seconds() for d in schedule.delays) == delays
    assert schedule.max_attempts == len(delays) + 1


def test_zero_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        RetrySchedule.parse("30m,0s")


def test_no_retries_means_one_attempt() -> None:
    assert RetrySchedule.parse("").next_attempt_at(1, T0) is None


def test_attempts_are_numbered_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        CONTRACT.next_attempt_at(0, T0)


def test_schedule_prints_as_it_is_written() -> None:
    assert str(RetrySchedule.parse("30m,1h,90s,250ms")) == "30m,1h,90s,250ms"
