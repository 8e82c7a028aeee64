"""What the lists and overviews say of the apps' activity (``Store.app_activity``): totals
over several apps, per account, and the apps failing or lagging most."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

from ccpush.models import Account, App
from ccpush.pacing import HostLimits, Throttled
from ccpush.store.base import AppActivity

TOP: Final = 5
"""Apps shown in each of the overview's lists of the apps failing and lagging most."""


def sum_activity(activities: Iterable[AppActivity]) -> AppActivity:
    """Several apps' activity together: their counts added, the earliest due of any, the
    oldest waiting of any."""
    total = AppActivity(app_id="")
    for one in activities:
        dues = [due for due in (total.oldest_due, one.oldest_due) if due is not None]
        made = [when for when in (total.oldest_waiting, one.oldest_waiting) if when is not None]
        total = AppActivity(
            app_id="",
            delivered=total.delivered + one.delivered,
            failed=total.failed + one.failed,
            retried=total.retried + one.retried,
            held=total.held + one.held,
            pending=total.pending + one.pending,
            sending=total.sending + one.sending,
            oldest_due=min(dues, default=None),
            oldest_waiting=min(made, default=None),
        )
    return total


@dataclass(frozen=True, slots=True)
class AppLine:
    """An app, its account, and its activity."""

    app: App
    account: Account
    activity: AppActivity


@dataclass(frozen=True, slots=True)
class AccountLine:
    """An account, how many apps it has, and their activity together."""

    account: Account
    apps: int
    activity: AppActivity


@dataclass(frozen=True, slots=True)
class PlatformOverview:
    """Every account's activity over a day, the last hour's, and the apps to look at."""

    day: AppActivity
    hour: AppActivity
    accounts: tuple[AccountLine, ...]
    """The busiest first."""
    failing: tuple[AppLine, ...]
    """The apps with failed attempts in the day, most failed records first."""
    lagging: tuple[AppLine, ...]
    """The apps whose earliest due delivery has waited, longest first."""
    waiting_longest: tuple[AppLine, ...] = ()
    """The apps whose oldest waiting delivery has waited longest (retries included): with
    ``lagging``, it tells an app's retries waiting for their time from a late queue."""


def platform_overview(
    accounts: Sequence[Account],
    apps: Sequence[App],
    day: Mapping[str, AppActivity],
    hour: Mapping[str, AppActivity],
    now: datetime,
) -> PlatformOverview:
    """The overview of ``apps`` (of ``accounts``) from their activity over a day and an hour."""
    by_id = {account.id: account for account in accounts}
    lines = [
        AppLine(app, by_id[app.account_id], day.get(app.id, AppActivity(app_id=app.id)))
        for app in apps
        if app.account_id in by_id
    ]
    failing = sorted(
        (line for line in lines if line.activity.failed_attempts),
        key=lambda line: (-line.activity.failed, -line.activity.failed_attempts, line.app.name),
    )
    lagging = sorted(
        (line for line in lines if line.activity.lag(now)),
        key=lambda line: (-line.activity.lag(now), -line.activity.waiting, line.app.name),
    )
    waiting_longest = sorted(
        (line for line in lines if line.activity.waited(now)),
        key=lambda line: (-line.activity.waited(now), line.app.name),
    )
    return PlatformOverview(
        day=sum_activity(day.values()),
        hour=sum_activity(hour.values()),
        accounts=tuple(
            sorted((_account_line(account, lines) for account in accounts), key=_busiest)
        ),
        failing=tuple(failing[:TOP]),
        lagging=tuple(lagging[:TOP]),
        waiting_longest=tuple(waiting_longest[:TOP]),
    )


def throttled_hosts(limits: HostLimits, now: float, top: int = 2 * TOP) -> list[Throttled]:
    """The hosts this process holds pushes back from, the longest held then the most
    limited first (``now`` on the monotonic clock)."""
    found = limits.throttled(now)
    found.sort(key=lambda host: (-host.held_for, host.limit, host.host))
    return [replace(host, host=_without_userinfo(host.host)) for host in found[:top]]


def _without_userinfo(host: str) -> str:
    """``scheme://host:port`` of a pool key, without credentials written in the address."""
    scheme, _, rest = host.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


def _busiest(line: AccountLine) -> tuple[int, int, str]:
    """The accounts with the most attempts first, then the most waiting, then by name."""
    return (-line.activity.attempts, -line.activity.waiting, line.account.name)


def _account_line(account: Account, lines: Iterable[AppLine]) -> AccountLine:
    own = [line.activity for line in lines if line.account.id == account.id]
    return AccountLine(account, len(own), sum_activity(own))
