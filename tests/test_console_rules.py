"""The console's pure rules, as tables: times typed as they are shown, how long something
waited, which text may be a callSessionId, and what the overviews add up and rank."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ccpush.models import Account, App
from ccpush.store.base import AppActivity
from ccpush.web.activity import TOP, platform_overview, sum_activity
from ccpush.web.forms import local_value, parse_local
from ccpush.web.pages import age, shown_time
from ccpush.web.search import searchable_session_id
from ccpush.wire import parse_zone

ZONE = parse_zone("+08:00")
NOW = datetime(2026, 3, 9, 2, 20, tzinfo=UTC)  # 10:20 at +08:00


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("2026-03-09 10:20:00 UTC+08:00", datetime(2026, 3, 9, 2, 20, tzinfo=UTC)),
        ("2026-03-09 10:20:00", datetime(2026, 3, 9, 2, 20, tzinfo=UTC)),
        ("  2026-03-09 10:20  ", datetime(2026, 3, 9, 2, 20, tzinfo=UTC)),
        ("2026-03-09", datetime(2026, 3, 8, 16, 0, tzinfo=UTC)),
        ("2026-03-09 10:20:00 UTC", datetime(2026, 3, 9, 10, 20, tzinfo=UTC)),
        ("2026-03-09 10:20:00 utc-05:30", datetime(2026, 3, 9, 15, 50, tzinfo=UTC)),
        ("2026-03-09T10:20", datetime(2026, 3, 9, 2, 20, tzinfo=UTC)),
        ("", None),
        ("   ", None),
    ],
)
def test_a_time_is_typed_as_the_console_shows_it(typed: str, meant: datetime | None) -> None:
    assert parse_local(typed, ZONE) == meant


@pytest.mark.parametrize(
    "typed",
    [
        "soon",
        "09/03/2026 10:20",
        "2026-03-09 10:20:00 UTC+99:00",
        "2026-03-09 10:20:00 GMT",
        "2026-02-30 10:00:00",
        "1900-01-01 00:00:00",
    ],
)
def test_what_is_not_such_a_time_is_refused(typed: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_local(typed, ZONE)


def test_a_field_shows_a_time_as_the_page_does_and_reads_it_back() -> None:
    shown = local_value(NOW, ZONE)
    assert shown == shown_time(NOW, ZONE) == "2026-03-09 10:20:00 UTC+08:00"
    assert parse_local(shown, ZONE) == NOW
    assert parse_local(local_value(NOW, UTC), ZONE) == NOW
    assert local_value(None, ZONE) == ""


@pytest.mark.parametrize(
    ("waited", "said"),
    [
        (timedelta(0), "under 1 s"),
        (timedelta(milliseconds=900), "under 1 s"),
        (timedelta(seconds=42), "42 s"),
        (timedelta(minutes=1, seconds=59), "1 min"),
        (timedelta(minutes=59), "59 min"),
        (timedelta(hours=1), "1 h"),
        (timedelta(hours=3, minutes=20), "3 h 20 min"),
        (timedelta(days=1), "1 d"),
        (timedelta(days=2, hours=4, minutes=30), "2 d 4 h"),
    ],
)
def test_how_long_something_waited(waited: timedelta, said: str) -> None:
    assert age(waited) == said


@pytest.mark.parametrize(
    ("text", "searchable"),
    [
        ("23111713424802472", True),
        ("call with spaces", True),
        ("x" * 256, True),
        ("x" * 257, False),
        ("", False),
        ("nul\x00inside", False),
        ("tab\tinside", False),
    ],
)
def test_which_text_may_be_a_call_session_id(text: str, searchable: bool) -> None:
    assert searchable_session_id(text) is searchable


def test_activities_add_up_and_keep_the_earliest_due() -> None:
    early, late = NOW - timedelta(minutes=9), NOW - timedelta(minutes=1)
    total = sum_activity(
        [
            AppActivity(app_id="a", delivered=5, failed=1, retried=2, pending=3, oldest_due=late),
            AppActivity(app_id="b", delivered=1, held=4, sending=1),
            AppActivity(app_id="c", pending=1, oldest_due=early),
        ]
    )
    assert total == AppActivity(
        app_id="", delivered=6, failed=1, retried=2, held=4, pending=4, sending=1, oldest_due=early
    )
    assert (total.attempts, total.failed_attempts, total.waiting) == (9, 3, 9)
    assert total.lag(NOW) == timedelta(minutes=9)
    assert AppActivity(app_id="d", oldest_due=NOW + timedelta(minutes=1)).lag(NOW) == timedelta(0)
    assert sum_activity([]) == AppActivity(app_id="")


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


def test_the_platform_overview_ranks_the_apps_failing_and_lagging_most() -> None:
    acme, globex, empty = account("Acme"), account("Globex"), account("Empty")
    apps = [app(f"a{n}", acme) for n in range(TOP + 2)] + [app("g", globex)]
    day = {
        "app_a0": AppActivity(app_id="app_a0", delivered=10, retried=1),
        "app_a1": AppActivity(app_id="app_a1", failed=2, retried=6),
        "app_a2": AppActivity(app_id="app_a2", failed=2, retried=1),
        "app_a3": AppActivity(app_id="app_a3", delivered=3, pending=1, oldest_due=NOW),
        "app_a4": AppActivity(app_id="app_a4", pending=5, oldest_due=NOW - timedelta(hours=1)),
        "app_g": AppActivity(app_id="app_g", failed=1, held=9, oldest_due=None),
        "app_gone": AppActivity(app_id="app_gone", delivered=100),  # deleted since
    }
    hour = {"app_a0": AppActivity(app_id="app_a0", delivered=2)}
    overview = platform_overview([empty, globex, acme], apps, day, hour, NOW)
    assert [line.app.name for line in overview.failing] == ["a1", "a2", "g", "a0"]
    assert [line.app.name for line in overview.lagging] == ["a4"]
    assert [(line.account.name, line.apps) for line in overview.accounts] == [  # busiest first
        ("Acme", TOP + 2),
        ("Globex", 1),
        ("Empty", 0),
    ]
    assert overview.accounts[0].activity.delivered == 13
    assert overview.accounts[1].activity.held == 9
    assert overview.day.delivered == 113  # every app the store counted
    assert overview.hour.delivered == 2


def test_the_overview_lists_no_more_than_the_top_apps() -> None:
    acme = account("Acme")
    apps = [app(f"a{n}", acme) for n in range(TOP * 2)]
    day = {
        item.id: AppActivity(app_id=item.id, failed=n, pending=1, oldest_due=NOW - timedelta(n))
        for n, item in enumerate(apps, start=1)
    }
    overview = platform_overview([acme], apps, day, {}, NOW)
    assert [line.activity.failed for line in overview.failing] == list(range(TOP * 2, TOP, -1))
    assert len(overview.lagging) == TOP
    assert overview.lagging[0].app.name == f"a{TOP * 2 - 1}"
