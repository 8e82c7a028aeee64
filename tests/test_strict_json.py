"""The strict JSON reader shared by the API, the broker sources and the FreeSWITCH route."""

from __future__ import annotations

from typing import Any

import pytest

from ccpush.strict_json import JsonRefused, loads, loads_bytes


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"a": 1, "a": 2}', "the thing is refused: the key 'a' appears twice in one object"),
        (b'[{"b": [{"c": 1, "c": 1}]}]', "the key 'c' appears twice"),
        (b"[NaN]", "the thing is refused: NaN is not a JSON number"),
        (b'{"x": -Infinity}', "-Infinity is not a JSON number"),
        (b"[1.5e400]", "the thing is refused: the number 1.5e400 is out of range"),
        (b"[" + b"9" * 5000 + b"]", "the thing is not valid JSON"),
        (b"[" * 5000 + b"]" * 5000, "the thing nests arrays and objects too deeply"),
        (b'{"a": 1,}', "the thing is not valid JSON"),
        (b'"\xff"', "the thing is not UTF-8 (byte 1)"),
        (b'["tab\tin a string"]', "the thing is not valid JSON"),
    ],
)
def test_what_is_refused_and_how_it_is_said(body: bytes, says: str) -> None:
    with pytest.raises(JsonRefused) as refused:
        loads_bytes(body, "the thing")
    assert says in str(refused.value)


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (b'{"a": 1, "b": {"a": 2}}', {"a": 1, "b": {"a": 2}}),  # one key per object
        (b"[9223372036854775808, -1.5e300]", [9223372036854775808, -1.5e300]),
        (b'["\\u00e9t\\u00e9", "\xe4\xb8\xad"]', ["été", "中"]),
    ],
)
def test_what_is_taken(body: bytes, value: Any) -> None:
    assert loads_bytes(body, "the thing") == value


def test_deep_nesting_within_the_parsers_reach_is_taken() -> None:
    value = loads_bytes(b"[" * 500 + b"]" * 500, "the thing")
    depth = 0
    while value:
        value, depth = value[0], depth + 1
    assert depth == 499


def test_control_characters_in_strings_only_when_allowed() -> None:
    assert loads('["a\r\nb"]', "the CDR", control_characters=True) == ["a\r\nb"]
    with pytest.raises(JsonRefused):
        loads('["a\r\nb"]', "the CDR")
