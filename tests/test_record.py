"""The record contract: what is accepted, what is refused (and why), and the exact JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from ccpush.record import FIELD_NAMES, CallRecord, parse_zone, problems_from, zone_label
from tests.conftest import minimal_record, sample_record


def problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        CallRecord.model_validate(data)
    return {p.field: p.reason for p in problems_from(caught.value)}


def test_the_model_has_the_contracts_23_fields() -> None:
    assert len(FIELD_NAMES) == 23


def test_the_seed_sample_round_trips() -> None:
    data = sample_record()
    assert json.loads(CallRecord.model_validate(data).push_body()) == data


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"callType": "2"}, "callType", "must be a JSON integer"),
        ({"callType": 2.0}, "callType", "must be a JSON integer"),
        ({"callType": True}, "callType", "must be a JSON integer"),
        ({"callType": -1}, "callType", "greater than or equal to 0"),
        ({"hangupReason": 1000}, "hangupReason", "less than or equal to 999"),
        ({"callDuration": -5}, "callDuration", "greater than or equal to 0"),
        ({"cost": 0.015}, "cost", "must be a JSON string"),
        ({"cost": "1e-3"}, "cost", 'decimal string such as "0.0150"'),
        ({"callStartTime": "2023-11-17T13:42:30"}, "callStartTime", "yyyy-MM-dd HH:mm:ss"),
        ({"callStartTime": "2023-02-30 10:00:00"}, "callStartTime", "not a real calendar time"),
        ({"callStartTime": "2023-11-17 24:00:00"}, "callStartTime", "not a real calendar time"),
        ({"callStartTime": "2023-11-17 13:42:60"}, "callStartTime", "not a real calendar time"),
        ({"callStartTime": "\uff12\uff10\uff12\uff13-11-17 13:42:30"}, "callStartTime", "HH:mm:ss"),
        ({"callStartTime": "2023-11-17 13:42:30Z"}, "callStartTime", "yyyy-MM-dd HH:mm:ss"),
        ({"callEndTime": "2023-11-17 13:42:00"}, "callEndTime", "before callStartTime"),
        ({"answerTime": "2023-11-17 13:42:00"}, "answerTime", "before callStartTime"),
        ({"answerTime": "2023-11-17 13:43:00"}, "callEndTime", "before answerTime"),
        ({"labels": "vip"}, "labels", "must be a JSON array of strings"),
        ({"labels": [1]}, "labels[0]", "must be a JSON string"),
        ({"callSessionId": ""}, "callSessionId", "at least 1 character"),
        ({"callSessionId": "a\nb"}, "callSessionId", "control characters"),
        ({"callSessionId": None}, "callSessionId", "must be a JSON string"),
        ({"extra": 1}, "extra", "is not a field of the call record contract"),
        ({"agentName": "x" * 257}, "agentName", "at most 256 characters"),
    ],
)
def test_bad_values_are_refused_with_field_and_reason(
    change: dict[str, Any], field: str, reason: str
) -> None:
    found = problems(sample_record(**change))
    assert field in found, found
    assert reason in found[field]


def test_required_fields() -> None:
    assert problems({}) == {
        name: "is required"
        for name in ("callSessionId", "callDuration", "callType", "callStartTime", "callEndTime")
    }


def test_unknown_enum_values_are_kept_for_receivers_to_tolerate() -> None:
    record = CallRecord.model_validate(sample_record(hangupReason=10, hangingDirection=2))
    assert (record.hangupReason, record.hangingDirection) == (10, 2)


@pytest.mark.parametrize(
    ("zone", "utc"),
    [
        ("+08:00", datetime(2023, 11, 17, 5, 42, 30, tzinfo=UTC)),
        ("UTC", datetime(2023, 11, 17, 13, 42, 30, tzinfo=UTC)),
        ("-05:30", datetime(2023, 11, 17, 19, 12, 30, tzinfo=UTC)),
        ("Asia/Shanghai", datetime(2023, 11, 17, 5, 42, 30, tzinfo=UTC)),
    ],
)
def test_call_start_is_read_in_the_record_zone(zone: str, utc: datetime) -> None:
    record = CallRecord.model_validate(sample_record())
    assert record.call_start(parse_zone(zone)) == utc


@pytest.mark.parametrize("text", ["+8", "+15:00", "Mars/Olympus", "08:00"])
def test_bad_zones_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="time zone"):
        parse_zone(text)


@pytest.mark.parametrize("text", ["+08:00", "-05:30", "+00:00", "Asia/Shanghai"])
def test_zone_labels_round_trip(text: str) -> None:
    assert zone_label(parse_zone(text)) == text


times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31))
text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=0, max_size=40)
money = st.decimals(min_value=0, max_value=10**6, places=4).map(str)


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    start = draw(times).replace(microsecond=0)
    ring = draw(st.integers(0, 120))
    talk = draw(st.integers(0, 7200))
    answered = draw(st.booleans())
    fmt = "%Y-%m-%d %H:%M:%S"
    answer = start + timedelta(seconds=ring)
    end = answer + timedelta(seconds=talk) if answered else answer
    return minimal_record(
        draw(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)),
        callType=draw(st.integers(1, 3)),
        callDuration=talk if answered else 0,
        callStartTime=start.strftime(fmt),
        answerTime=answer.strftime(fmt) if answered else None,
        callEndTime=end.strftime(fmt),
        agentName=draw(st.none() | text),
        labels=draw(st.lists(text.filter(bool), max_size=5)),
        cost=draw(st.none() | money),
        hangupReason=draw(st.none() | st.integers(0, 999)),
    )


@given(records())
def test_any_valid_record_round_trips_through_its_push_body(data: dict[str, Any]) -> None:
    body = json.loads(CallRecord.model_validate(data).push_body())
    assert list(body) == list(FIELD_NAMES)
    assert {k: v for k, v in body.items() if k in data} == data


@given(records(), st.sampled_from(["callType", "hangupReason", "hangingDirection", "callDuration"]),
       st.one_of(st.integers(max_value=-1), st.integers(min_value=10**8)))  # fmt: skip
def test_out_of_range_integers_are_refused(data: dict[str, Any], field: str, value: int) -> None:
    assert field in problems({**data, field: value})
