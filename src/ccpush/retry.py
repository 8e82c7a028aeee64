"""The retry schedule: a pure object that says when the next attempt is due, or that none is."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

_UNITS: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DELAY = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> timedelta:
    """``"30m"`` → 30 minutes. Units: ms, s, m, h, d."""
    match = _DELAY.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 30m, 90s or 1.5h")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Delays between attempts: retry *k* is due ``delays[k-1]`` after attempt *k* started.

    The contract's schedule is ``30m,30m,30m``: attempts at +0, +30, +60 and +90 minutes.
    """

    delays: tuple[timedelta, ...]

    @classmethod
    def parse(cls, text: str) -> RetrySchedule:
        """``"30m,30m,30m"`` → three retries, 30 minutes apart. ``""`` → no retries."""
        parts = [part for part in text.split(",") if part.strip()]
        delays = tuple(parse_duration(part) for part in parts)
        if any(delay <= timedelta(0) for delay in delays):
            raise ValueError("every retry delay must be positive")
        return cls(delays)

    @property
    def max_attempts(self) -> int:
        return len(self.delays) + 1

    def next_attempt_at(self, attempt: int, started_at: datetime) -> datetime | None:
        """When the attempt after attempt number ``attempt`` (1-based) is due; None: give up."""
        if attempt < 1:
            raise ValueError("attempts are numbered from 1")
        if attempt > len(self.delays):
            return None
        return started_at + self.delays[attempt - 1]

    def __str__(self) -> str:
        return ",".join(_format(delay) for delay in self.delays)


def _format(delay: timedelta) -> str:
    seconds = delay.total_seconds()
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"
