"""What a receiver sees on the wire: method, exact content type, exact fields and JSON types."""

from __future__ import annotations

from typing import Any

from ccpush.service import Service
from tests.conftest import minimal_record, sample_record
from tests.helpers import new_record
from tests.receiver import Receiver

# The contract's fields, in its order, copied from the push document.
CONTRACT_FIELDS = [
    "callId", "callSessionId", "called", "calledInfo", "caller", "ccode", "ccodeName",
    "agentName", "agentGroupName", "agentAccount", "callDuration", "callType", "hangupCode",
    "hangupReason", "hangingDirection", "labels", "baseCost", "cost", "remark",
    "callStartTime", "answerTime", "callEndTime", "voiceUrl",
]  # fmt: skip
INTEGERS = {"callDuration", "callType", "hangupReason", "hangingDirection"}


async def deliver(service: Service, receiver: Receiver, *records: dict[str, Any]) -> None:
    store, now = service.store, service.clock.now()
    app = await store.create_app(name="wire", push_url=receiver.url, now=now)
    await store.ingest(app.id, [new_record(r) for r in records], now=now)
    assert await service.dispatcher.run_until_idle() == len(records)


def assert_contract_types(body: dict[str, Any]) -> None:
    assert list(body) == CONTRACT_FIELDS
    for name, value in body.items():
        if value is None:
            continue
        if name in INTEGERS:
            assert type(value) is int, name
        elif name == "labels":
            assert isinstance(value, list)
            assert all(type(label) is str for label in value)
        else:
            assert type(value) is str, name


async def test_a_full_record_arrives_exactly_as_the_contract_says(
    service: Service, receiver: Receiver
) -> None:
    record = sample_record("23111713424802472", agentName="李娜")
    await deliver(service, receiver, record)
    [push] = receiver.pushes
    assert push.method == "POST"
    assert push.path == "/cdr"
    assert push.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert push.json == record
    assert_contract_types(push.json)
    assert "李娜".encode() in push.body  # UTF-8 as is, not \\u escapes
    assert push.headers["webhook-id"].startswith("dlv_")
    assert push.headers["ccpush-attempt"] == "1"
    assert push.headers["ccpush-record-timezone"] == "+08:00"


async def test_absent_values_are_null_and_labels_an_empty_array(
    service: Service, receiver: Receiver
) -> None:
    await deliver(service, receiver, minimal_record("unanswered-1"))
    [push] = receiver.pushes
    body = push.json
    assert_contract_types(body)
    assert body["labels"] == []
    assert body["callId"] is None
    assert body["answerTime"] is None
    assert body["callDuration"] == 0
    present = {
        "callSessionId",
        "callType",
        "callDuration",
        "callStartTime",
        "callEndTime",
        "labels",
    }
    assert {name for name, value in body.items() if value is None} == set(CONTRACT_FIELDS) - present


async def test_cost_strings_keep_their_exact_decimals(service: Service, receiver: Receiver) -> None:
    await deliver(service, receiver, sample_record("c1", baseCost="0.0100", cost="12.3450"))
    body = receiver.pushes[0].json
    assert (body["baseCost"], body["cost"]) == ("0.0100", "12.3450")
