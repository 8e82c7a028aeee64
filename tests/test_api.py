"""The ingestion and app API, over HTTP, on every backend."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccpush.api import create_api
from ccpush.clock import ManualClock
from ccpush.models import DeliveryState
from ccpush.service import Service
from tests.conftest import minimal_record, sample_record
from tests.helpers import make_service
from tests.receiver import Receiver, always

TOKEN = "test-admin-token-0123456789abcdef"


@pytest.fixture
async def service(tmp_path: Path, db_url: str, clock: ManualClock) -> AsyncIterator[Service]:
    service = make_service(tmp_path, db_url, clock, max_body_bytes=64 * 1024, max_batch_records=50)
    await service.start(dispatch=False)
    yield service
    await service.stop()


@pytest.fixture
async def client(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    api = create_api(service, admin_token=TOKEN)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(api),
        base_url="http://ccpush.test",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        yield client


async def new_app(
    client: httpx.AsyncClient, push_url: str | None = "http://127.0.0.1:9/cdr"
) -> str:
    response = await client.post("/v1/apps", json={"name": "Support line", "pushUrl": push_url})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def problem_fields(response: httpx.Response) -> dict[str, str]:
    return {p["field"]: p["reason"] for p in response.json()["error"]["problems"]}


async def test_create_read_and_change_an_app(client: httpx.AsyncClient) -> None:
    app_id = await new_app(client)
    got = (await client.get(f"/v1/apps/{app_id}")).json()
    assert got["pushUrl"] == "http://127.0.0.1:9/cdr"
    assert set(got) == {
        "id", "accountId", "name", "pushUrl", "paused", "pushing", "signing", "createdAt",
        "updatedAt", "pausedReason", "failingSince", "rateLimit", "maxInFlight",
        "pushHeaders", "pushAuth", "clientCertificate",
    }  # fmt: skip
    assert (got["accountId"], got["paused"], got["pushing"]) == ("acc_default", False, True)
    changed = await client.patch(f"/v1/apps/{app_id}", json={"pushUrl": "https://example.com/x"})
    assert changed.json()["pushUrl"] == "https://example.com/x"
    assert changed.json()["name"] == "Support line"
    cleared = await client.patch(f"/v1/apps/{app_id}", json={"pushUrl": None})
    assert cleared.json()["pushUrl"] is None
    renamed = await client.patch(f"/v1/apps/{app_id}", json={"name": "Sales"})
    assert renamed.json() | {"updatedAt": None} == cleared.json() | {
        "name": "Sales",
        "updatedAt": None,
    }


@pytest.mark.parametrize(
    ("push_url", "reason"),
    [
        ("ftp://example.com/x", "http:// or https://"),
        ("example.com/cdr", "http:// or https://"),
        ("http:///cdr", "must name a host"),
        ("http://exa mple.com/", "spaces"),
        ("http://example.com:99999/", "invalid port"),
        (7, "valid string"),
    ],
)
async def test_bad_push_addresses_are_refused(
    client: httpx.AsyncClient, push_url: Any, reason: str
) -> None:
    response = await client.post("/v1/apps", json={"name": "x", "pushUrl": push_url})
    assert response.status_code == 422
    assert reason in problem_fields(response)["pushUrl"]


async def test_unknown_app_fields_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/apps", json={"name": "x", "colour": "red"})
    assert response.status_code == 422
    assert "colour" in problem_fields(response)


async def test_every_route_needs_the_token(client: httpx.AsyncClient) -> None:
    app_id = await new_app(client)
    calls = [
        ("POST", "/v1/apps", {"name": "x"}),
        ("GET", f"/v1/apps/{app_id}", None),
        ("PATCH", f"/v1/apps/{app_id}", {"name": "y"}),
        ("POST", f"/v1/apps/{app_id}/call-records", minimal_record("s1")),
        ("GET", f"/v1/apps/{app_id}/call-records/s1/deliveries", None),
    ]
    for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        for method, url, body in calls:
            response = await client.request(
                method, url, json=body, headers={"Authorization": "", **auth}
            )
            assert response.status_code == 401, (method, url, auth)
            assert response.headers["WWW-Authenticate"] == "Bearer"
    assert (await client.get(f"/v1/apps/{app_id}")).json()["name"] == "Support line"


async def test_unknown_apps_are_404(client: httpx.AsyncClient) -> None:
    for method, url in [
        ("GET", "/v1/apps/app_nope"),
        ("PATCH", "/v1/apps/app_nope"),
        ("POST", "/v1/apps/app_nope/call-records"),
        ("GET", "/v1/apps/app_nope/call-records/s1/deliveries"),
    ]:
        body = minimal_record("s1") if method == "POST" else {"name": "x"}
        response = await client.request(method, url, json=body)
        assert response.status_code == 404, (method, url)
        assert response.json()["error"]["code"] == "not_found"


async def test_one_record_is_accepted(client: httpx.AsyncClient, service: Service) -> None:
    app_id = await new_app(client)
    response = await client.post(f"/v1/apps/{app_id}/call-records", json=sample_record("s1"))
    assert response.status_code == 202
    assert response.json() == {
        "accepted": 1,
        "duplicates": 0,
        "refused": 0,
        "results": [{"callSessionId": "s1", "status": "accepted", "sequence": 1, "version": 1}],
    }
    assert (await service.store.count_by_state(app_id))[DeliveryState.PENDING] == 1


async def test_a_batch_is_accepted_and_repeats_are_duplicates(
    client: httpx.AsyncClient, service: Service
) -> None:
    app_id = await new_app(client)
    url = f"/v1/apps/{app_id}/call-records"
    first = await client.post(url, json=[minimal_record(f"s{i}") for i in range(10)])
    assert first.json()["accepted"] == 10
    again = await client.post(url, json=[minimal_record("s3"), minimal_record("s10")])
    assert again.json()["results"] == [
        {"callSessionId": "s3", "status": "duplicate", "sequence": None, "version": 1},
        {"callSessionId": "s10", "status": "accepted", "sequence": 11, "version": 1},
    ]
    assert (await service.store.count_by_state(app_id))[DeliveryState.PENDING] == 11


async def test_bad_records_are_refused_alone_and_the_others_stored(
    client: httpx.AsyncClient, service: Service
) -> None:
    app_id = await new_app(client)
    batch = [
        minimal_record("ok-1"),
        minimal_record("bad", callType="2"),
        {"callSessionId": "x", "callType": 2, "callDuration": 0},
        minimal_record("ok-2"),
    ]
    response = await client.post(f"/v1/apps/{app_id}/call-records", json=batch)
    assert response.status_code == 207
    assert response.json() == {
        "accepted": 2,
        "duplicates": 0,
        "refused": 2,
        "results": [
            {"callSessionId": "ok-1", "status": "accepted", "sequence": 1, "version": 1},
            {
                "callSessionId": "bad",
                "status": "refused",
                "sequence": None,
                "version": None,
                "problems": [{"field": "[1].callType", "reason": "must be a JSON integer"}],
            },
            {
                "callSessionId": "x",
                "status": "refused",
                "sequence": None,
                "version": None,
                "problems": [
                    {"field": "[2].callStartTime", "reason": "is required"},
                    {"field": "[2].callEndTime", "reason": "is required"},
                ],
            },
            {"callSessionId": "ok-2", "status": "accepted", "sequence": 2, "version": 1},
        ],
    }
    assert (await service.store.count_by_state(app_id))[DeliveryState.PENDING] == 2


async def test_a_batch_of_bad_records_stores_nothing(
    client: httpx.AsyncClient, service: Service
) -> None:
    app_id = await new_app(client)
    batch = [minimal_record("bad", callType="2"), {"callSessionId": "x"}]
    response = await client.post(f"/v1/apps/{app_id}/call-records", json=batch)
    assert response.status_code == 422
    found = problem_fields(response)
    assert found["[0].callType"] == "must be a JSON integer"
    assert found["[1].callEndTime"] == "is required"
    assert response.json()["error"]["message"] == f"{len(found)} problems in the request body"
    assert sum((await service.store.count_by_state(app_id)).values()) == 0


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b'"a string"', 422, "invalid_request"),
        (b"[]", 422, "invalid_request"),
        (b"[1, 2]", 422, "invalid_request"),
        (b"\xff\xfe", 400, "invalid_json"),
    ],
)
async def test_malformed_bodies(
    client: httpx.AsyncClient, body: bytes, status: int, code: str
) -> None:
    app_id = await new_app(client)
    response = await client.post(
        f"/v1/apps/{app_id}/call-records",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


async def test_too_large_bodies_and_batches_are_413(client: httpx.AsyncClient) -> None:
    app_id = await new_app(client)
    url = f"/v1/apps/{app_id}/call-records"
    big = json.dumps([sample_record(f"s{i}", remark="x" * 4000) for i in range(20)])
    response = await client.post(url, content=big, headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()["error"]["code"]) == (413, "body_too_large")
    many = [minimal_record(f"s{i}") for i in range(51)]
    response = await client.post(url, json=many)
    assert (response.status_code, response.json()["error"]["code"]) == (413, "too_many_records")


async def test_delivery_status_shows_every_attempt(
    client: httpx.AsyncClient, service: Service, receiver: Receiver, clock: ManualClock
) -> None:
    receiver.responder = always(503)
    app_id = await new_app(client, receiver.url)
    await client.post(f"/v1/apps/{app_id}/call-records", json=minimal_record("s1"))
    await service.dispatcher.run_until_idle()
    body = (await client.get(f"/v1/apps/{app_id}/call-records/s1/deliveries")).json()
    [delivery] = body["items"]
    assert (delivery["state"], delivery["attempts"]) == ("pending", 1)
    assert delivery["nextAttemptAt"] == "2026-03-01T08:30:00Z"
    [attempt] = delivery["attemptLog"]
    assert attempt["statusCode"] == 503
    assert attempt["errorKind"] == "http_status"
    assert attempt["responseExcerpt"] == "ok"
    missing = await client.get(f"/v1/apps/{app_id}/call-records/nope/deliveries")
    assert missing.status_code == 404


async def test_records_of_an_app_without_address_are_kept_then_pushed_when_one_is_set(
    client: httpx.AsyncClient, service: Service, receiver: Receiver
) -> None:
    app_id = await new_app(client, None)
    await client.post(f"/v1/apps/{app_id}/call-records", json=[minimal_record("h1")])
    assert await service.dispatcher.run_until_idle() == 0
    body = (await client.get(f"/v1/apps/{app_id}/call-records/h1/deliveries")).json()
    assert body["items"][0]["state"] == "held"
    await client.patch(f"/v1/apps/{app_id}", json={"pushUrl": receiver.url})
    assert await service.dispatcher.run_until_idle() == 1
    assert receiver.sessions() == {"h1"}


async def test_openapi_describes_the_routes_and_the_record(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "/v1/apps/{app_id}/call-records" in spec["paths"]
    schemas = spec["components"]["schemas"]
    record = schemas["CallRecord"]
    assert len(record["properties"]) == 23

    def max_length(field: str) -> int:
        schema = record["properties"][field]
        strings = [s for s in schema.get("anyOf", [schema]) if s.get("type") == "string"]
        return int(strings[0]["maxLength"])

    assert {name: max_length(name) for name in ("calledInfo", "remark", "agentName")} == {
        "calledInfo": 4096,
        "remark": 4096,
        "agentName": 4096,
    }
    assert {name: max_length(name) for name in ("callId", "ccode", "callSessionId")} == {
        "callId": 256,
        "ccode": 256,
        "callSessionId": 256,
    }
    assert record["properties"]["labels"]["maxItems"] == 100
    answers = spec["paths"]["/v1/apps/{app_id}/call-records"]["post"]["responses"]
    ingest_out = {"$ref": "#/components/schemas/IngestOut"}
    for status in ("202", "207"):
        assert answers[status]["content"]["application/json"]["schema"] == ingest_out
    assert "422" in answers
    result = schemas["RecordResult"]["properties"]
    assert "problems" in result
    assert "refused" in schemas["RecordStatus"]["enum"]


@pytest.mark.parametrize(
    ("push_url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data", "cloud metadata"),
        ("http://10.1.2.3/cdr", "private"),
        ("http://[::ffff:192.168.1.1]/cdr", "private"),
        ("http://nowhere.test/cdr", "does not resolve"),
        ("http://2130706433/cdr", "unusual way to write 127.0.0.1"),
    ],
)
async def test_addresses_pushes_may_not_reach_are_refused_when_configured(
    client: httpx.AsyncClient, push_url: str, reason: str
) -> None:
    created = await client.post("/v1/apps", json={"name": "x", "pushUrl": push_url})
    assert created.status_code == 422
    assert reason in problem_fields(created)["pushUrl"]
    app_id = await new_app(client)
    changed = await client.patch(f"/v1/apps/{app_id}", json={"pushUrl": push_url})
    assert changed.status_code == 422
    assert (await client.get(f"/v1/apps/{app_id}")).json()["pushUrl"] == "http://127.0.0.1:9/cdr"
