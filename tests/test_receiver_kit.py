"""The receiver kit (``ccpush.receiver``) against real pushes from a running ccpush.

``Inbox`` is a customer's receiver built on the kit as ``docs/receiving.md`` describes it,
answering ccpush's pushes through the loopback receiver of ``tests/receiver.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from ccpush import codes
from ccpush import receiver as kit
from ccpush import record as contract
from ccpush.clock import ManualClock
from ccpush.service import Service
from ccpush.signing import generate_secret
from tests.api_client import Api, ok
from tests.conftest import minimal_record, sample_record
from tests.helpers import make_service, make_settings
from tests.receiver import Push, Receiver, Reply
from tests.served import ServerThread, served_api

PLUS_8 = timezone(timedelta(hours=8))
DOCS = Path(__file__).parent.parent / "docs" / "receiving.md"


class Inbox:
    """A receiver built on the kit: verify, skip repeats, upsert by version, watch the gaps."""

    def __init__(self, secret: str, clock: ManualClock) -> None:
        self.verifier = kit.Verifier(secret, now=clock.now)
        self.seen = kit.MemoryIdempotencyStore()
        self.gaps = kit.GapTracker()
        self.calls: dict[str, tuple[int, kit.ReceivedRecord]] = {}
        self.handled: list[str] = []
        self.skipped: list[str] = []
        self.lost_answers = 0
        """The next pushes are handled, but the answer says 503 (as if it were lost)."""
        self.outage = 0
        """The next pushes are answered 503 unread (the receiver is down)."""
        self.lose: set[int] = set()
        """Sequence numbers answered 200 but dropped (a bug on the receiving side)."""

    def respond(self, arrived: Push, _: int) -> Reply:
        if self.outage:
            self.outage -= 1
            return Reply(status=503)
        try:
            self.verifier.verify(arrived.body, arrived.headers)
        except kit.VerificationError:
            return Reply(status=401)
        push = kit.parse_push(arrived.body, arrived.headers)
        if push.info.sequence not in self.lose:
            self.take(push)
        if self.lost_answers:
            self.lost_answers -= 1
            return Reply(status=503)
        return Reply(status=200)

    def take(self, push: kit.Push) -> None:
        with kit.first_delivery(self.seen, push.info.webhook_id) as first:
            (self.handled if first else self.skipped).append(push.info.webhook_id)
            if first and push.info.sequence is not None:
                self.save(push.info.version, push.record)
                self.gaps.add(push.info.sequence)

    def save(self, version: int, record: kit.ReceivedRecord) -> None:
        kept = self.calls.get(record.call_session_id)
        if kept is None or kept[0] < version:
            self.calls[record.call_session_id] = (version, record)


async def app_with_secret(admin: httpx.AsyncClient, url: str, **fields: Any) -> tuple[str, str]:
    app = await ok(
        await admin.post("/v1/apps", json={"name": "kit", "pushUrl": url, **fields}), 201
    )
    keys = await ok(await admin.get(f"/v1/apps/{app['id']}/signing-secret"))
    return app["id"], keys["secret"]


async def ingest(admin: httpx.AsyncClient, app_id: str, *records: dict[str, Any]) -> None:
    await ok(await admin.post(f"/v1/apps/{app_id}/call-records", json=list(records)), 202)


async def pushed(
    admin: httpx.AsyncClient, service: Service, app_id: str, *records: dict[str, Any]
) -> None:
    await ingest(admin, app_id, *records)
    await service.dispatcher.run_until_idle()


# Verifying and reading real pushes


async def test_a_real_push_verifies_and_reads_into_python_types(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver, clock: ManualClock
) -> None:
    app_id, secret = await app_with_secret(admin, receiver.url)
    await pushed(admin, service, app_id, sample_record("full"))
    [arrived] = receiver.pushes
    kit.Verifier(secret, now=clock.now).verify(arrived.body, arrived.headers)
    push = kit.parse_push(arrived.body, arrived.headers)
    assert push.info == kit.PushInfo(
        webhook_id=arrived.headers["webhook-id"],
        sequence=1,
        version=1,
        attempt=1,
        is_test=False,
        timezone=PLUS_8,
        timezone_name="+08:00",
        timestamp=clock.now(),
    )
    record = push.record
    assert record.call_type is kit.CallType.OUTGOING
    assert record.hangup_reason is kit.HangupReason.OUTGOING_HUNG_UP
    assert record.hanging_direction is kit.HangingDirection.CUSTOMER
    assert (record.base_cost, record.cost) == (Decimal("0.0100"), Decimal("0.0150"))
    assert record.labels == ("Intended customers", "High level")
    assert record.call_start_at == datetime(2023, 11, 17, 13, 42, 30, tzinfo=PLUS_8)
    assert record.answer_at == datetime(2023, 11, 17, 5, 42, 33, tzinfo=UTC)
    assert record.call_end_at.utcoffset() == timedelta(hours=8)
    assert _as_contract_json(record) == arrived.json


def _as_contract_json(record: kit.ReceivedRecord) -> dict[str, Any]:
    """The record's attributes under the contract's names, in JSON's types."""
    plain: dict[str, Any] = {}
    for name, attribute in kit.CONTRACT_FIELDS.items():
        value = getattr(record, attribute)
        plain[name] = str(value) if isinstance(value, Decimal) else value
    plain["labels"] = list(record.labels)
    return plain


async def test_a_minimal_record_reads_with_nulls_in_an_iana_zone(
    tmp_path: Path, db_url: str, clock: ManualClock, receiver: Receiver
) -> None:
    service = make_service(tmp_path, db_url, clock, record_timezone="America/New_York")
    await service.start(dispatch=False)
    try:
        async with Api(service).client() as admin:
            app_id, _ = await app_with_secret(admin, receiver.url)
            await pushed(admin, service, app_id, minimal_record("bare"))
    finally:
        await service.stop()
    [arrived] = receiver.pushes
    push = kit.parse_push(arrived.body, arrived.headers)
    new_york = ZoneInfo("America/New_York")
    assert (push.info.timezone, push.info.timezone_name) == (new_york, "America/New_York")
    record = push.record
    assert record.call_type is kit.CallType.INCOMING
    assert record.labels == ()
    none_fields = set(kit.CONTRACT_FIELDS.values()) - {
        "call_session_id", "call_duration", "call_type", "labels", "call_start_time",
        "call_end_time",
    }  # fmt: skip
    assert {name: getattr(record, name) for name in none_fields} == dict.fromkeys(none_fields)
    assert record.answer_at is None
    assert record.call_start_at == datetime(2023, 11, 17, 18, 42, 30, tzinfo=UTC)


async def test_values_the_contract_does_not_document_stay_plain_ints(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver
) -> None:
    app_id, _ = await app_with_secret(admin, receiver.url)
    odd = minimal_record("odd", callType=42, hangupReason=7, hangingDirection=2)
    await pushed(admin, service, app_id, odd)
    record = kit.parse_push(receiver.pushes[0].body, receiver.pushes[0].headers).record
    assert (record.call_type, type(record.call_type)) == (42, int)
    assert record.hangup_reason is kit.HangupReason.CALLED_BUSY
    assert (record.hanging_direction, type(record.hanging_direction)) == (2, int)


async def test_a_tampered_body_another_secret_or_a_stale_push_is_refused(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver, clock: ManualClock
) -> None:
    app_id, secret = await app_with_secret(admin, receiver.url)
    await pushed(admin, service, app_id, minimal_record("s1"))
    [arrived] = receiver.pushes
    body, headers = arrived.body, arrived.headers
    verifier = kit.Verifier(secret, now=clock.now)
    with pytest.raises(kit.SignatureError):
        verifier.verify(body.replace(b'"s1"', b'"s2"'), headers)
    with pytest.raises(kit.SignatureError):
        kit.Verifier(generate_secret(), now=clock.now).verify(body, headers)
    later = clock.now() + timedelta(minutes=6)
    with pytest.raises(kit.TimestampError, match="too old"):
        kit.Verifier(secret, now=lambda: later).verify(body, headers)
    earlier = clock.now() - timedelta(minutes=6)
    with pytest.raises(kit.TimestampError, match="future"):
        kit.Verifier(secret, now=lambda: earlier).verify(body, headers)
    patient = kit.Verifier(secret, now=lambda: later, tolerance=timedelta(minutes=10))
    patient.verify(body, headers)
    unsigned = {k: v for k, v in headers.items() if k.lower() != "webhook-signature"}
    with pytest.raises(kit.MissingHeaderError, match="signing turned off"):
        verifier.verify(body, unsigned)
    for refusal in (kit.SignatureError, kit.TimestampError, kit.MissingHeaderError):
        assert issubclass(refusal, kit.VerificationError)


async def test_during_a_rotation_either_secret_verifies(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver, clock: ManualClock
) -> None:
    app_id, old = await app_with_secret(admin, receiver.url)
    new = (await ok(await admin.post(f"/v1/apps/{app_id}/signing-secret/rotate")))["secret"]
    await pushed(admin, service, app_id, minimal_record("rotating"))
    [arrived] = receiver.pushes
    assert len(arrived.headers["webhook-signature"].split()) == 2
    for secrets in ([old], [new], [generate_secret(), new], (old, generate_secret())):
        kit.Verifier(secrets, now=clock.now).verify(arrived.body, arrived.headers)
    with pytest.raises(kit.SignatureError):
        kit.Verifier([generate_secret()], now=clock.now).verify(arrived.body, arrived.headers)


async def test_a_test_push_is_signed_and_marked(
    admin: httpx.AsyncClient, receiver: Receiver, clock: ManualClock
) -> None:
    app_id, secret = await app_with_secret(admin, receiver.url)
    await ok(await admin.post(f"/v1/apps/{app_id}/test-push"))
    [arrived] = receiver.pushes
    kit.Verifier(secret, now=clock.now).verify(arrived.body, arrived.headers)
    push = kit.parse_push(arrived.body, arrived.headers)
    assert push.info.is_test
    assert push.info.sequence is None
    assert push.info.webhook_id.startswith("test_")
    assert push.record.call_session_id.startswith("test-")


# Repeats, gaps and late changes


async def test_a_repeated_delivery_is_handled_once(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver, clock: ManualClock
) -> None:
    app_id, secret = await app_with_secret(admin, receiver.url)
    inbox = Inbox(secret, clock)
    receiver.responder = inbox.respond
    inbox.lost_answers = 1
    await pushed(admin, service, app_id, minimal_record("once"))
    clock.advance(timedelta(minutes=30))
    await service.dispatcher.run_until_idle()
    first, second = receiver.pushes
    webhook_id = first.headers["webhook-id"]
    assert second.headers["webhook-id"] == webhook_id
    assert (first.headers["ccpush-attempt"], second.headers["ccpush-attempt"]) == ("1", "2")
    assert (inbox.handled, inbox.skipped) == ([webhook_id], [webhook_id])
    assert list(inbox.calls) == ["once"]
    history = await ok(await admin.get(f"/v1/apps/{app_id}/call-records/once/deliveries"))
    assert [a["statusCode"] for a in history["items"][0]["attemptLog"]] == [503, 200]


async def test_a_late_change_wins_over_an_earlier_version_that_arrives_after_it(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver, clock: ManualClock
) -> None:
    app_id, secret = await app_with_secret(admin, receiver.url)
    inbox = Inbox(secret, clock)
    receiver.responder = inbox.respond
    inbox.outage = 1  # version 1 finds the receiver down, and is retried in 30 minutes
    await pushed(admin, service, app_id, minimal_record("call-1"))
    changed = minimal_record("call-1", remark="called back", voiceUrl="https://rec.test/1.mp3")
    await pushed(admin, service, app_id, changed)
    assert inbox.gaps.missing() == [kit.Gap(1, 1)]
    clock.advance(timedelta(minutes=30))
    await service.dispatcher.run_until_idle()
    arrivals = [
        (p.headers["ccpush-record-version"], p.headers["ccpush-attempt"]) for p in receiver.pushes
    ]
    assert arrivals == [("1", "1"), ("2", "1"), ("1", "2")]
    version, record = inbox.calls["call-1"]
    assert (version, record.remark, record.voice_url) == (
        2,
        "called back",
        "https://rec.test/1.mp3",
    )
    assert inbox.gaps.missing() == []
    assert inbox.gaps.received_through == 2


async def test_a_gap_is_found_and_filled_through_the_reconciliation_query(
    tmp_path: Path,
    db_url: str,
    admin: httpx.AsyncClient,
    service: Service,
    receiver: Receiver,
    clock: ManualClock,
) -> None:
    account = await ok(await admin.post("/v1/accounts", json={"name": "customer"}), 201)
    keys = f"/v1/accounts/{account['id']}/keys"
    api_key = (await ok(await admin.post(keys, json={"name": "reconcile"}), 201))["secret"]
    app_id, secret = await app_with_secret(admin, receiver.url, accountId=account["id"])
    inbox = Inbox(secret, clock)
    receiver.responder = inbox.respond
    inbox.lose = {3, 4, 9}  # answered 200, then lost by the receiver
    await pushed(admin, service, app_id, *(minimal_record(f"r{n}") for n in range(1, 9)))
    await pushed(admin, service, app_id, minimal_record("r2", remark="changed"))  # 9: r2 v2
    await pushed(admin, service, app_id, minimal_record("r9"))  # 10
    assert inbox.gaps.missing() == [kit.Gap(3, 4), kit.Gap(9, 9)]
    assert str(inbox.gaps.missing()[0]) == "3–4"  # noqa: RUF001 - the en dash is meant
    with ServerThread(served_api(make_settings(tmp_path, db_url), dispatch=False)) as ccpush:
        fetched = await asyncio.to_thread(_catch_up, inbox, ccpush.url, app_id, api_key)
        with pytest.raises(kit.ReconciliationError) as refused:
            await asyncio.to_thread(_catch_up, inbox, ccpush.url, app_id, "ccpk_wrong")
    assert refused.value.status == 401
    assert [(m.sequence, m.version, m.record.call_session_id) for m in fetched] == [
        (3, 1, "r3"), (4, 1, "r4"), (9, 2, "r2"),
    ]  # fmt: skip
    as_pushed = {
        int(p.headers["ccpush-sequence"]): kit.parse_push(p.body, p.headers).record
        for p in receiver.pushes
    }
    assert all(missed.record == as_pushed[missed.sequence] for missed in fetched)
    assert (inbox.gaps.missing(), inbox.gaps.received_through) == ([], 10)
    assert sorted(inbox.calls) == [f"r{n}" for n in range(1, 10)]
    assert (inbox.calls["r2"][0], inbox.calls["r2"][1].remark) == (2, "changed")


def _catch_up(inbox: Inbox, url: str, app_id: str, api_key: str) -> list[kit.MissedRecord]:
    """What a receiver's catch-up job does, in pages of one to walk the cursor."""
    fetched = []
    for gap in inbox.gaps.missing() or [kit.Gap(1, 1)]:
        for missed in kit.fetch_missing(url, app_id, api_key, gap.first, gap.last, page_size=1):
            inbox.save(missed.version, missed.record)
            inbox.gaps.add(missed.sequence)
            fetched.append(missed)
    return fetched


# The documented examples


def _python_block(after_heading: str) -> str:
    text = DOCS.read_text()
    section = text[text.index(f"## {after_heading}\n") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no Python example under {after_heading}"
    return match.group(1)


async def test_the_fastapi_example_receives_real_pushes(
    tmp_path: Path, db_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    now_clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    service = make_service(tmp_path, db_url, now_clock)
    await service.start(dispatch=False)
    try:
        async with Api(service).client() as admin:
            app_id, secret = await app_with_secret(admin, receiver.url)
            monkeypatch.setenv("CDR_PUSH_SECRETS", f"{generate_secret()} {secret}")
            example: dict[str, Any] = {"__name__": "receiving_example"}
            exec(compile(_python_block("FastAPI"), str(DOCS), "exec"), example)  # noqa: S102
            with ServerThread(lambda: nullcontext(example["app"])) as served:
                await _push_to_the_example(admin, service, app_id, f"{served.url}/cdr")
    finally:
        await service.stop()
    assert {sid: version for sid, (version, _) in example["calls"].items()} == {"a": 2, "b": 1}
    assert example["calls"]["a"][1].remark == "changed"
    assert example["gaps"].missing() == []
    assert example["gaps"].received_through == 3


async def _push_to_the_example(
    admin: httpx.AsyncClient, service: Service, app_id: str, url: str
) -> None:
    await ok(await admin.patch(f"/v1/apps/{app_id}", json={"pushUrl": url}))
    await pushed(admin, service, app_id, sample_record("a"), minimal_record("b"))
    await pushed(admin, service, app_id, sample_record("a", remark="changed"))
    assert (await ok(await admin.post(f"/v1/apps/{app_id}/test-push")))["delivered"] is True
    state = await ok(await admin.get(f"/v1/apps/{app_id}/deliveries"))
    assert {d["state"] for d in state["items"]} == {"delivered"}
    async with httpx.AsyncClient() as client:
        forged = await client.post(
            url,
            content=json.dumps(minimal_record("forged")),
            headers={"webhook-id": "dlv_1", "webhook-timestamp": "1", "webhook-signature": "v1,x"},
        )
    assert forged.status_code == 401


def test_the_flask_example_is_valid_python() -> None:
    compile(_python_block("Flask"), str(DOCS), "exec")


# The kit alone


def test_the_kit_imports_without_the_servers_dependencies() -> None:
    script = """
import sys
for name in ("fastapi", "starlette", "aiohttp", "pydantic", "pydantic_settings", "asyncpg",
             "uvicorn", "uvloop", "typer", "yarl", "httpx"):
    sys.modules[name] = None
import ccpush.receiver as kit
record = kit.parse_record(sys.argv[1])
assert record.call_type is kit.CallType.INCOMING
print(" ".join(sorted(name for name in sys.modules if name.startswith("ccpush"))))
"""
    body = json.dumps(minimal_record("alone"))
    done = subprocess.run(
        [sys.executable, "-c", script, body], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ccpush", "ccpush.codes", "ccpush.receiver", "ccpush.wire"]


def test_the_kits_enums_are_the_contracts() -> None:
    assert (kit.CallType, kit.HangupReason, kit.HangingDirection) == (
        codes.CallType,
        codes.HangupReason,
        codes.HangingDirection,
    )
    assert tuple(kit.CONTRACT_FIELDS) == contract.FIELD_NAMES


def test_code_written_with_the_kits_first_names_still_runs() -> None:
    assert kit.CallRecord is kit.ReceivedRecord
    assert kit.parse_timezone("Asia/Shanghai") == ZoneInfo("Asia/Shanghai")
    assert {"CallRecord", "ReceivedRecord", "parse_timezone"} <= set(kit.__all__)


def test_the_gap_tracker_tolerates_disorder_and_repeats() -> None:
    gaps = kit.GapTracker()
    arrivals = [gaps.add(n) for n in (2, 5, 5, 1, 4, 2)]
    assert [a.new for a in arrivals] == [True, True, False, True, True, False]
    assert arrivals[0].opened == kit.Gap(1, 1)
    assert arrivals[1].opened == kit.Gap(3, 4)
    assert arrivals[3].filled == kit.Gap(1, 1)
    assert arrivals[4].filled == kit.Gap(3, 4)
    assert (gaps.missing(), gaps.received_through, gaps.highest) == ([kit.Gap(3, 3)], 2, 5)
    gaps.add(3)
    assert (gaps.missing(), gaps.received_through) == ([], 5)
    with pytest.raises(ValueError, match="start at 1"):
        gaps.add(0)


def test_a_gap_tracker_can_start_where_it_left_off_or_at_the_first_number() -> None:
    resumed = kit.GapTracker(received_through=40)
    assert resumed.add(44).opened == kit.Gap(41, 43)
    assert not resumed.add(12).new
    joining = kit.GapTracker(received_through=None)
    assert joining.add(1000).opened is None
    assert joining.add(1003).opened == kit.Gap(1001, 1002)
    assert not joining.add(999).new


def test_the_idempotency_store_forgets_the_oldest_and_a_failed_handling() -> None:
    seen = kit.MemoryIdempotencyStore(max_ids=2)
    assert [seen.claim(i) for i in ("a", "b", "a", "c")] == [True, True, False, True]
    assert (seen.claim("a"), seen.claim("b"), len(seen)) == (False, True, 2)  # "b" was dropped
    with pytest.raises(RuntimeError):
        _handle(seen, "d", fail=True)
    assert _handle(seen, "d") is True  # handled this time: the failed attempt released it
    assert _handle(seen, "d") is False


def _handle(seen: kit.IdempotencyStore, webhook_id: str, fail: bool = False) -> bool:
    with kit.first_delivery(seen, webhook_id) as first:
        if fail:
            raise RuntimeError("the database is down")
        return first


def test_a_body_that_is_not_a_record_is_refused_by_field() -> None:
    for body, reason in (
        (b"[1]", "not a JSON object"),
        (b"{", "not JSON"),
        (json.dumps(minimal_record("x", callType="2")), "callType must be an integer"),
        (json.dumps(minimal_record("x", cost="cheap")), "cost must be a decimal string"),
        (json.dumps(minimal_record("x", callEndTime="soon")), "callEndTime must be yyyy"),
        (json.dumps({"callSessionId": "x"}), "callDuration is required"),
    ):
        with pytest.raises(kit.InvalidPushError, match=reason):
            kit.parse_record(body)
