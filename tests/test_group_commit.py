"""Group commit: ingestion requests that arrive together are committed in one transaction,
and each still answers 202 only once its records are durable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ccpush.api import create_api
from ccpush.api.deps import state_of
from ccpush.api.ingest import GroupCommit
from ccpush.clock import ManualClock
from ccpush.errors import StoreError
from ccpush.models import DeliveryState, IngestResult
from ccpush.service import Service
from ccpush.store import Store, open_store
from ccpush.store.base import IngestRequest
from tests.api_client import Api
from tests.conftest import minimal_record
from tests.helpers import eventually, make_service, new_record

TOKEN = "test-admin-token-0123456789abcdef"


class GatedStore:
    """Wraps a store's ``ingest_many``: records each call, and holds it until let go."""

    def __init__(self, store: Store, *, held: bool = False) -> None:
        self.store = store
        self.calls: list[int] = []
        self.gate = asyncio.Event()
        if not held:
            self.gate.set()
        self.entered = asyncio.Event()
        self.fail: Exception | None = None
        self._inner = store.ingest_many
        store.ingest_many = self.ingest_many  # type: ignore[method-assign]

    async def ingest_many(
        self, requests: Sequence[IngestRequest]
    ) -> list[list[IngestResult] | Exception]:
        self.calls.append(len(requests))
        self.entered.set()
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return await self._inner(requests)


@pytest.fixture
async def service(tmp_path: Path, db_url: str, clock: ManualClock) -> AsyncIterator[Service]:
    service = make_service(tmp_path, db_url, clock)
    await service.start(dispatch=False)
    yield service
    await service.stop()


@pytest.fixture
def api(service: Service) -> FastAPI:
    return create_api(service, admin_token=TOKEN)


@pytest.fixture
async def client(api: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(api),
        base_url="http://ccpush.test",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        yield client


async def new_app(service: Service) -> str:
    app = await service.store.create_app(name="a", push_url=None, now=service.clock.now())
    return app.id


def post(client: httpx.AsyncClient, app_id: str, sid: str) -> Any:
    return client.post(f"/v1/apps/{app_id}/call-records", json=minimal_record(sid))


def queued_requests(api: FastAPI) -> int:
    """Ingestion requests waiting for the next commit."""
    return state_of(api).group_commit.waiting


async def test_requests_that_arrive_together_are_committed_together(
    client: httpx.AsyncClient, service: Service, api: FastAPI
) -> None:
    gated = GatedStore(service.store, held=True)
    app_id = await new_app(service)
    first = asyncio.create_task(post(client, app_id, "s0"))
    await gated.entered.wait()  # the first commit is under way...
    others = [asyncio.create_task(post(client, app_id, f"s{n}")) for n in range(1, 10)]
    await eventually(lambda: queued_requests(api) == 9)  # ...the nine others wait for the next one
    gated.gate.set()
    answers = await asyncio.gather(first, *others)
    assert [answer.status_code for answer in answers] == [202] * 10
    assert gated.calls == [1, 9]
    results = [answer.json()["results"][0] for answer in answers]
    assert [r["callSessionId"] for r in results] == [f"s{n}" for n in range(10)]
    assert [r["sequence"] for r in results] == list(range(1, 11))  # in order of arrival
    counts = await service.store.count_by_state(app_id)
    assert counts[DeliveryState.HELD] == 10


async def test_refused_records_stay_out_of_the_group_and_its_numbers(
    client: httpx.AsyncClient, service: Service, api: FastAPI
) -> None:
    gated = GatedStore(service.store, held=True)
    app_id = await new_app(service)
    url = f"/v1/apps/{app_id}/call-records"
    first = asyncio.create_task(post(client, app_id, "s0"))
    await gated.entered.wait()
    bad = minimal_record("bad", callType="2")
    mixed = asyncio.create_task(
        client.post(url, json=[minimal_record("s1"), bad, minimal_record("s2")])
    )
    await eventually(lambda: queued_requests(api) == 1)  # the valid records wait...
    refused = await client.post(url, json=[bad, bad])  # ...a request with none never queues
    assert refused.status_code == 422
    later = asyncio.create_task(post(client, app_id, "s3"))
    await eventually(lambda: queued_requests(api) == 2)
    gated.gate.set()
    answers = await asyncio.gather(first, mixed, later)
    assert [answer.status_code for answer in answers] == [202, 207, 202]
    assert gated.calls == [1, 2]
    numbers = [
        (r["callSessionId"], r["sequence"]) for answer in answers for r in answer.json()["results"]
    ]
    assert numbers == [("s0", 1), ("s1", 2), ("bad", None), ("s2", 3), ("s3", 4)]


async def test_202_waits_for_the_commit(
    client: httpx.AsyncClient, service: Service, db_url: str, api: FastAPI
) -> None:
    gated = GatedStore(service.store, held=True)
    app_id = await new_app(service)
    answer = asyncio.create_task(post(client, app_id, "s1"))
    await gated.entered.wait()
    # While a whole other request is received, checked and queued, no answer comes:
    # the transaction is not committed.
    later = asyncio.create_task(post(client, app_id, "s2"))
    await eventually(lambda: queued_requests(api) == 1)
    assert not answer.done()
    gated.gate.set()
    assert (await answer).status_code == 202
    assert (await later).status_code == 202
    # Durable: another connection to the store sees the record at once.
    other = open_store(db_url)
    await other.open(migrate=False)
    try:
        assert [d.call_session_id for d in await other.deliveries_of(app_id, "s1")] == ["s1"]
    finally:
        await other.close()


async def test_a_request_for_an_unknown_app_fails_alone(
    client: httpx.AsyncClient, service: Service, api: FastAPI
) -> None:
    gated = GatedStore(service.store, held=True)
    app_id = await new_app(service)
    first = asyncio.create_task(post(client, app_id, "s0"))
    await gated.entered.wait()
    good = asyncio.create_task(post(client, app_id, "s1"))
    bad = asyncio.create_task(post(client, "app_missing", "s2"))
    await eventually(lambda: queued_requests(api) == 2)
    gated.gate.set()
    assert (await first).status_code == 202
    assert (await good).status_code == 202
    assert (await bad).status_code == 404
    assert gated.calls == [1, 2]


async def test_a_failed_commit_fails_every_request_in_it(
    client: httpx.AsyncClient, service: Service
) -> None:
    gated = GatedStore(service.store)
    gated.fail = StoreError("disk full")
    app_id = await new_app(service)
    answers = await asyncio.gather(post(client, app_id, "s0"), post(client, app_id, "s1"))
    for answer in answers:
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "5"
        assert answer.json()["error"]["code"] == "store_unavailable"
    assert sum((await service.store.count_by_state(app_id)).values()) == 0  # none stored
    gated.fail = None
    assert (await post(client, app_id, "s2")).status_code == 202
    assert (await service.store.count_by_state(app_id))[DeliveryState.HELD] == 1


async def test_a_large_queue_is_committed_in_bounded_groups(
    service: Service,
) -> None:
    gated = GatedStore(service.store, held=True)
    app_id = await new_app(service)
    committer = GroupCommit(service.store, max_records=25)
    now = service.clock.now()

    async def ingest(n: int) -> list[IngestResult]:
        records = [new_record(minimal_record(f"b{n}-{i}")) for i in range(10)]
        return await committer.ingest(app_id, records, now=now)

    first = asyncio.create_task(ingest(0))
    await gated.entered.wait()
    rest = [asyncio.create_task(ingest(n)) for n in range(1, 8)]
    await eventually(lambda: committer.waiting == 7)
    gated.gate.set()
    results = await asyncio.gather(first, *rest)
    assert all(len(result) == 10 for result in results)
    assert gated.calls == [1, 2, 2, 2, 1]  # at most 25 records a group (two requests of 10)


async def test_ingest_many_reports_each_request(store: Store, clock: ManualClock) -> None:
    app = await store.create_app(name="a", push_url=None, now=clock.now())
    records = [new_record(minimal_record("s1")), new_record(minimal_record("s2"))]
    outcomes = await store.ingest_many(
        [
            IngestRequest(app_id=app.id, records=records[:1], now=clock.now()),
            IngestRequest(app_id="app_missing", records=records, now=clock.now()),
            IngestRequest(app_id=app.id, records=records, now=clock.now()),
            IngestRequest(app_id=app.id, records=records, now=clock.now(), account_id="acc_x"),
        ]
    )
    first, missing, second, other_account = outcomes
    assert isinstance(first, list)
    assert [r.status.value for r in first] == ["accepted"]
    assert type(missing).__name__ == "AppNotFound"
    assert type(other_account).__name__ == "AppNotFound"
    assert isinstance(second, list)
    assert [(r.status.value, r.sequence) for r in second] == [("duplicate", None), ("accepted", 2)]


async def test_a_full_queue_answers_503_and_stores_nothing_more(
    tmp_path: Path, db_url: str
) -> None:
    service = make_service(tmp_path, db_url, max_queued_records=25)
    await service.start(dispatch=False)
    try:
        front = Api(service)
        async with front.client() as client:
            gated = GatedStore(service.store, held=True)
            app_id = await new_app(service)

            def batch(n: int) -> Any:
                records = [minimal_record(f"b{n}-{i}") for i in range(10)]
                return client.post(f"/v1/apps/{app_id}/call-records", json=records)

            first = asyncio.create_task(batch(0))
            await gated.entered.wait()  # the first commit is under way
            queued = [asyncio.create_task(batch(n)) for n in (1, 2)]
            await eventually(lambda: queued_requests(front.app) == 2)  # 20 records wait
            async with asyncio.timeout(10):  # not queued behind the held commit
                refused = await batch(3)  # 10 more would make 30 > 25
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "1"
            assert refused.json()["error"]["code"] == "ingestion_busy"
            gated.gate.set()
            answers = await asyncio.gather(first, *queued)
            assert [answer.status_code for answer in answers] == [202] * 3
            counts = await service.store.count_by_state(app_id)
            assert counts[DeliveryState.HELD] == 30  # the refused batch is not stored
            assert (await batch(3)).status_code == 202  # and can be sent again
    finally:
        await service.stop()
