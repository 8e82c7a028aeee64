"""The record contract: what is accepted, what is refused (and why), and the exact JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from ccpush.record import FIELD_NAMES, CallRecord, problems_from
from ccpush.wire import parse_zone, zone_label
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
        ({"agentName": "x" * 4097}, "agentName", "at most 4096 characters"),
        ({"agentName": "a\ud800b"}, "agentName", "lone surrogate"),
        ({"labels": [""]}, "labels[0]", "at least 1 character"),
    ],
)
def test_bad_values_are_refused_with_field_and_reason(
    change: dict[str, Any], field: str, reason: str
) -> None:
    found = problems(sample_record(**change))
    assert field in found, found
    assert reason in found[field]


# The published limits, in characters (Unicode code points): the numbers are the contract.
LIMITS = [
    ("callId", 256), ("callSessionId", 256), ("called", 256), ("calledInfo", 4096),
    ("caller", 256), ("ccode", 256), ("ccodeName", 4096), ("agentName", 4096),
    ("agentGroupName", 4096), ("agentAccount", 256), ("hangupCode", 256), ("remark", 4096),
    ("voiceUrl", 4096),
]  # fmt: skip
TEXT_FIELDS = [field for field, _ in LIMITS]


@pytest.mark.parametrize(("field", "limit"), LIMITS)
@pytest.mark.parametrize("char", ["x", "录", "\U0001f4de"])
def test_every_text_field_holds_up_to_its_limit_of_characters(
    field: str, limit: int, char: str
) -> None:
    record = CallRecord.model_validate(sample_record(**{field: char * limit}))
    assert json.loads(record.push_body())[field] == char * limit
    assert problems(sample_record(**{field: char * (limit + 1)})) == {
        field: f"String should have at most {limit} characters"
    }


def test_labels_hold_up_to_100_labels_of_4096_characters() -> None:
    labels = [f"{n:04d}" + "标签" * 2046 for n in range(100)]
    assert CallRecord.model_validate(sample_record(labels=labels)).labels == labels
    assert "at most 100 items" in problems(sample_record(labels=[*labels, "one more"]))["labels"]
    assert problems(sample_record(labels=["ok", "x" * 4097])) == {
        "labels[1]": "String should have at most 4096 characters"
    }


def test_the_limits_are_published_in_the_json_schema() -> None:
    properties = CallRecord.model_json_schema()["properties"]

    def max_length(field: str) -> int:
        schema = properties[field]
        return int(
            next(s for s in schema.get("anyOf", [schema]) if s["type"] == "string")["maxLength"]
        )

    assert {field: max_length(field) for field in TEXT_FIELDS} == dict(LIMITS)
    assert (properties["labels"]["maxItems"], properties["labels"]["items"]["maxLength"]) == (
        100,
        4096,
    )


CONTROLS = ["\x00", "\x01", "\x07", "\x08", "\x0b", "\x0c", "\x0e", "\x1b", "\x1f", "\x7f"]


@pytest.mark.parametrize("field", [*TEXT_FIELDS, "labels[1]"])
@pytest.mark.parametrize("control", CONTROLS)
def test_control_characters_are_refused_in_every_text_field(field: str, control: str) -> None:
    value = f"ab{control}c"
    change = {"labels": ["fine", value]} if field == "labels[1]" else {field: value}
    reason = problems(sample_record(**change))[field]
    assert "must not contain control characters" in reason
    assert f"(U+{ord(control):04X} at character 3)" in reason


@pytest.mark.parametrize("field", [name for name in TEXT_FIELDS if name != "callSessionId"])
def test_tab_cr_and_lf_are_text(field: str) -> None:
    value = "line one\r\n\tline two\n"
    record = CallRecord.model_validate(sample_record(**{field: value}))
    assert getattr(record, field) == value


@pytest.mark.parametrize("control", ["\t", "\r", "\n"])
def test_a_session_id_holds_no_control_character_at_all(control: str) -> None:
    reason = problems(sample_record(f"s{control}1"))["callSessionId"]
    assert reason == f"must not contain control characters (U+{ord(control):04X} at character 2)"


def test_non_ascii_text_is_pushed_as_utf8_unescaped() -> None:
    texts = {
        "calledInfo": "北京市朝阳区 移动用户 " * 150,
        "agentName": "प्रिया शर्मा",
        "remark": "Customer 😀 asked for a callback 📞 — नमस्ते, 你好 " * 40,
        "labels": ["高意向客户", "उच्च स्तर", "⭐⭐⭐"],
    }
    body = CallRecord.model_validate(sample_record(**texts)).push_body()
    assert b"\\u" not in body
    for field, value in texts.items():
        pushed = json.dumps({field: value}, ensure_ascii=False, separators=(",", ":"))
        assert pushed[1:-1].encode() in body


@pytest.mark.parametrize(
    ("time", "reason"),
    [
        ("0001-01-01 07:59:59", "must be a time in the years 1970 to 2099"),
        ("0001-01-01 08:00:00", "must be a time in the years 1970 to 2099"),
        ("0000-01-01 00:00:00", "must be a time in the years 1970 to 2099"),
        ("1969-12-31 23:59:59", "must be a time in the years 1970 to 2099"),
        ("2100-01-01 00:00:00", "must be a time in the years 1970 to 2099"),
        ("9999-12-31 23:59:59", "must be a time in the years 1970 to 2099"),
        ("2024-02-30 10:00:00", "is not a real calendar time (yyyy-MM-dd HH:mm:ss)"),
        ("2023-02-29 10:00:00", "is not a real calendar time (yyyy-MM-dd HH:mm:ss)"),
    ],
)
@pytest.mark.parametrize("field", ["callStartTime", "answerTime", "callEndTime"])
def test_times_out_of_range_are_refused(field: str, time: str, reason: str) -> None:
    assert problems(sample_record(**{field: time}))[field] == reason


@pytest.mark.parametrize(
    ("start", "zone"),
    [
        ("1970-01-01 00:00:00", "+14:00"),
        ("2099-12-31 23:59:59", "-12:00"),
        ("2024-02-29 12:00:00", "Asia/Kolkata"),
    ],
)
def test_the_extreme_times_convert_to_utc_in_any_zone(start: str, zone: str) -> None:
    record = CallRecord.model_validate(minimal_record("s", callStartTime=start, callEndTime=start))
    utc = record.call_start(parse_zone(zone))
    assert utc.tzinfo is UTC
    assert utc.astimezone(parse_zone(zone)).strftime("%Y-%m-%d %H:%M:%S") == start


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


times = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2099, 12, 31))
# Any text but lone surrogates and the refused controls (C1 controls, U+0080..U+009F, are text)
refused_controls = "".join(map(chr, [*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]))
text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters=refused_controls),
    min_size=0,
    max_size=40,
)
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
