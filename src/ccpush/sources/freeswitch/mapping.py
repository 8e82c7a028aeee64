"""How FreeSWITCH CDRs become records: ``DEFAULT_MAPPING`` (its TOML, shown in the README),
changed key by key by a file (``CCPUSH_FREESWITCH_MAPPING``), and the settings."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ccpush.errors import ConfigurationError

if TYPE_CHECKING:
    from ccpush.settings import Settings

DEFAULT_APP_VARIABLE: Final = "ccpush_app_id"

DEFAULT_MAPPING: Final = """\
# Where each field of the record is read from: the first source with a value wins.
# A source is a channel variable ("uuid"), or "profile.<name>" for a field of the
# call's first caller profile (the "callflow" entry the call began with).
[fields]
callSessionId = ["uuid"]
callId = ["ccpush_call_id"]
caller = [
    "origination_caller_id_number",
    "effective_caller_id_number",
    "profile.caller_id_number",
]
called = ["profile.destination_number"]
calledInfo = ["ccpush_called_info"]
agentName = ["ccpush_agent_name", "cc_agent"]
agentGroupName = ["ccpush_agent_group_name", "cc_queue"]
agentAccount = ["ccpush_agent_account", "cc_agent"]
hangupCode = [
    "sip_term_status",
    "last_bridge_proto_specific_hangup_cause",
    "proto_specific_hangup_cause",
]
labels = ["ccpush_labels"]
baseCost = ["ccpush_base_cost"]
cost = ["ccpush_cost"]
remark = ["ccpush_remark"]
voiceUrl = ["ccpush_voice_url", "cc_record_filename", "record_name"]

[labels]
separator = ","

# ccode and ccodeName: the country of the called number, when it is written with one of
# these prefixes ("" takes a bare number as international: 918613237978737), or is a
# national number of default_region (an ISO code such as "US"; "" for none).
[country]
international_prefixes = ["+", "00"]
default_region = ""

# callType: 1 for a mod_callcenter queue's member leg (cc_queue set), else the first of
# these variables with a value listed in [call_type.directions].
[call_type]
queue = 1
direction_variables = ["call_direction", "direction"]

[call_type.directions]
inbound = 2
outbound = 3
local = 3

# hangupReason: 3 (transfer answered) or 2 (transfer not answered) when one of the
# transfer variables is set; else the code of the hangup cause below (hangup_cause, or
# the number in hangup_cause_q850); else 1/9 (hung up after an answer) or 0/8 (not
# answered), outgoing/incoming.
[hangup_reason]
transfer_variables = ["sip_refer_to", "transfer_to", "transfer_disposition"]

[hangup_reason.causes]
USER_BUSY = 7
NO_USER_RESPONSE = 6
SUBSCRIBER_ABSENT = 6
UNALLOCATED_NUMBER = 5
NO_ROUTE_TRANSIT_NET = 5
NO_ROUTE_DESTINATION = 5
NUMBER_CHANGED = 5
INVALID_NUMBER_FORMAT = 5
DESTINATION_OUT_OF_ORDER = 4
NORMAL_CIRCUIT_CONGESTION = 4
NETWORK_OUT_OF_ORDER = 4
NORMAL_TEMPORARY_FAILURE = 4
SWITCH_CONGESTION = 4
REQUESTED_CHAN_UNAVAIL = 4
SERVICE_UNAVAILABLE = 4
INCOMPATIBLE_DESTINATION = 4
RECOVERY_ON_TIMER_EXPIRE = 4
PROTOCOL_ERROR = 4
INTERWORKING = 4
MEDIA_TIMEOUT = 4
GATEWAY_DOWN = 4
INVALID_GATEWAY = 4

# hangingDirection: who ended the call, from the first of these variables with a value.
[hanging_direction]
variables = ["sip_hangup_disposition", "verto_hangup_disposition"]

# Legs whose CDRs are pushed too (each is otherwise answered 200 "ignored").
[legs]
b_legs = false
callcenter_agent_legs = false
loopback_b_legs = false
"""

Source = Annotated[str, Field(strict=True, min_length=1, max_length=128, pattern=r"^\S+$")]
Sources = tuple[Source, ...]
Code = Annotated[int, Field(strict=True, ge=0, le=999)]
Text = Annotated[str, Field(strict=True)]
Flag = Annotated[bool, Field(strict=True)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSources(_Table):
    """Where each contract field that a CDR carries as text is read from."""

    callSessionId: Sources
    callId: Sources
    caller: Sources
    called: Sources
    calledInfo: Sources
    agentName: Sources
    agentGroupName: Sources
    agentAccount: Sources
    hangupCode: Sources
    labels: Sources
    baseCost: Sources
    cost: Sources
    remark: Sources
    voiceUrl: Sources


class LabelsRule(_Table):
    separator: Annotated[str, Field(strict=True, min_length=1)]


class CountryRule(_Table):
    international_prefixes: tuple[Text, ...]
    default_region: Text


class CallTypeRule(_Table):
    queue: Code
    direction_variables: Sources
    directions: dict[str, Code]


class HangupReasonRule(_Table):
    transfer_variables: Sources
    causes: dict[str, Code]


class HangingDirectionRule(_Table):
    variables: Sources


class LegsRule(_Table):
    b_legs: Flag
    callcenter_agent_legs: Flag
    loopback_b_legs: Flag


class FreeswitchMapping(_Table):
    """How CDRs become records: the tables of ``DEFAULT_MAPPING`` (changed by a file), and
    what the settings say (``from_settings``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    fields: FieldSources
    labels: LabelsRule
    country: CountryRule
    call_type: CallTypeRule
    hangup_reason: HangupReasonRule
    hanging_direction: HangingDirectionRule
    legs: LegsRule
    app_variable: str = DEFAULT_APP_VARIABLE
    """The channel variable naming the record's app."""
    switch_zone: tzinfo | None = None
    """The zone of ``<name>_stamp`` times; None: the record time zone."""
    recording_base_url: str | None = None
    """What a recording's file name is appended to, to make ``voiceUrl``."""

    @classmethod
    def load(cls, text: str = "", **options: Any) -> FreeswitchMapping:
        """``DEFAULT_MAPPING`` changed by the TOML ``text`` (its tables merged key by key),
        with ``options`` (``app_variable``, ``switch_zone``, ``recording_base_url``);
        ``ValueError`` saying what is wrong."""
        try:
            changes = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"not TOML: {exc}") from None
        unknown = set(changes) - set(_DEFAULTS)
        if unknown:
            name = sorted(unknown)[0]
            raise ValueError(f"unknown table {name!r}: the tables are {_TABLE_NAMES}")
        try:
            return cls.model_validate({**_merged(_DEFAULTS, changes), **options})
        except ValidationError as exc:
            raise ValueError(_described(exc)) from None

    @classmethod
    def read(cls, path: Path | None, **options: Any) -> FreeswitchMapping:
        """``load`` of the file at ``path`` (the defaults if None); ``ConfigurationError``
        naming the file and the problem."""
        try:
            return cls.load(_text_of(path), **options)
        except ValueError as exc:
            raise ConfigurationError(f"FreeSWITCH mapping {path}: {exc}") from None

    @classmethod
    def from_settings(cls, settings: Settings) -> FreeswitchMapping:
        """The mapping the ``CCPUSH_FREESWITCH_*`` settings describe."""
        return cls.read(
            settings.freeswitch_mapping,
            app_variable=settings.freeswitch_app_variable,
            switch_zone=settings.freeswitch_timezone,
            recording_base_url=settings.freeswitch_recording_base_url,
        )


def check_mapping_file(path: Path | None) -> Path | None:
    """``path``, once its file reads as a mapping; ``ValueError`` saying why not (the
    setting ``CCPUSH_FREESWITCH_MAPPING`` is checked with it)."""
    FreeswitchMapping.load(_text_of(path))
    return path


def _text_of(path: Path | None) -> str:
    """A mapping file's TOML (none: empty); ``ValueError`` if it cannot be read."""
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot be read: {exc}") from None


_DEFAULTS: Final = tomllib.loads(DEFAULT_MAPPING)
_TABLE_NAMES: Final = ", ".join(_DEFAULTS)


def _described(error: ValidationError) -> str:
    """A mapping's problems: each key's path (``fields.callId``) and what is wrong."""
    problems = []
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in item["loc"])
        reason = "is not a key of this table" if item["type"] == "extra_forbidden" else item["msg"]
        problems.append(f"{path}: {reason}")
    return "; ".join(problems)


def _merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        inner = base.get(key)
        if isinstance(value, dict) and isinstance(inner, dict):
            merged[key] = _merged(inner, value)
        else:
            merged[key] = value
    return merged
