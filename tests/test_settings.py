"""Settings: text from the environment (or the command line) parsed once into typed values,
with the README's names, syntax and defaults."""

from __future__ import annotations

import re
from datetime import UTC, timedelta, timezone
from ipaddress import ip_network
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from ccpush.retry import RetrySchedule
from ccpush.settings import Settings, env_name
from ccpush.wire import zone_label

README = Path(__file__).parent.parent / "README.md"


@pytest.fixture(autouse=True)
def _no_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: none of the machine's ``CCPUSH_*`` variables."""
    for name in Settings.model_fields:
        monkeypatch.delenv(env_name(name), raising=False)


@pytest.mark.parametrize(
    ("variable", "text", "value"),
    [
        ("retry_schedule", "1s,2m", RetrySchedule((timedelta(seconds=1), timedelta(minutes=2)))),
        (
            "retry_schedule",
            " 30m , 1.5h ",
            RetrySchedule((timedelta(minutes=30), timedelta(hours=1.5))),
        ),
        ("retry_schedule", "", RetrySchedule(())),
        ("lease", "90s", timedelta(seconds=90)),
        ("lease", "1.5h", timedelta(hours=1.5)),
        ("rotation_overlap", "250ms", timedelta(milliseconds=250)),
        ("rotation_overlap", "2d", timedelta(days=2)),
        ("record_timezone", "Asia/Shanghai", ZoneInfo("Asia/Shanghai")),
        ("record_timezone", "-05:30", timezone(-timedelta(hours=5, minutes=30))),
        ("record_timezone", "utc", UTC),
        ("auto_pause_after", "12h", timedelta(hours=12)),
        ("auto_pause_after", "off", None),
        ("auto_pause_after", " OFF ", None),
        ("allowed_target_networks", "", ()),
        (
            "allowed_target_networks",
            "10.20.0.0/16, fd00:1::/64",
            (ip_network("10.20.0.0/16"), ip_network("fd00:1::/64")),
        ),
    ],
)
def test_text_is_parsed_once_into_typed_values(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, value: Any
) -> None:
    assert getattr(Settings(**{variable: text}), variable) == value  # as a CLI option
    monkeypatch.setenv(env_name(variable), text)
    assert getattr(Settings(), variable) == value


@pytest.mark.parametrize(
    ("variable", "text", "reason"),
    [
        ("retry_schedule", "soon", "'soon' is not a duration"),
        ("retry_schedule", "30m,0s", "every retry delay must be positive"),
        ("retry_schedule", '["30m"]', "is not a duration"),
        ("lease", "PT60S", "'PT60S' is not a duration"),
        ("lease", "60", "'60' is not a duration"),
        ("rotation_overlap", "1 day", "is not a duration"),
        ("record_timezone", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("record_timezone", "+15:00", "out of range"),
        ("auto_pause_after", "never", "'never' is not a duration"),
        ("allowed_target_networks", "10.0.0.0/8, junk", "allowed target network 'junk'"),
    ],
)
def test_bad_text_is_refused_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, reason: str
) -> None:
    monkeypatch.setenv(env_name(variable), text)
    with pytest.raises(ValidationError, match=re.escape(reason)) as caught:
        Settings()
    [error] = caught.value.errors()
    assert error["loc"] == (variable,)


def test_the_defaults_are_the_documented_ones() -> None:
    settings = Settings()
    assert str(settings.retry_schedule) == "30m,30m,30m"
    assert settings.lease == timedelta(seconds=60)
    assert settings.rotation_overlap == timedelta(hours=24)
    assert zone_label(settings.record_timezone) == "+08:00"
    assert settings.auto_pause_after == timedelta(days=3)
    assert settings.target_policy.allowed_networks == ()
    assert not settings.target_policy.only_allowed


def test_values_given_in_python_are_taken_as_they_are_or_refused() -> None:
    schedule = RetrySchedule((timedelta(minutes=1),))
    settings = Settings(
        retry_schedule=schedule,
        lease=timedelta(seconds=90),
        record_timezone=UTC,
        auto_pause_after=None,
        allowed_target_networks=[ip_network("127.0.0.0/8")],
    )
    assert settings.retry_schedule is schedule
    assert settings.lease == timedelta(seconds=90)
    assert settings.auto_pause_after is None
    assert settings.upkeep.auto_pause_after is None
    assert settings.target_policy.allowed_networks == (ip_network("127.0.0.0/8"),)
    with pytest.raises(ValidationError, match="must be given as text, not as int"):
        Settings(lease=60)


def test_a_lease_no_longer_than_the_push_timeout_is_refused_by_variable() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(lease="15s", push_timeout=15)
    [error] = caught.value.errors()
    assert error["loc"] == ()
    assert "CCPUSH_LEASE (15s) must be longer than CCPUSH_PUSH_TIMEOUT (15s)" in error["msg"]


def _readme_variables() -> set[str]:
    section = README.read_text(encoding="utf-8").split("## Configuration", 1)[1]
    table = section.split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `CCPUSH_")]
    return {name for row in rows for name in re.findall(r"`(CCPUSH_[A-Z_]+)`", row)}


def test_every_variable_in_the_readme_table_is_a_setting() -> None:
    documented = _readme_variables()
    assert {"CCPUSH_RETRY_SCHEDULE", "CCPUSH_HOST", "CCPUSH_PORT"} <= documented
    assert documented <= {env_name(name) for name in Settings.model_fields}
