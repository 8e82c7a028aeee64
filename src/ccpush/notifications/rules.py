"""When an event is due, and when a failed notification is tried again: pure rules.

An app's events follow its state: ``app.failing`` once per failing streak (the app's
``failing_since``) that lasted ``failing_after``, ``app.auto_paused`` once when ccpush
paused it, ``app.recovered`` once a push succeeded after either. No kind is made twice for
an app within ``QUIET``: an event due sooner waits (it is decided again every round, and
made once the hour is over if the app is still in that state).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from ccpush.notifications.records import AppMark, AppWatch, EventType, NoticeState

QUIET: Final = timedelta(hours=1)
"""The least time between two events of one kind for one app."""
RETRY_DELAYS: Final = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(minutes=40),
)
"""The waits before each retry of a failed notification: 5 attempts over about an hour."""


@dataclass(frozen=True, slots=True)
class Due:
    """An event to make, and what the app's mark becomes (None: cleared)."""

    type: EventType
    mark: AppMark | None


def due_event(watch: AppWatch, now: datetime, failing_after: timedelta) -> Due | None:
    """The event due for ``watch``'s app at ``now``, if any."""
    due = _state_change(watch, now, failing_after)
    if due is None:
        return None
    last = watch.last_sent.get(due.type)
    if last is not None and now - last < QUIET:
        return None
    return due


def _state_change(watch: AppWatch, now: datetime, failing_after: timedelta) -> Due | None:
    app, mark = watch.app, watch.mark
    if app.paused and app.paused_reason is not None:
        if mark is not None and mark.state is NoticeState.PAUSED:
            return None
        paused = AppMark(state=NoticeState.PAUSED, since=now, streak=app.failing_since)
        return Due(EventType.APP_AUTO_PAUSED, paused)
    if not app.pushing:
        return None
    streak = app.failing_since
    if streak is not None:
        if now - streak < failing_after or (mark is not None and mark.streak == streak):
            return None
        return Due(
            EventType.APP_FAILING, AppMark(state=NoticeState.FAILING, since=now, streak=streak)
        )
    attempt = watch.last_attempt
    if mark is not None and attempt is not None and attempt.ok and attempt.started_at >= mark.since:
        return Due(EventType.APP_RECOVERED, None)
    return None


def next_attempt_at(attempts: int, now: datetime) -> datetime | None:
    """When a notification that has failed ``attempts`` times is tried again; None: never."""
    if attempts > len(RETRY_DELAYS):
        return None
    return now + RETRY_DELAYS[attempts - 1]


def may_notify_again(last: datetime | None, now: datetime) -> bool:
    """Whether an event of a kind last made at ``last`` for an app may be made at ``now``."""
    return last is None or now - last >= QUIET
