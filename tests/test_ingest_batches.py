"""Ingestion of real records: long and non-ASCII text is taken and pushed intact, a bad
record is refused alone (207) without holding back its batch, and a body that is not
strict JSON is refused with 400 naming the problem. Every backend."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ccpush.api.ingest import ParsedBody, Refusal
from ccpush.clock import ManualClock
from ccpush.models import DeliveryState, IngestResult, IngestStatus
from ccpush.record import CallRecord, Problem
from ccpush.service import Service
from tests.api_client import Api, ok
from tests.conftest import minimal_record
from tests.helpers import make_service, new_record
from tests.receiver import Receiver

PHRASES = [
    "客户询问年度套餐和家庭附加服务 希望通过邮件获取报价。",
    "ग्राहक ने वार्षिक योजना के बारे में पूछा और सोमवार को कॉल बैक चाहता है। ",
    "Customer asked about the annual plan and wants a callback on Monday 📞 ",
    "Cliente solicita factura electrónica — pedido nº 48213. ",
    '😀👍🏽🙏 follow-up, "quoted" and \\backslashed\\ ',
    "second line\tafter a tab\r\nthird line\n",
    "北京市朝阳区 中国移动 · मुंबई जियो मोबाइल · ",
]


def text_of(rng: random.Random, length: int) -> str:
    """``length`` characters of mixed Chinese, Hindi, English, emoji and line breaks."""
    parts, total = [], 0
    while total < length:
        phrase = rng.choice(PHRASES)
        parts.append(phrase)
        total += len(phrase)
    return "".join(parts)[:length]


def realistic_record(rng: random.Random, n: int) -> dict[str, Any]:
    """A call record as a call center sends it, all 23 fields, long text in several."""
    start = datetime(2024, 3, 1, 8) + timedelta(seconds=rng.randrange(30 * 86400))
    answered = rng.random() < 0.7
    answer = start + timedelta(seconds=rng.randrange(1, 40))
    end = answer + timedelta(seconds=rng.randrange(1, 3600) if answered else 0)
    fmt = "%Y-%m-%d %H:%M:%S"
    return {
        "callId": str(rng.randrange(10**19, 10**20)) if rng.random() < 0.5 else None,
        "callSessionId": f"2403010800{n:07d}",
        "called": f"91{rng.randrange(10**9, 10**10)}",
        "calledInfo": text_of(rng, rng.randint(300, 4000)),
        "caller": f"86138{rng.randrange(10**7, 10**8)}",
        "ccode": rng.choice(["91", "86", "971"]),
        "ccodeName": rng.choice(["India", "中国", "भारत", "الإمارات"]),
        "agentName": rng.choice(["Priya Sharma", "李娜", "प्रिया शर्मा", "José Núñez 😀"]),
        "agentGroupName": text_of(rng, rng.randint(300, 1000)),
        "agentAccount": f"agent{n}@acme-callcenter.example",
        "callDuration": int((end - answer).total_seconds()) if answered else 0,
        "callType": rng.choice([1, 2, 3]),
        "hangupCode": rng.choice(["200", "486", "487", "603"]),
        "hangupReason": rng.randrange(0, 10),
        "hangingDirection": rng.choice([0, 1, 3]),
        "labels": [text_of(rng, rng.randint(300, 600)), "高意向客户", "उच्च स्तर", "⭐"],
        "baseCost": "0.0100",
        "cost": f"0.{rng.randrange(10**4):04d}",
        "remark": text_of(rng, rng.randint(300, 4000)),
        "callStartTime": start.strftime(fmt),
        "answerTime": answer.strftime(fmt) if answered else None,
        "callEndTime": end.strftime(fmt),
        "voiceUrl": f"https://recordings.example.com/{n}.mp3?X-Amz-Signature=" + "ab" * 300,
    }


async def new_app(admin: httpx.AsyncClient, push_url: str | None = None) -> str:
    app = await ok(await admin.post("/v1/apps", json={"name": "batches", "pushUrl": push_url}), 201)
    return str(app["id"])


async def post(admin: httpx.AsyncClient, app_id: str, body: Any) -> httpx.Response:
    return await admin.post(f"/v1/apps/{app_id}/call-records", json=body)


def problems_of(response: httpx.Response) -> dict[str, str]:
    return {p["field"]: p["reason"] for p in response.json()["error"]["problems"]}


async def stored_sessions(service: Service, app_id: str) -> list[tuple[int, str]]:
    """``(sequence, callSessionId)`` of every version the app has, in sequence order."""
    versions = await service.store.records_by_sequence(app_id, 1, 10**6, 10_000)
    return [(version.sequence, version.call_session_id) for version in versions]


@pytest.fixture(params=["aiohttp", "reqwest"])
async def pushing_service(
    tmp_path: Path, db_url: str, clock: ManualClock, request: pytest.FixtureRequest
) -> AsyncIterator[Service]:
    """A service (default limits) whose pushes are made by aiohttp or by reqwest."""
    service = make_service(tmp_path, db_url, clock, http_client=request.param)
    await service.start(dispatch=False)
    yield service
    await service.stop()


async def test_300_real_records_with_long_text_are_pushed_byte_for_byte(
    pushing_service: Service, receiver: Receiver
) -> None:
    service = pushing_service
    rng = random.Random(20240301)
    records = [realistic_record(rng, n) for n in range(300)]
    body = json.dumps(records, ensure_ascii=False).encode()
    assert len(body) < service.settings.max_body_bytes  # one request, default limits
    async with Api(service).client() as admin:
        app_id = await new_app(admin, receiver.url)
        response = await admin.post(
            f"/v1/apps/{app_id}/call-records",
            content=body,
            headers={"Content-Type": "application/json"},
        )
    answer = await ok(response, 202)
    assert (answer["accepted"], answer["duplicates"], answer["refused"]) == (300, 0, 0)
    assert [r["sequence"] for r in answer["results"]] == list(range(1, 301))
    assert await service.dispatcher.run_until_idle() == 300
    pushed = {push.session_id: push.body for push in receiver.pushes}
    assert len(receiver.pushes) == len(pushed) == 300
    for record in records:
        expected = CallRecord.model_validate(record).push_body()
        assert pushed[record["callSessionId"]] == expected
        assert json.loads(pushed[record["callSessionId"]]) == record


@pytest.mark.parametrize(
    ("refused_at", "size"),
    [((), 3), ((0,), 3), ((1,), 3), ((2,), 3), ((0, 2), 4), ((1, 2, 3), 5), ((0, 1, 2), 3)],
)
def test_the_answer_puts_each_outcome_in_the_request_order(
    refused_at: tuple[int, ...], size: int
) -> None:
    taken = [n for n in range(size) if n not in refused_at]
    parsed = ParsedBody(
        records=[new_record(minimal_record(f"s{n}")) for n in taken],
        refusals=[
            Refusal(n, f"s{n}", [Problem(field=f"[{n}].x", reason="bad")]) for n in refused_at
        ],
    )
    results = [
        IngestResult(call_session_id=f"s{n}", status=IngestStatus.ACCEPTED, sequence=k, version=1)
        for k, n in enumerate(taken, start=1)
    ]
    answer = parsed.answer(results)
    assert [r.call_session_id for r in answer.results] == [f"s{n}" for n in range(size)]
    assert [r.status == "refused" for r in answer.results] == [n in refused_at for n in range(size)]
    assert (answer.accepted, answer.duplicates, answer.refused) == (len(taken), 0, len(refused_at))
    assert [r.sequence for r in answer.results if r.sequence] == list(range(1, len(taken) + 1))


def with_bad(batch: list[dict[str, Any]], index: int, **changes: Any) -> None:
    batch[index] = {**batch[index], **changes}


async def test_three_bad_records_are_refused_and_the_47_others_stored_without_gaps(
    admin: httpx.AsyncClient, service: Service
) -> None:
    app_id = await new_app(admin)
    batch = [minimal_record(f"b{n:02d}", calledInfo="号码归属地 " * 60) for n in range(50)]
    with_bad(batch, 4, callType="2")
    with_bad(batch, 17, agentName="Li\x00Na")
    with_bad(batch, 38, callStartTime="0001-01-01 08:00:00")
    response = await post(admin, app_id, batch)
    assert response.status_code == 207, response.text
    answer = response.json()
    assert (answer["accepted"], answer["duplicates"], answer["refused"]) == (47, 0, 3)
    results = answer["results"]
    assert [r["callSessionId"] for r in results] == [f"b{n:02d}" for n in range(50)]
    refused = {n: r["problems"] for n, r in enumerate(results) if r["status"] == "refused"}
    assert refused == {
        4: [{"field": "[4].callType", "reason": "must be a JSON integer"}],
        17: [
            {
                "field": "[17].agentName",
                "reason": "must not contain control characters other than tab, CR and LF"
                " (U+0000 at character 3)",
            }
        ],
        38: [{"field": "[38].callStartTime", "reason": "must be a time in the years 1970 to 2099"}],
    }
    assert all((results[n]["sequence"], results[n]["version"]) == (None, None) for n in refused)
    taken = [r for r in results if r["status"] == "accepted"]
    assert [r["sequence"] for r in taken] == list(range(1, 48))  # no number for the refused
    assert all("problems" not in r for r in taken)
    expected = [f"b{n:02d}" for n in range(50) if n not in refused]
    assert await stored_sessions(service, app_id) == list(enumerate(expected, start=1))
    assert (await service.store.count_by_state(app_id))[DeliveryState.HELD] == 47
    for n in refused:
        assert await service.store.deliveries_of(app_id, f"b{n:02d}") == []
    corrected = [minimal_record(f"b{n:02d}") for n in refused]
    again = await ok(await post(admin, app_id, corrected), 202)
    assert [r["sequence"] for r in again["results"]] == [48, 49, 50]


async def test_a_batch_of_only_bad_records_is_422_and_stores_nothing(
    admin: httpx.AsyncClient, service: Service
) -> None:
    app_id = await new_app(admin)
    batch = [
        minimal_record("x0", callType="2"),
        {"callSessionId": "x1"},
        minimal_record("x2", remark="\x1b[31mred"),
        7,
    ]
    response = await post(admin, app_id, batch)
    assert response.status_code == 422
    found = problems_of(response)
    assert found["[0].callType"] == "must be a JSON integer"
    assert found["[1].callEndTime"] == "is required"
    assert found["[2].remark"].startswith("must not contain control characters")
    assert found["[3]"] == "must be a JSON object with the call record's fields"
    assert response.json()["error"]["code"] == "invalid_request"
    assert await stored_sessions(service, app_id) == []
    answer = await ok(await post(admin, app_id, minimal_record("x0")), 202)
    assert answer["results"][0]["sequence"] == 1  # the refused took no number


async def test_a_single_bad_record_is_422_with_unprefixed_fields(
    admin: httpx.AsyncClient, service: Service
) -> None:
    app_id = await new_app(admin)
    response = await post(admin, app_id, minimal_record("one", agentName="Li\x00Na", ccode=91))
    assert response.status_code == 422
    assert problems_of(response) == {
        "agentName": "must not contain control characters other than tab, CR and LF"
        " (U+0000 at character 3)",
        "ccode": "must be a JSON string (or null)",
    }
    assert await stored_sessions(service, app_id) == []


TEXT_FIELDS = [
    "callId", "called", "calledInfo", "caller", "ccode", "ccodeName", "agentName",
    "agentGroupName", "agentAccount", "hangupCode", "remark", "voiceUrl", "callSessionId",
]  # fmt: skip
CONTROLS = ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f"]


async def test_control_characters_are_refused_in_every_text_field_over_http(
    admin: httpx.AsyncClient, service: Service
) -> None:
    app_id = await new_app(admin)
    cases = [(field, control) for field in [*TEXT_FIELDS, "labels"] for control in CONTROLS]
    batch = [minimal_record("fine", remark="tab\tCR\rLF\n are text")]
    for n, (field, control) in enumerate(cases):
        value = f"v{control}"
        change = {"labels": ["ok", value]} if field == "labels" else {field: value}
        batch.append(minimal_record(f"c{n}", **change))
    response = await post(admin, app_id, batch)
    assert response.status_code == 207, response.text
    results = response.json()["results"]
    assert results[0]["status"] == "accepted"
    for n, (field, control) in enumerate(cases, start=1):
        path = f"[{n}].labels[1]" if field == "labels" else f"[{n}].{field}"
        [problem] = results[n]["problems"]
        assert problem["field"] == path
        assert problem["reason"].startswith("must not contain control characters")
        assert f"U+{ord(control):04X} at character 2" in problem["reason"]
    assert await stored_sessions(service, app_id) == [(1, "fine")]


@pytest.mark.parametrize(
    "time",
    [
        "0001-01-01 07:59:59",  # before 0001-01-01 00:00 UTC in +08:00
        "0001-01-01 08:00:00",
        "1969-12-31 23:59:59",
        "2100-01-01 00:00:00",
        "9999-12-31 23:59:59",
    ],
)
async def test_times_out_of_range_are_refused_never_a_500(
    admin: httpx.AsyncClient, service: Service, time: str
) -> None:
    app_id = await new_app(admin)
    batch = [
        minimal_record("start", callStartTime=time, callEndTime=time),
        minimal_record("answer", answerTime=time),
        minimal_record("end", callEndTime=time),
    ]
    response = await post(admin, app_id, batch)
    assert response.status_code == 422, response.text
    reason = "must be a time in the years 1970 to 2099"
    found = problems_of(response)
    assert (found["[0].callStartTime"], found["[1].answerTime"], found["[2].callEndTime"]) == (
        reason,
        reason,
        reason,
    )
    assert await stored_sessions(service, app_id) == []


async def test_the_extreme_years_are_taken(admin: httpx.AsyncClient, service: Service) -> None:
    app_id = await new_app(admin)
    batch = [
        minimal_record("first", callStartTime="1970-01-01 00:00:00"),
        minimal_record(
            "last", callStartTime="2099-12-31 23:59:58", callEndTime="2099-12-31 23:59:59"
        ),
    ]
    await ok(await post(admin, app_id, batch), 202)
    assert await stored_sessions(service, app_id) == [(1, "first"), (2, "last")]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[" * 1000 + b"]" * 1000, "too deeply"),
        (b'{"callSessionId": ' * 5000 + b"1" + b"}" * 5000, "too deeply"),
        (b'{"callSessionId": "a", "callType": 2, "callSessionId": "b"}', "appears twice"),
        (b'{"callSessionId": "a", "callDuration": NaN}', "NaN is not a JSON number"),
        (b'[{"callSessionId": "a", "callDuration": -Infinity}]', "Infinity is not a JSON number"),
        (b'{"callSessionId": "a", "callDuration": 1e400}', "out of range"),
        (b'{"callSessionId": "a", "callType": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (b'{"callSessionId": "a", "remark": "\xff"}', "not UTF-8"),
        (b'{"callSessionId": "a",}', "not valid JSON"),
    ],
)
async def test_bodies_that_are_not_strict_json_are_400_naming_the_problem(
    admin: httpx.AsyncClient, service: Service, body: bytes, says: str
) -> None:
    app_id = await new_app(admin)
    response = await admin.post(
        f"/v1/apps/{app_id}/call-records",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_json"
    assert says in error["message"]
    assert await stored_sessions(service, app_id) == []


async def test_records_of_one_batch_sharing_a_session_id_are_versions_in_order(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver
) -> None:
    app_id = await new_app(admin, receiver.url)
    first = minimal_record("same")
    later = minimal_record("same", remark="called back", labels=["回访"])
    batch = [first, later, later, minimal_record("same", callType="x")]
    response = await post(admin, app_id, batch)
    assert response.status_code == 207
    results = [(r["status"], r["sequence"], r["version"]) for r in response.json()["results"]]
    assert results == [
        ("accepted", 1, 1),
        ("updated", 2, 2),
        ("duplicate", None, 2),
        ("refused", None, None),
    ]
    assert await service.dispatcher.run_until_idle() == 2
    pushed = sorted(receiver.pushes, key=lambda push: push.headers["ccpush-sequence"])
    assert [push.json["remark"] for push in pushed] == [None, "called back"]
    assert [push.headers["ccpush-record-version"] for push in pushed] == ["1", "2"]


async def test_a_refused_record_without_a_valid_session_id_is_named_by_its_place(
    admin: httpx.AsyncClient, service: Service
) -> None:
    app_id = await new_app(admin)
    batch = [minimal_record("ok"), minimal_record("a\nb"), minimal_record(7), "not a record"]  # type: ignore[arg-type]
    response = await post(admin, app_id, batch)
    assert response.status_code == 207
    results = response.json()["results"]
    assert [(r["callSessionId"], r["status"]) for r in results] == [
        ("ok", "accepted"),
        (None, "refused"),
        (None, "refused"),
        (None, "refused"),
    ]
    assert [p["field"] for r in results[1:] for p in r["problems"]] == [
        "[1].callSessionId",
        "[2].callSessionId",
        "[3]",
    ]


def refused_count(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name, sample.labels) == (
                "ccpush_records_ingested_total",
                {"status": "refused"},
            ):
                return float(sample.value)
    return 0.0


async def test_refused_records_are_counted_in_the_ingestion_metric(
    admin: httpx.AsyncClient, service: Service
) -> None:
    app_id = await new_app(admin)
    bad = minimal_record("bad", callType=-1)
    await post(admin, app_id, [minimal_record("good"), bad, bad, bad])  # 207: three refused
    await post(admin, app_id, [bad, bad])  # 422: two more
    await post(admin, app_id, bad)  # 422: one more
    assert refused_count((await admin.get("/metrics")).text) == 6


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("callDuration", 2**63),
        ("callDuration", -(2**64)),
        ("callType", 2**63 - 1),
        ("hangupReason", 10**30),
    ],
)
async def test_huge_integers_are_refused_naming_their_field(
    admin: httpx.AsyncClient, service: Service, field: str, value: int
) -> None:
    app_id = await new_app(admin)
    response = await post(admin, app_id, [minimal_record("huge", **{field: value})])
    assert response.status_code == 422, response.text
    assert list(problems_of(response)) == [f"[0].{field}"]
    assert await stored_sessions(service, app_id) == []
