"""What a receiver sees on the wire: method, exact content type, exact fields and JSON types;
the headers the dispatcher writes are the ones the receiver kit reads; the wire and the kit
need nothing but the standard library."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ccpush import receiver as kit
from ccpush.clock import ManualClock
from ccpush.dispatcher import Dispatcher, DispatchSettings
from ccpush.models import Claimed
from ccpush.retry import RetrySchedule
from ccpush.senders import Sender
from ccpush.service import Service
from ccpush.signing import generate_secret
from ccpush.store import open_store
from ccpush.wire import parse_zone
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


# The server's headers and the receiver kit's: the same names, every field recovered

WHEN = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
BODY = json.dumps(sample_record("wire-1")).encode()
SECRETS = (generate_secret(), generate_secret())


def dispatcher_in(zone: str, tmp_path: Path) -> Dispatcher:
    """A dispatcher writing headers only: its store is never opened, its sender never
    started."""
    clock = ManualClock(WHEN)
    settings = DispatchSettings(schedule=RetrySchedule.parse("30m"), record_timezone=zone)
    store = open_store(f"sqlite:///{tmp_path / 'unused.db'}")
    return Dispatcher(store, Sender(clock), clock, settings)


@pytest.mark.parametrize("zone", ["+08:00", "-05:30", "Asia/Shanghai"])
@pytest.mark.parametrize("keys", [(), SECRETS[:1], SECRETS], ids=["unsigned", "signed", "two"])
def test_the_kit_reads_back_every_header_the_dispatcher_writes(
    zone: str, keys: tuple[str, ...], tmp_path: Path
) -> None:
    # Values the kit would not assume for a header it failed to find.
    item = Claimed(41, "app_1", "wire-1", "https://example.com/", BODY, 1234, 3, 4, None, keys)
    headers = dispatcher_in(zone, tmp_path).headers_for(item, WHEN)
    push = kit.parse_push(BODY, headers)
    assert push.info == kit.PushInfo(
        webhook_id="dlv_41",
        sequence=1234,
        version=3,
        attempt=4,
        is_test=False,
        timezone=parse_zone(zone),
        timezone_name=zone,
        timestamp=WHEN,
    )
    assert push.record.call_session_id == "wire-1"
    if keys:
        for secret in keys:
            kit.Verifier(secret, now=lambda: WHEN).verify(BODY, headers)
    else:
        with pytest.raises(kit.MissingHeaderError):
            kit.Verifier(SECRETS[0], now=lambda: WHEN).verify(BODY, headers)


@pytest.mark.parametrize("keys", [(), SECRETS[:1]], ids=["unsigned", "signed"])
def test_the_kit_reads_a_test_push_as_one(keys: tuple[str, ...], tmp_path: Path) -> None:
    headers = dispatcher_in("-05:30", tmp_path).test_headers(keys, BODY)
    info = kit.read_push_info(headers)
    assert (info.is_test, info.sequence, info.attempt) == (True, None, 1)
    assert (info.timezone_name, info.timestamp) == ("-05:30", WHEN)
    assert info.webhook_id.startswith("test_")
    if keys:
        kit.Verifier(keys, now=lambda: WHEN).verify(BODY, headers)


# Standard library only

SERVER_PACKAGES = {"aiohttp", "asyncpg", "fastapi", "pydantic", "pyreqwest", "typer", "yarl"}
IMPORTED = """
import site, sys
before = set(sys.modules)
import {module}
installed = tuple(site.getsitepackages())
for name in sorted(set(sys.modules) - before):
    where = getattr(sys.modules[name], "__file__", None) or ""
    print(name, "installed" if where.startswith(installed) else "-")
"""
"""Prints each module the import loaded, and whether it is an installed package's."""


OURS = {
    "ccpush.wire": {"ccpush", "ccpush.wire"},
    "ccpush.receiver": {"ccpush", "ccpush.codes", "ccpush.receiver", "ccpush.wire"},
}


@pytest.mark.parametrize("module", OURS)
def test_the_wire_and_the_kit_import_only_the_standard_library(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORTED.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = dict(line.split() for line in done.stdout.splitlines())
    assert not {name.partition(".")[0] for name in imported} & SERVER_PACKAGES
    ours = {name for name in imported if name.partition(".")[0] == "ccpush"}
    assert ours == OURS[module]
    assert [name for name in imported.keys() - ours if imported[name] == "installed"] == []
