"""Reading what ``mod_json_cdr`` POSTs (``read_cdr``), and the call a CDR describes
(``Call``)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, unquote

from ccpush.record import Problem
from ccpush.strict_json import DuplicateKey, JsonRefused, loads

JSON_TYPE: Final = "application/json"
FORM_TYPE: Final = "application/x-www-form-urlencoded"
BASE64_FORM_TYPE: Final = "application/x-www-form-base64-encoded"
MEDIA_TYPES: Final = (JSON_TYPE, FORM_TYPE, BASE64_FORM_TYPE)
"""What ``mod_json_cdr`` sends: ``encode`` false (its default), true, base64."""
FORM_FIELD: Final = "cdr"
PROFILE: Final = "profile."
"""A source naming a field of the call's first caller profile, not a channel variable."""
_CALLFLOW: Final = "callflow"
_WHOLE_NUMBER = re.compile(r"[0-9]{1,19}")
_STAMP_SIGNS: Final = ("%20", "%3A")
"""How a percent-encoded ``start_stamp`` looks (a space and colons, encoded)."""
_FORM_HINT: Final = (
    " (with encode=true, set encode-values=false: FreeSWITCH does not encode the values'"
    " own escapes again, so a quote in a value ends its string; or use encode=false)"
)


class UnreadableCdr(ValueError):
    """The body is not a FreeSWITCH CDR (not JSON, not the module's form)."""


class UnmappableCdr(ValueError):
    """A CDR that cannot be a record: every problem, by record field."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{p.field}: {p.reason}" for p in self.problems))


# Reading what mod_json_cdr POSTs


def read_cdr(body: bytes, media_type: str | None) -> dict[str, Any]:
    """The CDR in a body ``mod_json_cdr`` POSTed: raw JSON, or the form ``cdr=<JSON>``
    URL-encoded or in base64 (``encode`` true or base64). ``UnreadableCdr`` else."""
    if media_type == FORM_TYPE:
        fields = parse_qsl(body.decode("latin-1"), keep_blank_values=True, errors="replace")
        values = [value for name, value in fields if name == FORM_FIELD]
        if len(values) != 1:
            raise UnreadableCdr(f"the form must have one field {FORM_FIELD!r}")
        try:
            return decode_cdr_json(values[0])
        except UnreadableCdr as exc:
            raise UnreadableCdr(f"{exc}{_FORM_HINT}") from None
    if media_type == BASE64_FORM_TYPE:
        name, _, value = body.partition(b"=")
        try:
            if name != FORM_FIELD.encode():
                raise binascii.Error
            raw = base64.b64decode(value.strip(), validate=True)
        except binascii.Error:
            raise UnreadableCdr(f"the body must be {FORM_FIELD}=<base64 of the CDR>") from None
        return decode_cdr_json(raw.decode("utf-8", errors="replace"))
    return decode_cdr_json(body.decode("utf-8", errors="replace"))


def decode_cdr_json(text: str) -> dict[str, Any]:
    """A CDR's JSON object (``ccpush.strict_json``). A key given twice in one object is
    refused, except ``callflow``, which older FreeSWITCH versions repeat (one per caller
    profile): its values become an array, as newer versions write it. Bytes that were not
    UTF-8 are replaced (U+FFFD) before this: a caller name in another encoding must not
    cost the call its record."""
    try:
        data = loads(
            text,
            "the CDR",
            pairs=_gather_callflows,
            control_characters=True,  # a form decodes the values' %0D%0A
        )
    except JsonRefused as exc:
        raise UnreadableCdr(str(exc)) from None
    if not isinstance(data, dict):
        raise UnreadableCdr("the CDR must be a JSON object")
    return data


def _gather_callflows(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    repeated: set[str] = set()
    for key, value in pairs:
        if key not in result:
            result[key] = value
        elif key == _CALLFLOW:
            earlier = result[key] if key in repeated else [result[key]]
            result[key] = [*earlier, value]
            repeated.add(key)
        else:
            raise DuplicateKey(key)
    return result


# The call a CDR describes


@dataclass(frozen=True, slots=True)
class Call:
    """What a CDR says of its channel: its variables (decoded), its first caller profile,
    and whether it is a B-leg (``mod_json_cdr``'s test: its newest profile has an
    ``originator``)."""

    variables: Mapping[str, str]
    first_profile: Mapping[str, Any] = field(default_factory=dict)
    is_b_leg: bool = False

    @classmethod
    def of(cls, cdr: Mapping[str, Any]) -> Call:
        raw = cdr.get("variables")
        if not isinstance(raw, dict):
            raise UnmappableCdr([Problem(field="variables", reason="is missing: not a CDR")])
        texts = {name: value for name, value in raw.items() if isinstance(value, str)}
        if _values_encoded(texts):
            texts = {name: unquote(value, errors="replace") for name, value in texts.items()}
        profiles = _caller_profiles(cdr.get(_CALLFLOW))
        return cls(
            variables=texts,
            first_profile=profiles[-1] if profiles else {},
            is_b_leg=bool(profiles) and "originator" in profiles[0],
        )

    def get(self, source: str) -> str | None:
        """The value of a source (a variable, or ``profile.<name>``); None if empty."""
        if source.startswith(PROFILE):
            value = self.first_profile.get(source.removeprefix(PROFILE))
        else:
            value = self.variables.get(source)
        return value if isinstance(value, str) and value else None

    def first(self, sources: Sequence[str]) -> tuple[str, str] | None:
        """The first source with a value, and its value."""
        for source in sources:
            value = self.get(source)
            if value is not None:
                return source, value
        return None


def _values_encoded(variables: Mapping[str, str]) -> bool:
    """Whether the variables are percent-encoded (``encode-values``, FreeSWITCH's
    default): the CDR says it by its ``start_stamp``, whose space and colons are encoded.
    A body sent as a URL-encoded form has been decoded once already, and says so too."""
    for name in ("start_stamp", "end_stamp", "profile_start_stamp"):
        stamp = variables.get(name)
        if stamp:
            return any(sign in stamp.upper() for sign in _STAMP_SIGNS)
    return False


def _caller_profiles(callflow: Any) -> list[Mapping[str, Any]]:
    """The caller profiles, newest first, oldest last (sorted by ``profile_index`` when
    every entry has one)."""
    entries = [callflow] if isinstance(callflow, dict) else callflow
    if not isinstance(entries, list):
        return []
    found = [entry for entry in entries if isinstance(entry, dict)]
    indexes = [whole_number(entry.get("profile_index")) for entry in found]
    if None not in indexes:
        found = [entry for _, entry in sorted(zip(indexes, found, strict=True), key=_newest)]
    profiles = [entry.get("caller_profile") for entry in found]
    return [profile for profile in profiles if isinstance(profile, dict)]


def _newest(item: tuple[int | None, Mapping[str, Any]]) -> int:
    return -(item[0] or 0)


def whole_number(text: Any) -> int | None:
    """A FreeSWITCH number (``"1515666344"``), or None for anything else."""
    if isinstance(text, str) and _WHOLE_NUMBER.fullmatch(text):
        return int(text)
    return None
