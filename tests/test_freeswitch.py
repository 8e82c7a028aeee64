"""FreeSWITCH's JSON CDRs: each real CDR of tests/data/freeswitch mapped to its record field
by field, the rules of the mapping in tables, and ``POST /v1/sources/freeswitch`` on every
backend: the three bodies mod_json_cdr sends, Basic and bearer keys, the app from a
channel variable or the URL, ignored legs, refusals, and the push each record makes."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from pydantic import ValidationError

from ccpush.clock import ManualClock
from ccpush.codes import CallType, HangingDirection, HangupReason
from ccpush.errors import ConfigurationError
from ccpush.record import FIELD_NAMES, CallRecord
from ccpush.service import Service
from ccpush.sources.freeswitch import (
    DEFAULT_MAPPING,
    Call,
    CountryRule,
    FreeswitchMapping,
    Ignored,
    LegsRule,
    MappedCdr,
    UnmappableCdr,
    UnreadableCdr,
    call_type,
    country_of,
    decode_cdr_json,
    hanging_direction,
    hangup_reason,
    ignored_leg,
    map_cdr,
    read_cdr,
    recording_url,
    sip_status,
)
from ccpush.wire import parse_zone
from tests.api_client import Api, ok
from tests.helpers import make_service, make_settings
from tests.receiver import Receiver

DATA = Path(__file__).parent / "data" / "freeswitch"
FREESWITCH_DOC = Path(__file__).parent.parent / "docs" / "freeswitch.md"
PATH = "/v1/sources/freeswitch"
RECORDINGS = "https://recordings.example.com/fs/"
PLUS_8 = parse_zone("+08:00")
MAPPING = FreeswitchMapping.load(recording_base_url=RECORDINGS)
URL_UNSAFE = b'\r\n #%&+:;<=>?@[\\]^`{|}"'
HEX = b"0123456789ABCDEF"


def cdr_bytes(name: str) -> bytes:
    return (DATA / name).read_bytes()


def cdr_of(name: str) -> dict[str, Any]:
    return read_cdr(cdr_bytes(name), "application/json")


def switch_url_encode(data: bytes) -> bytes:
    """FreeSWITCH's ``switch_url_encode``: unsafe bytes as ``%XX``, except a ``%`` that
    already starts an upper-case escape (it does not encode twice)."""
    out = bytearray()
    for at, byte in enumerate(data):
        escape = byte == ord("%") and all(c in HEX for c in data[at + 1 : at + 3])
        if not escape and (byte < 0x20 or byte > 0x7E or byte in URL_UNSAFE):
            out += b"%" + bytes([HEX[byte >> 4], HEX[byte & 0x0F]])
        else:
            out.append(byte)
    return bytes(out)


def as_sent(cdr: bytes, encoding: str) -> tuple[bytes, str]:
    """A CDR as mod_json_cdr POSTs it with ``encode`` false, true or base64. With
    ``encode`` true the module is configured with ``encode-values`` false (as the README
    says): a CDR found with encoded values is written as that configuration writes it."""
    if encoding == "json":
        return cdr, "application/json"
    if encoding == "form":
        return b"cdr=" + switch_url_encode(values_decoded(cdr)), "application/x-www-form-urlencoded"
    return b"cdr=" + base64.b64encode(cdr), "application/x-www-form-base64-encoded"


def values_decoded(cdr: bytes) -> bytes:
    """The CDR as ``encode-values`` false writes it (compact JSON, as cJSON prints)."""
    data = json.loads(cdr)
    variables = data["variables"]
    if "%20" not in variables["start_stamp"]:
        return cdr
    data["variables"] = {name: unquote(value) for name, value in variables.items()}
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


# What each CDR is pushed as. Its times are the CDR's own local stamps (start_stamp...)
# moved from the switch's zone (Germany's CET/CEST for CGRateS, India's +05:30 for the
# others) to the record zone, +08:00.

NOTHING: dict[str, Any] = {name: None for name in FIELD_NAMES} | {"labels": []}

EXPECTED: dict[str, dict[str, Any]] = {
    "cgrates_inbound_answered_2018.json": NOTHING
    | {
        "callSessionId": "3da8bf84-c133-4959-9e24-e72875cb33a1",
        "caller": "1001",
        "called": "1002",
        "callStartTime": "2018-01-11 18:25:44",
        "answerTime": "2018-01-11 18:25:47",
        "callEndTime": "2018-01-11 18:26:55",
        "callDuration": 68,
        "callType": CallType.INCOMING,
        "hangupCode": "200",
        "hangupReason": HangupReason.INCOMING_HUNG_UP,
        "hangingDirection": HangingDirection.AGENT,
    },
    "cgrates_inbound_encoded_values_2013.json": NOTHING
    | {
        "callSessionId": "c8ccef5e-34c2-4fd2-9a2e-fa6f295f3a1e",
        "caller": "1001",
        "called": "1002",
        "callStartTime": "2013-05-16 20:33:28",
        "answerTime": "2013-05-16 20:33:31",
        "callEndTime": "2013-05-16 20:33:52",
        "callDuration": 21,
        "callType": CallType.INCOMING,
        "hangupCode": "200",
        "hangupReason": HangupReason.INCOMING_HUNG_UP,
        "hangingDirection": HangingDirection.AGENT,
    },
    "cgrates_redirected_international_2013.json": NOTHING
    | {
        "callSessionId": "01df56f4-d99a-4ef6-b7fe-b924b2415b7f",
        "caller": "+4986517174960",
        "called": "+4986517174963",
        "ccode": "49",
        "ccodeName": "Germany",
        "callStartTime": "2013-08-04 17:50:54",
        "answerTime": "2013-08-04 17:50:56",
        "callEndTime": "2013-08-04 17:51:00",
        "callDuration": 4,
        "callType": CallType.INCOMING,
        "hangupCode": "200",
        "hangupReason": HangupReason.INCOMING_HUNG_UP,
        "hangingDirection": HangingDirection.AGENT,
    },
    "cgrates_inbound_answered_2015.json": NOTHING
    | {
        "callSessionId": "e3133bf7-dcde-4daf-9663-9a79ffcef5ad",
        "caller": "1001",
        "called": "1003",
        "callStartTime": "2015-07-07 22:52:08",
        "answerTime": "2015-07-07 22:52:08",
        "callEndTime": "2015-07-07 22:53:14",
        "callDuration": 66,
        "callType": CallType.INCOMING,
        "hangupCode": "200",
        "hangupReason": HangupReason.INCOMING_HUNG_UP,
        "hangingDirection": HangingDirection.CUSTOMER,
    },
    "derived_blind_transfer_2015.json": NOTHING
    | {
        "callSessionId": "e3133bf7-dcde-4daf-9663-9a79ffcef5ad",
        "caller": "1001",
        "called": "1003",
        "callStartTime": "2015-07-07 22:52:08",
        "answerTime": "2015-07-07 22:52:08",
        "callEndTime": "2015-07-07 22:53:14",
        "callDuration": 66,
        "callType": CallType.INCOMING,
        "hangupCode": "200",
        "hangupReason": HangupReason.TRANSFER_SUCCESSFUL_HUNG_UP,
        "hangingDirection": HangingDirection.CUSTOMER,
    },
    "derived_queue_call_2018.json": NOTHING
    | {
        "callSessionId": "3da8bf84-c133-4959-9e24-e72875cb33a1",
        "caller": "1001",
        "called": "1002",
        "agentName": "1002@default",
        "agentGroupName": "support@default",
        "agentAccount": "1002@default",
        "callStartTime": "2018-01-11 18:25:44",
        "answerTime": "2018-01-11 18:25:55",
        "callEndTime": "2018-01-11 18:26:55",
        "callDuration": 60,
        "callType": CallType.GROUP_CALL_TO_AGENT,
        "hangupCode": "200",
        "hangupReason": HangupReason.INCOMING_HUNG_UP,
        "hangingDirection": HangingDirection.AGENT,
        "voiceUrl": RECORDINGS + "3da8bf84-c133-4959-9e24-e72875cb33a1.wav",
    },
    "onex_inbound_unanswered_2025.json": NOTHING
    | {
        "callSessionId": "51156b0b-f91b-4fd3-9c8f-15226f6098be",
        "caller": "1001",
        "called": "1003",
        "callStartTime": "2025-11-12 12:51:42",
        "callEndTime": "2025-11-12 12:51:56",
        "callDuration": 0,
        "callType": CallType.INCOMING,
        "hangupCode": "487",
        "hangupReason": HangupReason.INCOMING_NOT_ANSWERED,
        "hangingDirection": HangingDirection.CUSTOMER,
    },
    "onex_outbound_originate_2025.json": NOTHING
    | {
        "callSessionId": "16c22a18-eccc-4974-adf9-44d2b6152838",
        "caller": "9111110001",
        "called": "3868158407",
        "callStartTime": "2025-11-12 15:33:58",
        "answerTime": "2025-11-12 15:33:58",
        "callEndTime": "2025-11-12 15:34:05",
        "callDuration": 7,
        "callType": CallType.OUTGOING,
        "hangupReason": HangupReason.OUTGOING_HUNG_UP,
        "hangingDirection": HangingDirection.SYSTEM,
    },
}
B_LEG = "onex_b_leg_cancelled_2025.json"


def test_every_cdr_of_the_data_is_expected() -> None:
    found = {path.name for path in DATA.glob("*.json")}
    assert found == {*EXPECTED, B_LEG}
    assert all(set(record) == set(FIELD_NAMES) for record in EXPECTED.values())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_cdr_maps_to_its_record_field_by_field(name: str) -> None:
    mapped = map_cdr(cdr_of(name), MAPPING, record_zone=PLUS_8)
    assert isinstance(mapped, MappedCdr)
    record = mapped.record.model_dump()
    for field_name in FIELD_NAMES:
        assert record[field_name] == EXPECTED[name][field_name], field_name
    assert mapped.app_id is None


def test_a_b_leg_is_ignored() -> None:
    outcome = map_cdr(cdr_of(B_LEG), MAPPING, record_zone=PLUS_8)
    assert isinstance(outcome, Ignored)
    assert "B-leg" in outcome.reason


@pytest.mark.parametrize("encoding", ["json", "form", "base64"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_body_mod_json_cdr_sends_reads_as_the_same_cdr(name: str, encoding: str) -> None:
    body, kind = as_sent(cdr_bytes(name), encoding)
    mapped = map_cdr(read_cdr(body, kind), MAPPING, record_zone=PLUS_8)
    assert isinstance(mapped, MappedCdr)
    assert mapped.record.model_dump() == EXPECTED[name]


def test_a_form_of_percent_encoded_values_is_refused_saying_how_to_configure() -> None:
    cdr = cdr_bytes("onex_inbound_unanswered_2025.json")  # encode-values: true
    body = b"cdr=" + switch_url_encode(cdr)  # "caller_id": "%221001%22..." decodes to quotes
    with pytest.raises(UnreadableCdr, match="set encode-values=false"):
        read_cdr(body, "application/x-www-form-urlencoded")


def test_the_switch_zone_reads_the_local_stamps_of_a_cdr_without_epoch_times() -> None:
    cdr = cdr_of("onex_outbound_originate_2025.json")
    variables = cdr["variables"]
    for name in [key for key in variables if key.endswith(("_epoch", "_uepoch"))]:
        del variables[name]
    india = FreeswitchMapping.load(switch_zone=parse_zone("+05:30"))
    mapped = map_cdr(cdr, india, record_zone=PLUS_8)
    assert isinstance(mapped, MappedCdr)
    expected = EXPECTED["onex_outbound_originate_2025.json"]
    times = ("callStartTime", "answerTime", "callEndTime")
    assert [getattr(mapped.record, t) for t in times] == [expected[t] for t in times]
    # Without a switch zone, the stamps are read in the record zone.
    default = map_cdr(cdr, MAPPING, record_zone=PLUS_8)
    assert isinstance(default, MappedCdr)
    assert default.record.callStartTime == "2025-11-12 13:03:58"


def test_percent_encoded_values_are_decoded_as_utf8() -> None:
    cdr = cdr_of("onex_inbound_unanswered_2025.json")  # encode-values: true
    cdr["variables"]["ccpush_remark"] = "%E5%AE%A2%E6%88%B7%20call%20back%2C%20100%25"
    cdr["variables"]["ccpush_labels"] = "VIP%2C%20%E9%AB%98%E6%84%8F%E5%90%91%2C%20"
    mapped = map_cdr(cdr, MAPPING, record_zone=PLUS_8)
    assert isinstance(mapped, MappedCdr)
    assert mapped.record.remark == "客户 call back, 100%"
    assert mapped.record.labels == ["VIP", "高意向"]


def test_values_not_percent_encoded_are_taken_as_they_are() -> None:
    cdr = cdr_of("cgrates_inbound_answered_2018.json")  # encode-values: false
    cdr["variables"]["ccpush_remark"] = "50%20 off"
    mapped = map_cdr(cdr, MAPPING, record_zone=PLUS_8)
    assert isinstance(mapped, MappedCdr)
    assert mapped.record.remark == "50%20 off"


def test_the_repeated_callflow_keys_of_old_versions_become_a_list() -> None:
    cdr = cdr_of("cgrates_redirected_international_2013.json")
    assert [p["profile_index"] for p in cdr["callflow"]] == ["2", "1"]
    with pytest.raises(UnreadableCdr, match="'uuid' appears twice"):
        decode_cdr_json('{"variables": {"uuid": "a", "uuid": "b"}}')


@pytest.mark.parametrize(
    ("body", "kind", "error"),
    [
        (b"not json", "application/json", "not valid JSON"),
        (b"[1, 2]", "application/json", "must be a JSON object"),
        (b'{"a": NaN}', "application/json", "NaN is not a JSON number"),
        (b"cdr=%7B%7D&cdr=%7B%7D", "application/x-www-form-urlencoded", "one field 'cdr'"),
        (b"other=%7B%7D", "application/x-www-form-urlencoded", "one field 'cdr'"),
        (b"cdr=not base64!", "application/x-www-form-base64-encoded", "base64"),
        (b"data=e30=", "application/x-www-form-base64-encoded", "base64"),
    ],
)
def test_a_body_that_is_not_a_cdr_is_unreadable(body: bytes, kind: str, error: str) -> None:
    with pytest.raises(UnreadableCdr, match=error):
        read_cdr(body, kind)


def test_bytes_that_are_not_utf8_are_replaced_not_refused() -> None:
    data = json.loads(cdr_bytes("cgrates_inbound_answered_2018.json"))
    data["variables"]["ccpush_remark"] = "Caf\N{LATIN SMALL LETTER E WITH ACUTE}"
    body = json.dumps(data, ensure_ascii=False).encode("latin-1")
    mapped = map_cdr(read_cdr(body, "application/json"), MAPPING, record_zone=PLUS_8)
    assert isinstance(mapped, MappedCdr)
    assert mapped.record.remark == "Caf\N{REPLACEMENT CHARACTER}"


# The rules, in tables


def call(**variables: str) -> Call:
    return Call(variables=variables)


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"direction": "inbound"}, CallType.INCOMING),
        ({"direction": "outbound"}, CallType.OUTGOING),
        ({"direction": "inbound", "call_direction": "outbound"}, CallType.OUTGOING),
        ({"direction": "inbound", "call_direction": "local"}, CallType.OUTGOING),
        ({"direction": "outbound", "call_direction": "Inbound"}, CallType.INCOMING),
        ({"direction": "inbound", "call_direction": "sideways"}, CallType.INCOMING),
        ({"direction": "inbound", "cc_queue": "support@default"}, CallType.GROUP_CALL_TO_AGENT),
        (
            {"direction": "inbound", "cc_queue": "q", "cc_side": "member"},
            CallType.GROUP_CALL_TO_AGENT,
        ),
        ({"direction": "outbound", "cc_queue": "q", "cc_side": "agent"}, CallType.OUTGOING),
        ({}, None),
        ({"direction": "sideways"}, None),
    ],
)
def test_call_type(variables: dict[str, str], expected: int | None) -> None:
    assert call_type(call(**variables), MAPPING.call_type) == expected


OUT, IN = True, False


@pytest.mark.parametrize(
    ("outgoing", "answered", "cause", "q850", "transferred", "transfer_answered", "expected"),
    [
        (IN, True, "NORMAL_CLEARING", "16", False, False, HangupReason.INCOMING_HUNG_UP),
        (IN, False, "ORIGINATOR_CANCEL", "16", False, False, HangupReason.INCOMING_NOT_ANSWERED),
        (OUT, True, "NORMAL_CLEARING", "16", False, False, HangupReason.OUTGOING_HUNG_UP),
        (OUT, False, "NO_ANSWER", "19", False, False, HangupReason.OUTGOING_NOT_ANSWERED),
        (OUT, False, "USER_BUSY", "17", False, False, HangupReason.CALLED_BUSY),
        (
            OUT,
            False,
            "UNALLOCATED_NUMBER",
            "1",
            False,
            False,
            HangupReason.CALLED_OPERATOR_NO_SERVICE,
        ),
        (
            OUT,
            False,
            "SUBSCRIBER_ABSENT",
            "20",
            False,
            False,
            HangupReason.CALLED_NOT_IN_SERVICE_AREA,
        ),
        (
            OUT,
            False,
            "NO_USER_RESPONSE",
            "18",
            False,
            False,
            HangupReason.CALLED_NOT_IN_SERVICE_AREA,
        ),
        (OUT, True, "MEDIA_TIMEOUT", "16", False, False, HangupReason.CALL_ABNORMALITY),
        (IN, False, "NORMAL_TEMPORARY_FAILURE", "41", False, False, HangupReason.CALL_ABNORMALITY),
        (OUT, False, None, "17", False, False, HangupReason.CALLED_BUSY),
        (OUT, False, "SOMETHING_NEW", "17", False, False, HangupReason.CALLED_BUSY),
        (OUT, False, "SOMETHING_NEW", "99", False, False, HangupReason.OUTGOING_NOT_ANSWERED),
        (IN, True, "NORMAL_CLEARING", "16", True, True, HangupReason.TRANSFER_SUCCESSFUL_HUNG_UP),
        (IN, True, "USER_BUSY", "17", True, False, HangupReason.TRANSFER_RINGING_HUNG_UP),
        (OUT, True, "NORMAL_CLEARING", "16", True, False, HangupReason.TRANSFER_RINGING_HUNG_UP),
    ],
)
def test_hangup_reason(
    outgoing: bool,
    answered: bool,
    cause: str | None,
    q850: str | None,
    transferred: bool,
    transfer_answered: bool,
    expected: int,
) -> None:
    causes = dict(MAPPING.hangup_reason.causes) | {"17": HangupReason.CALLED_BUSY}
    found = hangup_reason(
        outgoing=outgoing,
        answered=answered,
        cause=cause,
        q850=q850,
        transferred=transferred,
        transfer_answered=transfer_answered,
        causes=causes,
    )
    assert found == expected


CUSTOMER, AGENT, SYSTEM = HangingDirection


@pytest.mark.parametrize(
    ("disposition", "a_leg_is_agent", "bridged", "expected"),
    [
        ("recv_bye", False, True, CUSTOMER),
        ("recv_bye", True, True, AGENT),
        ("recv_cancel", False, False, CUSTOMER),
        ("recv_refuse", False, False, CUSTOMER),
        ("send_bye", False, True, AGENT),
        ("send_bye", True, True, CUSTOMER),
        ("send_bye", False, False, SYSTEM),
        ("send_bye", True, False, SYSTEM),
        ("send_cancel", False, False, SYSTEM),
        ("send_refuse", False, False, SYSTEM),
        ("something_else", False, True, None),
        (None, False, True, None),
    ],
)
def test_hanging_direction(
    disposition: str | None, a_leg_is_agent: bool, bridged: bool, expected: int | None
) -> None:
    assert (
        hanging_direction(disposition, a_leg_is_agent=a_leg_is_agent, bridged=bridged) == expected
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [("200", "200"), ("sip:487", "487"), (" 486 ", "486"), ("verto:200", None), ("2000", None)],
)
def test_sip_status(value: str, expected: str | None) -> None:
    assert sip_status(value) == expected


@pytest.mark.parametrize(
    ("number", "prefixes", "region", "expected"),
    [
        ("+4986517174963", ("+", "00"), "", ("49", "Germany")),
        ("004986517174963", ("+", "00"), "", ("49", "Germany")),
        ("+86 132-3797-8737", ("+", "00"), "", ("86", "China")),
        ("918613237978737", ("+", "00"), "", None),
        ("918613237978737", ("+", "00", ""), "", ("91", "India")),
        ("3868158407", ("+", "00"), "", None),
        ("3868158407", ("+", "00"), "US", ("1", "United States")),
        ("1002", ("+", "00", ""), "", None),
        ("+", ("+", "00"), "", None),
        ("voicemail", ("+", "00", ""), "US", None),
        (None, ("+", "00"), "", None),
    ],
)
def test_country_of_the_called_number(
    number: str | None, prefixes: tuple[str, ...], region: str, expected: Any
) -> None:
    rule = CountryRule(international_prefixes=prefixes, default_region=region)
    assert country_of(number, rule) == expected


@pytest.mark.parametrize(
    ("value", "base", "expected"),
    [
        (
            "/var/lib/freeswitch/recordings/a b.wav",
            "https://r.example/fs",
            "https://r.example/fs/a%20b.wav",
        ),
        ("2024/01/uuid.mp3", "https://r.example/fs/", "https://r.example/fs/uuid.mp3"),
        (
            "https://s3.example/x.wav?sig=1",
            "https://r.example/fs/",
            "https://s3.example/x.wav?sig=1",
        ),
        ("/var/lib/freeswitch/recordings/uuid.wav", None, None),
        (
            "/var/lib/freeswitch/recordings/",
            "https://r.example/fs/",
            "https://r.example/fs/recordings",
        ),
    ],
)
def test_recording_url(value: str, base: str | None, expected: str | None) -> None:
    assert recording_url(value, base) == expected


@pytest.mark.parametrize(
    ("variables", "b_leg", "legs", "ignored"),
    [
        ({}, False, {}, False),
        ({}, True, {}, True),
        ({}, True, {"b_legs": True}, False),
        ({"cc_side": "agent"}, False, {}, True),
        ({"cc_side": "agent"}, False, {"callcenter_agent_legs": True}, False),
        ({"cc_side": "member"}, False, {}, False),
        ({"loopback_leg": "B"}, False, {}, True),
        ({"loopback_leg": "A"}, False, {}, False),
        ({"loopback_leg": "B"}, False, {"loopback_b_legs": True}, False),
    ],
)
def test_ignored_legs(
    variables: dict[str, str], b_leg: bool, legs: dict[str, bool], ignored: bool
) -> None:
    rule = LegsRule.model_validate(dict(MAPPING.legs) | legs)
    reason = ignored_leg(Call(variables=variables, is_b_leg=b_leg), rule)
    assert (reason is not None) == ignored


# Refusals of a CDR, naming the field


def refusal(cdr: dict[str, Any], mapping: FreeswitchMapping = MAPPING) -> dict[str, str]:
    with pytest.raises(UnmappableCdr) as caught:
        map_cdr(cdr, mapping, record_zone=PLUS_8)
    return {problem.field: problem.reason for problem in caught.value.problems}


def test_a_cdr_without_its_identity_or_times_is_refused_with_each_field() -> None:
    cdr = cdr_of("cgrates_inbound_answered_2018.json")
    variables = cdr["variables"]
    for name in ("uuid", "start_epoch", "start_uepoch", "start_stamp"):
        del variables[name]
    variables["end_epoch"] = "soon"
    variables["answer_epoch"] = "9" * 5000
    assert refusal(cdr) == {
        "callSessionId": "none of its sources has a value: uuid",
        "callStartTime": "the CDR has none of start_epoch, start_uepoch, start_stamp",
        "answerTime": f"answer_epoch is not a number of seconds: {'9' * 40!r}",
        "callEndTime": "end_epoch is not a number of seconds: 'soon'",
    }


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("end_epoch", "0", "end_epoch is 0"),
        ("end_epoch", "999999999999999999", "end_epoch is out of range: 999999999999999999"),
        ("end_epoch", "99999999999", "must be a time in the years 1970 to 2099"),
        ("end_epoch", "1.5", "end_epoch is not a number of seconds: '1.5'"),
        (
            "end_epoch",
            "\N{SUPERSCRIPT TWO}",
            "end_epoch is not a number of seconds: '\N{SUPERSCRIPT TWO}'",
        ),
    ],
)
def test_an_impossible_time_is_refused_naming_the_variable(
    variable: str, value: str, reason: str
) -> None:
    cdr = cdr_of("cgrates_inbound_answered_2018.json")
    cdr["variables"][variable] = value
    assert refusal(cdr) == {"callEndTime": reason}


def test_a_value_the_record_refuses_is_named_with_its_source() -> None:
    cdr = cdr_of("cgrates_inbound_answered_2018.json")
    cdr["variables"]["ccpush_cost"] = "0,015 USD"
    cdr["variables"]["ccpush_agent_name"] = "Li\x07Na"
    assert refusal(cdr) == {
        "cost": 'must be a decimal string such as "0.0150" (read from ccpush_cost)',
        "agentName": "must not contain control characters other than tab, CR and LF"
        " (U+0007 at character 3) (read from ccpush_agent_name)",
    }


def test_a_cdr_without_a_direction_is_refused() -> None:
    cdr = cdr_of("cgrates_inbound_answered_2018.json")
    del cdr["variables"]["direction"]
    assert refusal(cdr) == {
        "callType": "not a queue call, and none of call_direction, direction has a value of"
        " [call_type.directions]"
    }


def test_a_body_without_variables_is_refused() -> None:
    assert refusal({"callflow": []}) == {"variables": "is missing: not a CDR"}


def test_an_end_before_the_answer_is_refused() -> None:
    cdr = cdr_of("cgrates_inbound_answered_2018.json")
    cdr["variables"]["end_epoch"] = "1515666346"
    assert refusal(cdr) == {"callEndTime": "is before answerTime"}


# The mapping file


def test_the_docs_show_the_default_mapping_as_it_is() -> None:
    assert DEFAULT_MAPPING in FREESWITCH_DOC.read_text(encoding="utf-8")


def test_a_mapping_file_changes_the_keys_it_names_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "freeswitch.toml"
    path.write_text(
        '[fields]\ncallId = ["sip_h_X-callId"]\nremark = ["sip_h_X-campaignId"]\n'
        '[country]\ndefault_region = "US"\n'
        "[hangup_reason.causes]\nNORMAL_CLEARING = 4\n",
        encoding="utf-8",
    )
    mapping = FreeswitchMapping.read(path)
    assert mapping.fields.caller == MAPPING.fields.caller
    assert mapping.hangup_reason.causes["USER_BUSY"] == HangupReason.CALLED_BUSY
    mapped = map_cdr(cdr_of("onex_outbound_originate_2025.json"), mapping, record_zone=PLUS_8)
    assert isinstance(mapped, MappedCdr)
    changed = {
        "callId": "da1d8360-5612-4237-a387-bef6995995af",
        "remark": "8111001",
        "ccode": "1",
        "ccodeName": "United States",
        "hangupReason": HangupReason.CALL_ABNORMALITY,
    }
    assert mapped.record.model_dump() == EXPECTED["onex_outbound_originate_2025.json"] | changed


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('[feilds]\ncallId = ["x"]\n', "unknown table 'feilds'"),
        ('app_variable = "x"\n', "unknown table 'app_variable'"),
        ('[fields]\ncallid = ["x"]\n', "fields.callid: is not a key of this table"),
        ('[fields]\ncallId = "x"\n', "fields.callId"),
        ('[fields]\ncallId = ["has space"]\n', "fields.callId.0"),
        ("[legs]\nb_legs = 1\n", "legs.b_legs"),
        ('[call_type]\nqueue = "1"\n', "call_type.queue"),
        ("[call_type.directions]\ninbound = 1000\n", "call_type.directions.inbound"),
        ('[labels]\nseparator = ""\n', "labels.separator"),
    ],
)
def test_a_wrong_mapping_is_refused_naming_the_key(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        FreeswitchMapping.load(text)


def test_a_mapping_file_that_cannot_be_read_stops_the_start(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[fields\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"broken\.toml: not TOML"):
        FreeswitchMapping.read(broken)
    with pytest.raises(ConfigurationError, match=r"missing\.toml: cannot be read"):
        FreeswitchMapping.read(tmp_path / "missing.toml")


def test_the_settings_check_the_mapping_file_and_make_the_mapping(tmp_path: Path) -> None:
    path = tmp_path / "freeswitch.toml"
    path.write_text('[fields]\ncallid = ["x"]\n', encoding="utf-8")
    database = f"sqlite:///{tmp_path / 'ccpush.db'}"
    with pytest.raises(ValidationError, match=r"fields\.callid: is not a key of this table"):
        make_settings(tmp_path, database, freeswitch_mapping=str(path))
    path.write_text('[fields]\ncallId = ["sip_h_X-callId"]\n', encoding="utf-8")
    settings = make_settings(
        tmp_path,
        database,
        freeswitch_mapping=str(path),
        freeswitch_app_variable="domain_uuid",
        freeswitch_timezone="Asia/Kolkata",
        freeswitch_recording_base_url=RECORDINGS,
    )
    mapping = FreeswitchMapping.from_settings(settings)
    assert mapping.fields.callId == ("sip_h_X-callId",)
    assert (mapping.app_variable, mapping.recording_base_url) == ("domain_uuid", RECORDINGS)
    assert mapping.switch_zone == parse_zone("Asia/Kolkata")


# The route, on every backend


@pytest.fixture
async def fs_service(tmp_path: Path, db_url: str, clock: ManualClock) -> AsyncIterator[Service]:
    """A service whose FreeSWITCH recordings are at ``RECORDINGS``."""
    service = make_service(tmp_path, db_url, clock, freeswitch_recording_base_url=RECORDINGS)
    await service.start(dispatch=False)
    yield service
    await service.stop()


@pytest.fixture
async def api(fs_service: Service) -> Api:
    return Api(fs_service)


async def new_app(api: Api, push_url: str | None = None, account: str | None = None) -> str:
    async with api.client() as admin:
        body = {"name": "switch", "pushUrl": push_url, "accountId": account}
        return str((await ok(await admin.post("/v1/apps", json=body), 201))["id"])


async def platform_key(api: Api) -> str:
    async with api.client() as admin:
        return str(
            (await ok(await admin.post("/v1/platform-keys", json={"name": "fs"}), 201))["secret"]
        )


def basic(key: str, name: str = "freeswitch") -> dict[str, str]:
    """What curl sends for mod_json_cdr's ``cred=<name>:<key>`` (auth-scheme basic)."""
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{key}".encode()).decode()}


async def post_cdr(
    api: Api,
    cdr: bytes,
    *,
    app_id: str | None,
    encoding: str = "json",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A POST as mod_json_cdr makes it: ``<url>?uuid=<uuid>`` appended to the configured
    URL (``...?appId=<app>`` here), even when that URL has a query already."""
    body, kind = as_sent(cdr, encoding)
    url = PATH + (f"?appId={app_id}" if app_id else "") + "?uuid=fs-leg-uuid"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(api.app), base_url="http://ccpush.test"
    ) as client:
        return await client.post(
            url,
            content=body,
            headers={"Content-Type": kind, "User-Agent": "freeswitch-json/1.0", **(headers or {})},
        )


@pytest.mark.parametrize("encoding", ["json", "form", "base64"])
async def test_each_cdr_is_stored_and_pushed_exactly_as_the_contract_says(
    api: Api, fs_service: Service, receiver: Receiver, encoding: str
) -> None:
    auth = basic(await platform_key(api))
    for name in sorted(EXPECTED):
        app_id = await new_app(api, receiver.url)
        response = await post_cdr(
            api, cdr_bytes(name), app_id=app_id, encoding=encoding, headers=auth
        )
        answer = await ok(response, 202)
        session = EXPECTED[name]["callSessionId"]
        assert [(r["callSessionId"], r["status"]) for r in answer["results"]] == [
            (session, "accepted")
        ]
    assert await fs_service.dispatcher.run_until_idle() == len(EXPECTED)
    pushed = sorted((push.session_id, push.body) for push in receiver.pushes)
    expected = sorted(
        (record["callSessionId"], CallRecord.model_validate(record).push_body())
        for record in EXPECTED.values()
    )
    assert pushed == expected
    assert {push.headers["Content-Type"] for push in receiver.pushes} == {
        "application/json;charset=UTF-8"
    }


async def stored(service: Service, app_id: str) -> list[str]:
    versions = await service.store.records_by_sequence(app_id, 1, 10**6, 100)
    return [version.call_session_id for version in versions]


async def test_a_b_leg_is_answered_ignored_and_not_stored(api: Api, fs_service: Service) -> None:
    app_id = await new_app(api)
    response = await post_cdr(
        api, cdr_bytes(B_LEG), app_id=app_id, headers=basic(await platform_key(api))
    )
    assert await ok(response, 200) == {
        "status": "ignored",
        "reason": "a B-leg: its call is pushed from the CDR of the A-leg that originated it",
    }
    assert await stored(fs_service, app_id) == []


async def test_the_same_cdr_posted_again_is_a_duplicate_pushed_once(
    api: Api, fs_service: Service, receiver: Receiver
) -> None:
    app_id = await new_app(api, receiver.url)
    auth = basic(await platform_key(api))
    cdr = cdr_bytes("onex_outbound_originate_2025.json")
    first = await ok(await post_cdr(api, cdr, app_id=app_id, headers=auth), 202)
    again = await ok(await post_cdr(api, cdr, app_id=app_id, encoding="form", headers=auth), 202)
    assert (first["accepted"], again["duplicates"]) == (1, 1)
    assert await fs_service.dispatcher.run_until_idle() == 1


async def test_keys_as_basic_password_or_bearer_token(api: Api) -> None:
    cdr = cdr_bytes("onex_inbound_unanswered_2025.json")
    async with api.client() as admin:
        account = (await ok(await admin.post("/v1/accounts", json={"name": "Acme"}), 201))["id"]
        made = await admin.post(
            f"/v1/accounts/{account}/keys", json={"name": "switch", "scope": "ingest"}
        )
        account_key = (await ok(made, 201))["secret"]
    own_app = await new_app(api, account=account)
    other_app = await new_app(api)
    platform = await platform_key(api)
    accepted = [
        (other_app, basic(platform)),
        (other_app, basic(platform, name="")),
        (other_app, {"Authorization": f"Bearer {platform}"}),
        (own_app, basic(account_key)),
        (own_app, {"Authorization": f"Bearer {account_key}"}),
    ]
    for app_id, headers in accepted:
        response = await post_cdr(api, cdr, app_id=app_id, headers=headers)
        assert response.status_code == 202, (headers, response.text)
    foreign = await post_cdr(api, cdr, app_id=other_app, headers=basic(account_key))
    assert foreign.status_code == 404, foreign.text


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic " + base64.b64encode(b"freeswitch:ccpk_wrong").decode()},
        {"Authorization": "Basic not-base64"},
        {"Authorization": "Bearer ccpk_wrong"},
        {"Authorization": "Digest username=freeswitch"},
    ],
)
async def test_without_a_valid_key_the_answer_is_401_asking_for_basic(
    api: Api, fs_service: Service, headers: dict[str, str]
) -> None:
    app_id = await new_app(api)
    response = await post_cdr(
        api, cdr_bytes("onex_inbound_unanswered_2025.json"), app_id=app_id, headers=headers
    )
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == 'Basic realm="ccpush", Bearer'
    assert response.json()["error"]["code"] == "unauthorized"
    assert await stored(fs_service, app_id) == []


def with_variables(name: str, **variables: str) -> bytes:
    data = json.loads(cdr_bytes(name))
    data["variables"].update(variables)
    return json.dumps(data).encode()


async def test_the_app_variable_names_the_app_before_the_url(api: Api, fs_service: Service) -> None:
    named, in_url = await new_app(api), await new_app(api)
    auth = basic(await platform_key(api))
    cdr = with_variables("onex_outbound_originate_2025.json", ccpush_app_id=named)
    await ok(await post_cdr(api, cdr, app_id=None, headers=auth), 202)
    await ok(await post_cdr(api, cdr, app_id=in_url, headers=auth), 202)
    session = EXPECTED["onex_outbound_originate_2025.json"]["callSessionId"]
    assert await stored(fs_service, named) == [session]
    assert await stored(fs_service, in_url) == []


async def test_the_app_variable_is_a_setting(tmp_path: Path, db_url: str) -> None:
    service = make_service(tmp_path, db_url, freeswitch_app_variable="domain_uuid")
    await service.start(dispatch=False)
    try:
        api = Api(service)
        app_id = await new_app(api)
        cdr = with_variables("onex_inbound_unanswered_2025.json", domain_uuid=app_id)
        await ok(await post_cdr(api, cdr, app_id=None, headers=basic(await platform_key(api))), 202)
        assert await stored(service, app_id) == ["51156b0b-f91b-4fd3-9c8f-15226f6098be"]
        response = await post_cdr(
            api,
            cdr_bytes("onex_inbound_unanswered_2025.json"),
            app_id=None,
            headers=basic(await platform_key(api)),
        )
        assert response.json()["error"]["problems"][0]["field"] == "domain_uuid"
    finally:
        await service.stop()


async def test_a_cdr_naming_no_app_is_refused_naming_the_variable(api: Api) -> None:
    response = await post_cdr(
        api,
        cdr_bytes("onex_inbound_unanswered_2025.json"),
        app_id=None,
        headers=basic(await platform_key(api)),
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["problems"] == [
        {
            "field": "ccpush_app_id",
            "reason": "is not set, and the URL has no ?appId=: one of them must name the app",
        }
    ]


async def test_an_unmappable_cdr_is_refused_naming_the_field_and_nothing_is_stored(
    api: Api, fs_service: Service
) -> None:
    app_id = await new_app(api)
    cdr = with_variables("onex_outbound_originate_2025.json", ccpush_cost="free")
    response = await post_cdr(
        api, cdr, app_id=app_id, encoding="form", headers=basic(await platform_key(api))
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["problems"] == [
        {
            "field": "cost",
            "reason": 'must be a decimal string such as "0.0150" (read from ccpush_cost)',
        }
    ]
    assert await stored(fs_service, app_id) == []


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{}", "text/plain", 415, "unsupported_media_type"),
        (b"{not json", "application/json", 400, "invalid_cdr"),
        (b"cdr=e30", "application/x-www-form-base64-encoded", 400, "invalid_cdr"),
        (b"{}", "application/json", 422, "invalid_request"),
    ],
)
async def test_a_body_that_is_not_a_cdr_is_refused(
    api: Api, body: bytes, content_type: str, status: int, code: str
) -> None:
    app_id = await new_app(api)
    async with api.client(await platform_key(api)) as client:
        response = await client.post(
            f"{PATH}?appId={app_id}", content=body, headers={"Content-Type": content_type}
        )
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


async def test_an_app_id_in_the_url_with_a_control_character_is_refused(api: Api) -> None:
    response = await post_cdr(
        api,
        cdr_bytes("onex_inbound_unanswered_2025.json"),
        app_id="app%01x",
        headers=basic(await platform_key(api)),
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["problems"][0]["field"] == "appId"


async def test_a_cdr_larger_than_other_requests_is_taken(api: Api, fs_service: Service) -> None:
    app_id = await new_app(api)
    cdr = with_variables("cgrates_inbound_answered_2018.json", switch_r_sdp="a=x\r\n" * 20_000)
    assert len(cdr) > fs_service.settings.max_request_bytes
    response = await post_cdr(
        api, cdr, app_id=app_id, encoding="form", headers=basic(await platform_key(api))
    )
    await ok(response, 202)
