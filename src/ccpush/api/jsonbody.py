"""Reading a JSON request body strictly: what ``json.loads`` lets through but no client
means to send is refused with a 400 naming the problem.

Refused: bytes that are not UTF-8, text that is not JSON, a key given twice in one object
(which of the two would win is the parser's whim), ``NaN`` and ``Infinity`` (not JSON),
numbers beyond a float's range, integers beyond 64 bits (no field holds one; the database
could not), and nesting deeper than ``MAX_DEPTH`` (no body of this API nests more than a
few levels).
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from ccpush.api.errors import ApiError

MAX_DEPTH: Final = 32
"""The deepest nesting of arrays and objects a body may have."""
INT_LIMIT: Final = 2**63
"""Integers must lie in ``[-INT_LIMIT, INT_LIMIT)``: a signed 64-bit column's range."""


class _Refused(ValueError):
    """Raised from inside the parser's hooks; becomes the 400's message."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(f"the key {key!r} appears twice in one object")
        result[key] = value
    return result


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 19:
        raise _Refused("an integer is too large (at most 64 bits)")
    value = int(text)
    if not -INT_LIMIT <= value < INT_LIMIT:
        raise _Refused("an integer is too large (at most 64 bits)")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Refused(f"the number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def depth_of(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` in JSON text, strings skipped."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def load_json(body: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """The body's JSON value, or ``ApiError(400)`` saying what is wrong with it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"the request body is not UTF-8 (byte {exc.start})") from None
    if text.count("[") + text.count("{") > max_depth and depth_of(text) > max_depth:
        raise _bad(f"the request body nests arrays and objects deeper than {max_depth} levels")
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_int=_bounded_int,
            parse_float=_finite_float,
            parse_constant=_no_constant,
        )
    except _Refused as exc:
        raise _bad(f"the request body is refused: {exc}") from None
    except RecursionError:
        raise _bad("the request body nests arrays and objects too deeply") from None
    except ValueError as exc:
        raise _bad(f"the request body is not valid JSON: {exc}") from None


def _bad(message: str) -> ApiError:
    return ApiError(400, "invalid_json", message)
