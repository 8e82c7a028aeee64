"""Per-app sequence numbers without holes, and late changes pushed as new versions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from ccpush.models import NewRecord
from ccpush.service import Service
from ccpush.store.planning import Latest, plan_ingest
from tests.api_client import ok
from tests.conftest import minimal_record
from tests.receiver import Receiver


def rec(sid: str, body: str) -> NewRecord:
    return NewRecord(
        call_session_id=sid, body=body.encode(), call_start=datetime(2023, 1, 1, tzinfo=UTC)
    )


@pytest.mark.parametrize(
    ("incoming", "known", "expected"),
    [
        ([("a", "1"), ("b", "1")], {}, [("a", "accepted", 11, 1), ("b", "accepted", 12, 1)]),
        ([("a", "1")], {"a": "1"}, [("a", "duplicate", None, 3)]),
        ([("a", "2")], {"a": "1"}, [("a", "updated", 11, 4)]),
        ([("a", "1"), ("a", "1")], {}, [("a", "accepted", 11, 1), ("a", "duplicate", None, 1)]),
        ([("a", "1"), ("a", "2"), ("a", "1")], {}, [
            ("a", "accepted", 11, 1), ("a", "updated", 12, 2), ("a", "updated", 13, 3),
        ]),
    ],
)  # fmt: skip
def test_the_ingest_plan(
    incoming: list[tuple[str, str]],
    known: dict[str, str],
    expected: list[tuple[str, str, int | None, int]],
) -> None:
    latest = {sid: Latest(7, 3, body.encode()) for sid, body in known.items()}
    plan = plan_ingest([rec(sid, body) for sid, body in incoming], latest, 10)
    got = [(r.call_session_id, r.status.value, r.sequence, r.version) for r in plan.results]
    assert got == expected
    assert plan.last_sequence == 10 + len(plan.versions)


async def send(
    admin: httpx.AsyncClient, app_id: str, *records: dict[str, Any], status: int = 202
) -> Any:
    return await ok(await admin.post(f"/v1/apps/{app_id}/call-records", json=list(records)), status)


async def test_a_changed_record_is_pushed_again_as_a_new_version(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver
) -> None:
    app = await ok(await admin.post("/v1/apps", json={"name": "v", "pushUrl": receiver.url}), 201)
    first = minimal_record("call-1")
    later = minimal_record("call-1", remark="called back", voiceUrl="https://rec.example/1.mp3")
    assert (await send(admin, app["id"], first))["results"][0]["status"] == "accepted"
    assert (await send(admin, app["id"], first))["results"][0]["status"] == "duplicate"
    answer = await send(admin, app["id"], later)
    assert answer["results"] == [
        {"callSessionId": "call-1", "status": "updated", "sequence": 2, "version": 2}
    ]
    assert await service.dispatcher.run_until_idle() == 2
    v1, v2 = sorted(receiver.pushes, key=lambda p: int(p.headers["ccpush-record-version"]))
    assert (v1.headers["ccpush-sequence"], v2.headers["ccpush-sequence"]) == ("1", "2")
    assert (v1.json["remark"], v2.json["remark"]) == (None, "called back")
    history = await ok(await admin.get(f"/v1/apps/{app['id']}/call-records/call-1/deliveries"))
    assert [(d["version"], d["sequence"]) for d in history["items"]] == [(2, 2), (1, 1)]


async def test_sequences_have_no_holes_and_are_per_app(
    admin: httpx.AsyncClient, receiver: Receiver
) -> None:
    one = (await ok(await admin.post("/v1/apps", json={"name": "1"}), 201))["id"]
    two = (await ok(await admin.post("/v1/apps", json={"name": "2"}), 201))["id"]
    await send(admin, one, minimal_record("a"), minimal_record("b"))
    await send(
        admin, one, minimal_record("a"), minimal_record("c"), minimal_record("b", remark="x")
    )
    await send(admin, one, minimal_record("bad", callType="3"), status=422)  # stores nothing
    last = await send(admin, one, minimal_record("d"))
    assert last["results"][0]["sequence"] == 5
    assert (await send(admin, two, minimal_record("a")))["results"][0]["sequence"] == 1
    page = await ok(await admin.get(f"/v1/apps/{one}/call-records", params={"fromSequence": 1}))
    assert [(i["sequence"], i["record"]["callSessionId"], i["version"]) for i in page["items"]] == [
        (1, "a", 1), (2, "b", 1), (3, "c", 1), (4, "b", 2), (5, "d", 1),
    ]  # fmt: skip


async def test_a_gap_is_filled_by_sequence_range_with_pages(admin: httpx.AsyncClient) -> None:
    app_id = (await ok(await admin.post("/v1/apps", json={"name": "g"}), 201))["id"]
    await send(admin, app_id, *(minimal_record(f"r{i}") for i in range(1, 11)))
    url = f"/v1/apps/{app_id}/call-records"
    seqs, cursor = [], None
    while True:
        params: dict[str, Any] = {"fromSequence": 3, "toSequence": 8, "limit": 4}
        page = await ok(
            await admin.get(url, params={**params, **({"cursor": cursor} if cursor else {})})
        )
        seqs += [item["sequence"] for item in page["items"]]
        if (cursor := page["nextCursor"]) is None:
            break
    assert seqs == [3, 4, 5, 6, 7, 8]
    mixed = await admin.get(url, params={"fromSequence": 1, "from": "2023-01-01 00:00:00"})
    assert mixed.status_code == 422
