"""The rules of the mapping, each a pure function of what it reads: which legs are pushed,
``callType``, ``hangupReason``, ``hangingDirection``, the SIP status, the called number's
country, the recording's URL."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from urllib.parse import quote

import phonenumbers

from ccpush.codes import HangingDirection, HangupReason
from ccpush.sources.freeswitch.call import Call
from ccpush.sources.freeswitch.mapping import CallTypeRule, CountryRule, LegsRule

_SIP_STATUS = re.compile(r"(?:sip:)?([1-6][0-9]{2})")
_NUMBER_SEPARATORS = re.compile(r"[\s().-]")


def ignored_leg(call: Call, legs: LegsRule) -> str | None:
    """Why a leg's CDR is not pushed, or None to push it."""
    if call.is_b_leg and not legs.b_legs:
        return "a B-leg: its call is pushed from the CDR of the A-leg that originated it"
    if call.get("cc_side") == "agent" and not legs.callcenter_agent_legs:
        return "a mod_callcenter agent leg: the queue call is pushed from its member's CDR"
    if call.get("loopback_leg") == "B" and not legs.loopback_b_legs:
        return "the B half of a loopback channel: its call is pushed from its A-leg's CDR"
    return None


def is_queue_call(call: Call) -> bool:
    """A mod_callcenter member: a caller that waited in a queue (``cc_queue`` set)."""
    return call.get("cc_queue") is not None and call.get("cc_side") != "agent"


def call_type(call: Call, rule: CallTypeRule) -> int | None:
    """``callType``: the queue's code for a queue member, else the first direction
    variable with a listed value; None if none has one."""
    if is_queue_call(call):
        return rule.queue
    for name in rule.direction_variables:
        direction = call.get(name)
        if direction is not None and direction.lower() in rule.directions:
            return rule.directions[direction.lower()]
    return None


def hangup_reason(
    *,
    outgoing: bool,
    answered: bool,
    cause: str | None,
    q850: str | None,
    transferred: bool,
    transfer_answered: bool,
    causes: Mapping[str, int],
) -> int:
    """``hangupReason``: a transfer first, then the hangup cause's own code, then whether
    the call was answered, outgoing or incoming."""
    if transferred:
        if transfer_answered:
            return HangupReason.TRANSFER_SUCCESSFUL_HUNG_UP
        return HangupReason.TRANSFER_RINGING_HUNG_UP
    for key in (cause, q850):
        if key is not None and key in causes:
            return causes[key]
    if outgoing:
        return HangupReason.OUTGOING_HUNG_UP if answered else HangupReason.OUTGOING_NOT_ANSWERED
    return HangupReason.INCOMING_HUNG_UP if answered else HangupReason.INCOMING_NOT_ANSWERED


def hanging_direction(
    disposition: str | None, *, a_leg_is_agent: bool, bridged: bool
) -> int | None:
    """``hangingDirection`` from the A-leg's hangup disposition: the party on the A-leg
    when it sent the BYE (or CANCEL, or refused an outgoing call); the party on the other
    leg when FreeSWITCH sent the BYE on a bridged call; the system when FreeSWITCH ended
    a call on its own (not bridged, or refused, or cancelled by it). None if unknown."""
    own_party = HangingDirection.AGENT if a_leg_is_agent else HangingDirection.CUSTOMER
    other_party = HangingDirection.CUSTOMER if a_leg_is_agent else HangingDirection.AGENT
    if disposition in ("recv_bye", "recv_cancel", "recv_refuse"):
        return own_party
    if disposition == "send_bye":
        return other_party if bridged else HangingDirection.SYSTEM
    if disposition in ("send_cancel", "send_refuse"):
        return HangingDirection.SYSTEM
    return None


def sip_status(value: str) -> str | None:
    """A SIP status code from ``200`` or ``sip:200``; None for anything else."""
    match = _SIP_STATUS.fullmatch(value.strip())
    return match.group(1) if match else None


def country_of(number: str | None, rule: CountryRule) -> tuple[str, str | None] | None:
    """``ccode`` and ``ccodeName`` (English) of a number, or None if it has no country."""
    if number is None:
        return None
    digits = _NUMBER_SEPARATORS.sub("", number)
    for prefix in sorted(rule.international_prefixes, key=len, reverse=True):
        if digits.startswith(prefix):
            found = _parse_number("+" + digits.removeprefix(prefix), None)
            if found is not None:
                return found
    return _parse_number(digits, rule.default_region) if rule.default_region else None


def _parse_number(text: str, region: str | None) -> tuple[str, str | None] | None:
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    from phonenumbers import geocoder  # its data take seconds to load: only when needed

    return str(number.country_code), geocoder.country_name_for_number(number, "en") or None


def recording_url(value: str, base_url: str | None) -> str | None:
    """``voiceUrl``: a value that is an http(s) URL as it is; else the file's name after
    ``base_url``; None without a base URL."""
    if value.lower().startswith(("http://", "https://")):
        return value
    if base_url is None:
        return None
    name = PurePosixPath(value.replace("\\", "/")).name
    return base_url.rstrip("/") + "/" + quote(name) if name else None
