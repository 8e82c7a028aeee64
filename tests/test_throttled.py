"""What an operator sees of throttled hosts and waiting apps, as tables: the hosts held back
(``HostLimits.throttled``), how ``/metrics`` counts them, and the overview's apps waiting
longest (their retries included) beside the late ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ccpush.models import Account, App
from ccpush.pacing import HostLimits, HostRules, Signal
from ccpush.store.base import AppActivity
from ccpush.web.activity import TOP, platform_overview, sum_activity, throttled_hosts

NOW = datetime(2026, 3, 9, 2, 20, tzinfo=UTC)
FINE, UNREACHABLE, BACK_OFF, OVERLOADED = (
    Signal.FINE,
    Signal.UNREACHABLE,
    Signal.BACK_OFF,
    Signal.OVERLOADED,
)


def limits_after(answers: dict[str, list[tuple[Signal, float | None]]]) -> HostLimits:
    """Limits that heard, at t=10 s, each host's answers (signal, Retry-After)."""
    limits = HostLimits(HostRules(start=4, maximum=16))
    for host, heard in answers.items():
        for signal, retry_after in heard:
            limits.record(host, signal, 0.05, 10.0, retry_after)
    return limits


@pytest.mark.parametrize(
    ("heard", "at", "reason", "limit", "held_for"),
    [
        ([(FINE, None)], 11.0, None, 5, None),  # growing: not throttled
        ([(UNREACHABLE, None)], 11.0, "limited", 1, 0.0),
        ([(OVERLOADED, None)], 11.0, "limited", 2, 0.0),
        ([(BACK_OFF, 120.0)], 11.0, "back_off", 2, 119.0),
        ([(BACK_OFF, None)], 10.5, "back_off", 2, 0.5),  # the adaptive first pause, 1 s
        ([(BACK_OFF, None)], 12.0, "limited", 2, 0.0),  # the pause is over; still halved
        ([(FINE, None)] * 4 + [(OVERLOADED, None)], 11.0, None, 4, None),  # 8 halved
    ],
)
def test_a_host_is_throttled_while_held_or_below_its_start(
    heard: list[tuple[Signal, float | None]],
    at: float,
    reason: str | None,
    limit: int,
    held_for: float | None,
) -> None:
    limits = limits_after({"https://h": heard})
    found = limits.throttled(at)
    assert limits.limit("https://h") == limit
    if reason is None:
        assert found == []
    else:
        [host] = found
        assert (host.host, host.reason, host.limit, host.held_for) == (
            "https://h",
            reason,
            limit,
            held_for,
        )
        assert host.usual == (0.05 if heard[0][0] is FINE else None)
    for why in ("back_off", "limited"):
        assert limits.throttled_count(why, at) == (why == reason)


def test_the_longest_held_come_first_without_credentials() -> None:
    limits = limits_after(
        {
            "https://a": [(BACK_OFF, 30.0)],
            "https://user:pw@b": [(BACK_OFF, 90.0)],
            "https://c": [(UNREACHABLE, None)],
            "https://d": [(OVERLOADED, None)],
            "https://ok": [(FINE, None)],
        }
    )
    shown = throttled_hosts(limits, 10.0)
    assert [(host.host, host.reason) for host in shown] == [
        ("https://b", "back_off"),
        ("https://a", "back_off"),
        ("https://c", "limited"),  # limited to 1 before limited to 2
        ("https://d", "limited"),
    ]
    assert len(throttled_hosts(limits, 10.0, top=2)) == 2


def account(name: str) -> Account:
    return Account(id=f"acc_{name}", name=name, created_at=NOW)


def app(name: str, owner: Account) -> App:
    return App(
        id=f"app_{name}",
        account_id=owner.id,
        name=name,
        push_url="https://crm.example.com/cdr",
        paused=False,
        signing=True,
        created_at=NOW,
        updated_at=NOW,
    )


def test_the_overview_tells_waiting_retries_from_a_late_queue() -> None:
    acme = account("Acme")
    apps = [app(name, acme) for name in ("retrying", "late", "fresh", "idle")]
    hour = timedelta(hours=1)
    day = {
        # its record failed an hour ago and waits for its retry, due in 29 minutes
        "app_retrying": AppActivity(
            app_id="app_retrying",
            pending=1,
            oldest_due=NOW + timedelta(minutes=29),
            oldest_waiting=NOW - hour,
        ),
        # its records are due and wait for a worker
        "app_late": AppActivity(
            app_id="app_late",
            pending=40,
            oldest_due=NOW - timedelta(minutes=5),
            oldest_waiting=NOW - timedelta(minutes=5),
        ),
        "app_fresh": AppActivity(
            app_id="app_fresh", sending=2, oldest_waiting=NOW - timedelta(seconds=1)
        ),
        "app_idle": AppActivity(app_id="app_idle", delivered=9),
    }
    overview = platform_overview([acme], apps, day, {}, NOW)
    assert [line.app.name for line in overview.waiting_longest] == ["retrying", "late", "fresh"]
    assert [line.app.name for line in overview.lagging] == ["late"]
    assert overview.waiting_longest[0].activity.waited(NOW) == hour
    assert overview.waiting_longest[0].activity.lag(NOW) == timedelta(0)
    assert sum_activity(day.values()).oldest_waiting == NOW - hour


def test_waiting_longest_lists_no_more_than_the_top_apps() -> None:
    acme = account("Acme")
    apps = [app(f"a{n}", acme) for n in range(TOP * 2)]
    day = {
        item.id: AppActivity(app_id=item.id, held=1, oldest_waiting=NOW - timedelta(minutes=n))
        for n, item in enumerate(apps, start=1)
    }
    overview = platform_overview([acme], apps, day, {}, NOW)
    assert len(overview.waiting_longest) == TOP
    assert overview.waiting_longest[0].app.name == f"a{TOP * 2 - 1}"
