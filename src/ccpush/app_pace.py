"""An app's pace, set by its customer: pure rules, no I/O.

``rateLimit``: pushes per second, kept by a token bucket in the store that holds one
second's worth (``ceil(rateLimit)``), refills continuously by the claims' time and is spent
by what they claim, so all the workers of one store share it. ``maxInFlight``: the app's
deliveries being pushed at once (in state ``sending``, whichever worker holds them).

``Pace.allowance`` says how many of an app's deliveries a claim may take; ``Spacing`` keeps
a worker from pushing what it claimed faster than the rate (one push per ``1/rate``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

RATE_LIMIT_MAX: Final = 10_000.0
"""The highest ``rateLimit`` an app may set (pushes per second)."""
MAX_IN_FLIGHT_MAX: Final = 1000
"""The highest ``maxInFlight`` an app may set."""


@dataclass(frozen=True, slots=True)
class Pace:
    """An app's limits: None for no limit."""

    rate_limit: float | None = None
    max_in_flight: int | None = None

    @property
    def burst(self) -> int | None:
        """The most tokens the bucket holds: one second's worth."""
        return None if self.rate_limit is None else math.ceil(self.rate_limit)

    def tokens(self, tokens: float | None, since: datetime | None, now: datetime) -> float:
        """The bucket's tokens at ``now``, ``tokens`` at ``since`` refilled (a new bucket is
        full; a ``now`` before ``since``, another worker's clock behind, refills nothing)."""
        burst = self.burst
        if burst is None:
            return math.inf
        if tokens is None or since is None:
            return float(burst)
        elapsed = max((now - since).total_seconds(), 0.0)
        return min(float(burst), tokens + elapsed * (self.rate_limit or 0.0))

    def allowance(self, tokens: float, sending: int) -> int | None:
        """How many deliveries a claim may take with ``tokens`` in the bucket and
        ``sending`` of the app's deliveries being pushed (None: no limit)."""
        rooms = []
        if self.rate_limit is not None:
            rooms.append(math.floor(tokens))
        if self.max_in_flight is not None:
            rooms.append(self.max_in_flight - sending)
        return max(0, min(rooms)) if rooms else None


@dataclass(frozen=True, slots=True)
class Bucket:
    """What a claim read of a paced app: its pace, its bucket and its pushes in flight."""

    app_id: str
    pace: Pace
    tokens: float | None
    since: datetime | None
    sending: int

    def allowance(self, now: datetime) -> int | None:
        """How many of its deliveries a claim made at ``now`` may take (None: any number)."""
        return self.pace.allowance(self.pace.tokens(self.tokens, self.since, now), self.sending)

    def spent(self, claimed: int, now: datetime) -> tuple[float, datetime]:
        """The bucket (tokens, as of when) once a claim at ``now`` took ``claimed``."""
        since = now if self.since is None else max(self.since, now)
        return self.pace.tokens(self.tokens, self.since, now) - claimed, since


def paced_limits(
    buckets: list[Bucket],
    now: datetime,
    skip: list[str],
    limits: dict[str, int],
) -> tuple[list[str], dict[str, int]]:
    """A claim's apps to skip and per-app limits, the stricter of those asked and the paced
    apps' allowances."""
    skip, limits = list(skip), dict(limits)
    for bucket in buckets:
        allowed = bucket.allowance(now)
        if allowed == 0:
            skip.append(bucket.app_id)
        elif allowed is not None:
            limits[bucket.app_id] = min(allowed, limits.get(bucket.app_id, allowed))
    return skip, limits


class Spacing:
    """One push per ``1/rate`` seconds at most, no burst (times: a monotonic clock)."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = -math.inf

    def wait(self, now: float) -> float:
        """Seconds until the next push may start (0: now)."""
        return max(0.0, self._next - now)

    def take(self, now: float, rate: float) -> None:
        """A push starts at ``now``."""
        self._next = max(self._next, now) + 1.0 / rate


def spent_buckets(
    buckets: list[Bucket], claimed: Mapping[str, int], now: datetime
) -> list[tuple[str, float, datetime]]:
    """(app, tokens, as of) for the rate-limited apps a claim at ``now`` took some of:
    the buckets to write back (one untouched refills by itself when next read)."""
    return [
        (bucket.app_id, *bucket.spent(claimed[bucket.app_id], now))
        for bucket in buckets
        if bucket.pace.rate_limit is not None and claimed.get(bucket.app_id)
    ]


class LocalPaces:
    """What one worker keeps of its apps' paces: each paced app's pace (as its last claimed
    delivery said) and the spacing of its pushes. The store's buckets bound what all the
    workers claim; this keeps one worker from pushing what it claimed in a burst."""

    __slots__ = ("_paces", "_spacing")

    def __init__(self) -> None:
        self._paces: dict[str, Pace] = {}
        self._spacing: dict[str, Spacing] = {}

    def __contains__(self, app: str) -> bool:
        return app in self._paces

    def learn(self, app: str, rate_limit: float | None, max_in_flight: int | None) -> None:
        if rate_limit is None and max_in_flight is None:
            if self._paces:
                self._paces.pop(app, None)
                self._spacing.pop(app, None)
            return
        self._paces[app] = Pace(rate_limit, max_in_flight)

    def room(self, app: str, waiting: int, busy: int) -> int | None:
        """How many more of ``app``'s deliveries this worker may claim (None: no limit):
        one second's worth waiting, and no more waiting and in flight than ``maxInFlight``."""
        pace = self._paces.get(app)
        if pace is None:
            return None
        rooms = []
        if pace.burst is not None:
            rooms.append(pace.burst - waiting)
        if pace.max_in_flight is not None:
            rooms.append(pace.max_in_flight - waiting - busy)
        return min(rooms)

    def wait(self, app: str, busy: int, now: float) -> float:
        """Seconds before ``app`` may start a push (0: now; ``math.inf``: once one of its
        ``busy`` pushes ends)."""
        pace = self._paces.get(app)
        if pace is None:
            return 0.0
        if pace.max_in_flight is not None and busy >= pace.max_in_flight:
            return math.inf
        spacing = self._spacing.get(app)
        return 0.0 if spacing is None else spacing.wait(now)

    def started(self, app: str, now: float) -> None:
        """A push of ``app`` starts at ``now``."""
        pace = self._paces.get(app)
        if pace is not None and pace.rate_limit is not None:
            spacing = self._spacing.get(app) or self._spacing.setdefault(app, Spacing())
            spacing.take(now, pace.rate_limit)

    def refill_gap(self) -> float | None:
        """Seconds the fastest rate-limited app takes to earn one push; None if none is."""
        rates = [pace.rate_limit for pace in self._paces.values() if pace.rate_limit]
        return 1 / max(rates) if rates else None

    def forget(self, keep: set[str] | frozenset[str]) -> None:
        """Forget the apps not in ``keep`` once many are kept (learnt again when claimed)."""
        if len(self._paces) > 4096:
            for app in self._paces.keys() - keep:
                del self._paces[app]
                self._spacing.pop(app, None)


def read_pace(rate_limit: str, max_in_flight: str) -> tuple[Pace, str | None]:
    """A pace from a form's text (empty: no limit), or the reason it is refused."""
    rate, most = rate_limit.strip(), max_in_flight.strip()
    try:
        rate_value = float(rate) if rate else None
    except ValueError:
        return Pace(), "The rate limit must be a number of pushes per second."
    if rate_value is not None and not 0 < rate_value <= RATE_LIMIT_MAX:
        return Pace(), f"The rate limit must be over 0 and at most {RATE_LIMIT_MAX:,.0f} a second."
    if most and not (most.isdigit() and 1 <= int(most) <= MAX_IN_FLIGHT_MAX):
        return Pace(), f"Pushes at once must be a whole number from 1 to {MAX_IN_FLIGHT_MAX:,}."
    return Pace(rate_value, int(most) if most else None), None
