"""Reading JSON strictly, wherever it comes from (an API body, a broker's message, a
FreeSWITCH CDR): what ``json.loads`` lets through but no sender means is refused with a
``JsonRefused`` naming the problem. Standard library only, and nothing of ccpush's: the
API, the sources and the FreeSWITCH mapping all import it.

Refused: bytes that are not UTF-8, text that is not JSON, a key given twice in one object
(which of the two would win is the parser's whim), ``NaN`` and ``Infinity`` (not JSON),
numbers beyond a float's range, integers of more digits than Python reads (4,300), and
nesting deeper than the parser's recursion limit (about a thousand levels). Integers are
bounded by the models (a field's range) and by the store, not here: a hook on every
integer would cost every batch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

Pairs = Callable[[list[tuple[str, Any]]], dict[str, Any]]
"""How an object's pairs become a dict (``json.loads``'s ``object_pairs_hook``)."""


class JsonRefused(ValueError):
    """The text is not strict JSON; the message says what is wrong, naming ``what``."""


class DuplicateKey(ValueError):
    """Raised by a pairs hook: ``key`` appears twice in one object."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the key {key!r} appears twice in one object")


def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The default pairs hook: every key once."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKey(key)
        result[key] = value
    return result


class _Refused(ValueError):
    """Raised from inside the parser's number hooks."""


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Refused(f"the number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def loads_bytes(body: bytes, what: str, *, pairs: Pairs = no_duplicates) -> Any:
    """``loads`` of UTF-8 bytes; ``JsonRefused`` if they are not UTF-8."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonRefused(f"{what} is not UTF-8 (byte {exc.start})") from None
    return loads(text, what, pairs=pairs)


def loads(
    text: str, what: str, *, pairs: Pairs = no_duplicates, control_characters: bool = False
) -> Any:
    """The JSON value of ``text`` (``what`` names it in errors: "the message").

    ``control_characters``: whether raw control characters may stand inside strings (a
    form-decoded CDR carries its values' CR and LF as they are)."""
    try:
        return json.loads(
            text,
            strict=not control_characters,
            object_pairs_hook=pairs,
            parse_float=_finite_float,
            parse_constant=_no_constant,
        )
    except (_Refused, DuplicateKey) as exc:
        raise JsonRefused(f"{what} is refused: {exc}") from None
    except RecursionError:
        raise JsonRefused(f"{what} nests arrays and objects too deeply") from None
    except ValueError as exc:
        raise JsonRefused(f"{what} is not valid JSON: {exc}") from None
