"""The pacing rules: per-host adaptive limits and holds, fair shares (tables, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ccpush.models import ErrorKind, Outcome
from ccpush.pacing import (
    RETRY_AFTER_CAP,
    FairShare,
    HostLimits,
    HostRules,
    Signal,
    retry_after_seconds,
    signal_of,
)

NOW = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
FINE, OVERLOADED, UNREACHABLE, BACK_OFF = (
    Signal.FINE,
    Signal.OVERLOADED,
    Signal.UNREACHABLE,
    Signal.BACK_OFF,
)


def outcome(status: int | None, kind: ErrorKind | None) -> Outcome:
    return Outcome(NOW, 10.0, status, kind, None, None)


@pytest.mark.parametrize(
    ("status", "kind", "signal"),
    [
        (200, None, FINE),
        (400, ErrorKind.HTTP_STATUS, FINE),
        (301, ErrorKind.HTTP_STATUS, FINE),
        (500, ErrorKind.HTTP_STATUS, OVERLOADED),
        (502, ErrorKind.HTTP_STATUS, OVERLOADED),
        (503, ErrorKind.HTTP_STATUS, BACK_OFF),
        (429, ErrorKind.HTTP_STATUS, BACK_OFF),
        (None, ErrorKind.TIMEOUT, UNREACHABLE),
        (None, ErrorKind.CONNECT, UNREACHABLE),
        (None, ErrorKind.TLS, UNREACHABLE),
        (None, ErrorKind.PROTOCOL, FINE),
        (None, ErrorKind.BLOCKED, FINE),
    ],
)
def test_what_an_outcome_says_of_its_host(
    status: int | None, kind: ErrorKind | None, signal: Signal
) -> None:
    assert signal_of(outcome(status, kind)) is signal


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("86400", RETRY_AFTER_CAP),
        ("Mon, 05 Jan 2026 12:00:30 GMT", 30.0),
        ("Mon, 05 Jan 2026 11:00:00 GMT", 0.0),  # already past
        ("Tue, 06 Jan 2026 12:00:00 GMT", RETRY_AFTER_CAP),
        ("soon", None),
        ("-5", None),
        ("", None),
    ],
)
def test_retry_after_is_read_in_seconds_or_as_a_date(
    value: str | None, seconds: float | None
) -> None:
    assert retry_after_seconds(value, NOW) == seconds


RULES = HostRules(maximum=8, start=4, floor=1, first_pause=1.0, last_pause=8.0)


def limits_after(*steps: tuple[Signal, float]) -> list[int]:
    """The host's limit after each (signal, latency) attempt, one second apart."""
    limits = HostLimits(RULES)
    seen = []
    for now, (signal, latency) in enumerate(steps):
        limits.record("h", signal, latency, float(now))
        seen.append(limits.limit("h"))
    return seen


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        # grows by one per answer until the host first fails...
        ([(FINE, 0.1)] * 6, [5, 6, 7, 8, 8, 8]),
        # ...then by about one per window of answers
        ([(OVERLOADED, 0.1)] + [(FINE, 0.1)] * 4, [2, 2, 2, 3, 3]),
        # a timeout or refusal drops it to the floor at once
        ([(FINE, 0.1), (UNREACHABLE, 15.0)], [5, 1]),
        # a 5xx halves it
        ([(OVERLOADED, 0.1)], [2]),
        ([(OVERLOADED, 0.1)] * 3, [2, 1, 1]),
        # a latency far above the usual stops the growth, until it is the usual
        ([(FINE, 0.1)] * 2 + [(FINE, 1.0)] * 5, [5, 6, 6, 6, 6, 7, 8]),
        # from the floor it grows again
        ([(UNREACHABLE, 5.0)] + [(FINE, 0.1)] * 4, [1, 2, 2, 2, 3]),
    ],
)
def test_a_host_limit_follows_how_the_host_answers(
    steps: list[tuple[Signal, float]], expected: list[int]
) -> None:
    assert limits_after(*steps) == expected


def test_a_host_limit_never_passes_its_maximum() -> None:
    assert limits_after(*[(FINE, 0.1)] * 200)[-1] == RULES.maximum


def test_the_start_is_within_the_maximum() -> None:
    assert HostLimits(HostRules(maximum=2, start=4)).limit("new") == 2


@pytest.mark.parametrize(
    ("answers", "held_until"),
    [
        # (when, Retry-After) of each 429/503
        ([(0.0, 30.0)], 30.0),
        ([(0.0, None)], 1.0),  # no Retry-After: an adaptive pause...
        ([(0.0, None), (1.0, None), (3.0, None)], 3.0 + 4),  # ...doubling, hold after hold...
        ([(0.0, None), (1.0, None), (3.0, None), (7.0, None), (15.0, None)], 15.0 + 8),
        # ...up to its last; answers to pushes sent before the hold began change nothing
        ([(0.0, None), (0.1, None), (0.2, None)], 1.0),
        # but the longest Retry-After holds
        ([(0.0, 300.0), (1.0, 5.0)], 300.0),
        ([(0.0, 5.0), (1.0, 300.0)], 301.0),
    ],
)
def test_back_off_holds_the_host(
    answers: list[tuple[float, float | None]], held_until: float
) -> None:
    limits = HostLimits(RULES)
    for now, retry_after in answers:
        limits.record("h", BACK_OFF, 0.1, now, retry_after)
    last = answers[-1][0]
    assert limits.held_until("h", last) == held_until
    assert limits.held_until("h", held_until) is None
    assert limits.held_until("other", last) is None


def test_a_hold_halves_the_limit_once() -> None:
    limits = HostLimits(RULES)
    for now in (0.0, 0.1, 0.2, 0.3):  # the answers of one wave of four pushes
        limits.record("h", BACK_OFF, 0.1, now)
    assert limits.limit("h") == 2


def test_a_fine_answer_resets_the_adaptive_pause() -> None:
    limits = HostLimits(RULES)
    for now in (0.0, 1.0, 3.0, 7.0):
        limits.record("h", BACK_OFF, 0.1, now)
    limits.record("h", FINE, 0.1, 20.0)
    limits.record("h", BACK_OFF, 0.1, 21.0)
    assert limits.held_until("h", 21.0) == 22.0


def test_the_hosts_remembered_are_bounded_least_recent_first() -> None:
    limits = HostLimits(RULES, kept=3)
    for host in ("a", "b", "c"):
        limits.record(host, UNREACHABLE, 1.0, 0.0)
    limits.record("a", UNREACHABLE, 1.0, 0.0)  # heard of again: now the most recent
    limits.record("d", UNREACHABLE, 1.0, 0.0)
    assert limits.hosts() == 3
    assert [limits.limit(h) for h in "abcd"] == [1, 4, 1, 1]


@pytest.mark.parametrize(
    ("concurrency", "busy", "in_flight", "apps", "may"),
    [
        (128, 0, 128, 1000, True),  # an app with nothing in flight always may
        (128, 5, 95, 1000, True),  # more than a quarter free: anyone
        (128, 1, 96, 1000, False),  # the last quarter: only apps under their share
        (128, 1, 96, 2, True),  # share 128 // 3 = 42
        (128, 42, 96, 2, False),
        (128, 63, 100, 1, True),  # alone: half the pushers
        (128, 64, 100, 1, False),
        (2048, 1, 1600, 1000, True),  # share 2 with a thousand apps at 2048
        (2048, 2, 1600, 1000, False),
        (4, 1, 3, 100, False),  # share never below one
    ],
)
def test_fair_share(concurrency: int, busy: int, in_flight: int, apps: int, may: bool) -> None:
    assert FairShare(concurrency).may_take(busy, in_flight, apps) is may
