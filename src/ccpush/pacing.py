"""How many pushes may be in flight, per host and per app: pure rules, no I/O.

``HostLimits``: each host's own in-flight limit, adapting to how the host answers
(additive increase, multiplicative decrease): it starts at ``HostRules.start``, grows while
the host answers at its usual latency (by one per answer until the host first fails, then
by one per window of answers), halves on a 5xx, and drops to ``HostRules.floor`` on a
timeout or a refused connection; a host that says 429 or 503 is also held (no new push)
for its ``Retry-After`` (capped) or an adaptive pause.

``FairShare``: which app may take a pusher once most of them are busy.

Times are seconds on a monotonic clock, given by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Final

from ccpush.models import ErrorKind, Outcome

HOSTS_KEPT: Final = 16_384
"""Hosts whose limit ``HostLimits`` remembers; the least recently heard of is forgotten."""
RETRY_AFTER_CAP: Final = 300.0
"""The longest a receiver's Retry-After holds its host, in seconds."""


class Signal(Enum):
    """What an attempt's outcome says of its host's capacity."""

    FINE = "fine"
    """Answered (any status but the ones below): the host keeps up."""
    OVERLOADED = "overloaded"
    """A 5xx (but 503): the host struggles."""
    UNREACHABLE = "unreachable"
    """Timed out or could not be connected to."""
    BACK_OFF = "back_off"
    """429 or 503: the host asks to be left alone for a while."""


BACK_OFF_STATUSES: Final = frozenset({429, 503})


def signal_of(outcome: Outcome) -> Signal:
    kind = outcome.error_kind
    if kind in (ErrorKind.TIMEOUT, ErrorKind.CONNECT, ErrorKind.TLS):
        return Signal.UNREACHABLE
    status = outcome.status_code
    if status in BACK_OFF_STATUSES:
        return Signal.BACK_OFF
    if status is not None and status >= 500:
        return Signal.OVERLOADED
    return Signal.FINE


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Seconds a ``Retry-After`` value asks to wait (delta-seconds or an HTTP-date), at
    most ``RETRY_AFTER_CAP``; None if absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), RETRY_AFTER_CAP)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max((when - now).total_seconds(), 0.0), RETRY_AFTER_CAP)


@dataclass(frozen=True, slots=True, kw_only=True)
class HostRules:
    maximum: int = 64
    """The most pushes in flight to one host (``CCPUSH_PER_HOST_CONCURRENCY``)."""
    start: int = 4
    floor: int = 1
    """Where a host that times out or refuses connections drops to."""
    slower: float = 2.0
    """Latency above this many times the host's usual stops the limit growing."""
    first_pause: float = 1.0
    last_pause: float = 60.0
    """Seconds a 429/503 without Retry-After holds its host: doubling from first to last."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Throttled:
    """A host pushes are held back from (``HostLimits.throttled``)."""

    host: str
    reason: str
    """``back_off``: it answered 429 or 503; ``limited``: its limit was cut below the start."""
    limit: int
    """The pushes it may have in flight at once."""
    usual: float | None
    """Its usual latency in seconds (None before its first answer)."""
    held_for: float
    """Seconds until it may be pushed to again (0: not held, only limited)."""


@dataclass(slots=True)
class _Host:
    window: float
    usual: float | None = None
    """The host's usual latency (a moving average)."""
    starting: bool = True
    """Until its first failure, the limit grows by one per answer, not per window."""
    held_until: float = 0.0
    pause: float = 0.0


class HostLimits:
    """Per host, how many pushes may be in flight at once, and whether it is held."""

    def __init__(self, rules: HostRules, *, kept: int = HOSTS_KEPT) -> None:
        self.rules = rules
        self._start = float(min(rules.start, rules.maximum))
        self._kept = kept
        self._hosts: dict[str, _Host] = {}

    def limit(self, host: str) -> int:
        known = self._hosts.get(host)
        return int(known.window) if known else int(self._start)

    def held_until(self, host: str, now: float) -> float | None:
        """When ``host`` may be pushed to again, if it is held now."""
        known = self._hosts.get(host)
        return known.held_until if known and known.held_until > now else None

    def hosts(self) -> int:
        return len(self._hosts)

    def throttled(self, now: float) -> list[Throttled]:
        """The hosts held back now: held after a 429 or 503 (``back_off``), or limited
        below the start after timeouts, refused connections or 5xx (``limited``)."""
        start = self._start
        return [
            Throttled(
                host=host,
                reason="back_off" if state.held_until > now else "limited",
                limit=int(state.window),
                usual=state.usual,
                held_for=max(state.held_until - now, 0.0),
            )
            for host, state in self._hosts.items()
            if state.held_until > now or state.window < start
        ]

    def throttled_count(self, reason: str, now: float) -> int:
        """How many hosts ``throttled`` gives with ``reason`` (for ``/metrics``)."""
        start = self._start
        if reason == "back_off":
            return sum(1 for state in self._hosts.values() if state.held_until > now)
        return sum(
            1 for state in self._hosts.values() if state.held_until <= now and state.window < start
        )

    def record(
        self,
        host: str,
        signal: Signal,
        latency: float,
        now: float,
        retry_after: float | None = None,
    ) -> None:
        """Learn from one attempt to ``host`` that took ``latency`` seconds."""
        state = self._state(host)
        rules = self.rules
        if signal is Signal.FINE:
            state.pause = 0.0
            usual = state.usual
            if usual is None or latency <= usual * rules.slower:
                step = 1.0 if state.starting else 1.0 / state.window
                state.window = min(float(rules.maximum), state.window + step)
            state.usual = latency if usual is None else usual * 0.8 + latency * 0.2
            return
        state.starting = False
        if signal is Signal.UNREACHABLE:
            state.window = float(rules.floor)
        elif state.held_until > now:
            # Answers to pushes sent before the hold began: the hold covers them, but the
            # longest Retry-After holds.
            if retry_after is not None:
                state.held_until = max(state.held_until, now + retry_after)
        else:
            state.window = max(float(rules.floor), state.window / 2)
            if signal is Signal.BACK_OFF:
                if retry_after is None:
                    state.pause = min(rules.last_pause, max(rules.first_pause, 2 * state.pause))
                    retry_after = state.pause
                state.held_until = now + retry_after

    def _state(self, host: str) -> _Host:
        hosts = self._hosts
        state = hosts.pop(host, None)
        if state is None:
            state = _Host(self._start)
            if len(hosts) >= self._kept:
                del hosts[next(iter(hosts))]  # the least recently heard of
        hosts[host] = state
        return state


@dataclass(frozen=True, slots=True)
class FairShare:
    """Which app may take one more pusher. While more than a quarter of the ``concurrency``
    pushers are free, any app; then only an app under an equal share that leaves room for
    one more app (``concurrency`` // (apps with work + 1), at least one): an app that
    starts sending finds a pusher although others' pushes hang."""

    concurrency: int

    @property
    def shared_from(self) -> int:
        """Pushes in flight from which an app at its share waits."""
        return self.concurrency - self.concurrency // 4

    def share(self, apps_with_work: int) -> int:
        return max(1, self.concurrency // (apps_with_work + 1))

    def may_take(self, busy: int, in_flight: int, apps_with_work: int) -> bool:
        """Whether an app with ``busy`` pushes in flight may start one more."""
        return not busy or in_flight < self.shared_from or busy < self.share(apps_with_work)
