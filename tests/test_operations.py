"""What operators watch and rely on: metrics, health, JSON logs, graceful shutdown,
automatic pausing seen through the API."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ccpush.clock import ManualClock
from ccpush.logs import configure_logging, log_attempt
from ccpush.models import Claimed, Completion, DeliveryState, ErrorKind, Outcome
from ccpush.service import Service
from ccpush.store import open_store
from tests.api_client import Api, ok
from tests.conftest import minimal_record
from tests.helpers import make_service, new_record
from tests.receiver import Receiver, Reply, always


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def attempts(found: dict, outcome: str, status_class: str, kind: str = "") -> float:  # type: ignore[type-arg]
    labels = (("error_kind", kind), ("outcome", outcome), ("status_class", status_class))
    return float(found.get(("ccpush_push_attempts_total", labels), 0))


async def test_metrics_move_as_pushes_succeed_and_fail(
    service: Service, receiver: Receiver, clock: ManualClock
) -> None:
    receiver.responder = lambda push, seen: Reply(
        status=500 if push.session_id.startswith("bad") else 200
    )
    async with Api(service).client() as admin:
        app = await ok(
            await admin.post("/v1/apps", json={"name": "m", "pushUrl": receiver.url}), 201
        )
        url = f"/v1/apps/{app['id']}/call-records"
        records = [minimal_record(f"good{i}") for i in range(3)] + [minimal_record("bad0")]
        await ok(await admin.post(url, json=records), 202)
        await ok(await admin.post(url, json=[minimal_record("good0")]), 202)  # a duplicate
        before = await scrape(admin)
        assert before[("ccpush_records_ingested_total", (("status", "accepted"),))] == 4
        assert before[("ccpush_records_ingested_total", (("status", "duplicate"),))] == 1
        assert before[("ccpush_deliveries", (("state", "pending"),))] == 4
        await service.dispatcher.run_until_idle()
        clock.advance(timedelta(minutes=10))
        after = await scrape(admin)
    assert attempts(after, "delivered", "2xx") == 3
    assert attempts(after, "retrying", "5xx", "http_status") == 1
    assert after[("ccpush_deliveries", (("state", "delivered"),))] == 3
    assert after[("ccpush_deliveries", (("state", "pending"),))] == 1
    assert after[("ccpush_push_duration_seconds_count", ())] == 4
    assert after[("ccpush_oldest_due_age_seconds", ())] == 0  # the retry is due in 20 min
    clock.advance(timedelta(minutes=25))
    async with Api(service).client() as admin:
        late = await scrape(admin)
    assert late[("ccpush_oldest_due_age_seconds", ())] == pytest.approx(300)


async def test_health_and_readiness(tmp_path: Path, db_url: str) -> None:
    service = make_service(tmp_path, db_url)
    await service.start()
    try:
        async with Api(service).client() as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.json()["ready"]) == (200, True)
    finally:
        await service.stop()
    idle = make_service(tmp_path, db_url)
    await idle.start(dispatch=False)
    async with Api(idle).client() as client:
        stopped = await client.get("/readyz")
        assert (stopped.status_code, stopped.json()["dispatcher"]) == (503, "stopped")
        await idle.stop()
        gone = await client.get("/readyz")
        assert (gone.status_code, gone.json()["store"]) == (503, "unreachable")


def test_json_logs_carry_the_delivery_and_app(capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import UTC, datetime

    configure_logging("INFO", "json")
    try:
        claimed = Claimed(
            delivery_id=42, app_id="app_x", call_session_id="s1", push_url="http://h/",
            body=b"{}", sequence=7, version=1, attempt=2, first_attempt_at=None,
            signing_keys=("whsec_c2VjcmV0",),
        )  # fmt: skip
        outcome = Outcome(
            started_at=datetime.now(UTC), duration_ms=3.0, status_code=503,
            error_kind=ErrorKind.HTTP_STATUS, error="HTTP 503", response_excerpt="busy",
        )  # fmt: skip
        log_attempt(
            Completion(
                claimed=claimed, outcome=outcome, next_state=DeliveryState.PENDING,
                next_attempt_at=None,
            )
        )  # fmt: skip
    finally:
        configure_logging("WARNING", "text")
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert (line["app_id"], line["delivery_id"], line["status_code"]) == ("app_x", 42, 503)
    assert line["level"] == "INFO"
    assert "whsec_" not in json.dumps(line)


async def test_auto_pause_is_visible_and_resume_replays(
    service: Service, receiver: Receiver, clock: ManualClock
) -> None:
    receiver.responder = always(503)
    async with Api(service).client() as admin:
        app = await ok(
            await admin.post("/v1/apps", json={"name": "d", "pushUrl": receiver.url}), 201
        )
        url = f"/v1/apps/{app['id']}"
        for hour in range(80):
            await ok(await admin.post(f"{url}/call-records", json=minimal_record(f"h{hour}")), 202)
            await service.dispatcher.run_until_idle()
            clock.advance(timedelta(hours=1))
        assert (await ok(await admin.get(url)))["failingSince"] is not None
        assert (await service.upkeep.run_once()).paused == [app["id"]]
        paused = await ok(await admin.get(url))
        assert paused["paused"] is True
        assert "every push" in paused["pausedReason"]
        receiver.responder = always(200)
        resumed = await ok(await admin.post(f"{url}/resume"))
        assert (resumed["paused"], resumed["pausedReason"]) == (False, None)
        await service.replays.run_until_idle()
        await service.dispatcher.run_until_idle()
    for hour in range(80):  # every record's latest delivery: delivered
        latest = (await service.store.deliveries_of(app["id"], f"h{hour}"))[0]
        assert latest.state is DeliveryState.DELIVERED, hour


@pytest.mark.slow
async def test_sigterm_finishes_the_pushes_in_flight(db_url: str, tmp_path: Path) -> None:
    arrived = asyncio.Event()
    receiver = Receiver(lambda push, seen: (arrived.set(), Reply(delay=1.0))[1])
    await receiver.start()
    store = open_store(db_url)
    await store.open()
    try:
        now = make_service(tmp_path, db_url).clock.now()
        app = await store.create_app(name="stop", push_url=receiver.url, now=now)
        await store.ingest(
            app.id, [new_record(minimal_record(f"t{i}")) for i in range(20)], now=now
        )
        env = {
            **os.environ, "CCPUSH_DATABASE_URL": db_url, "CCPUSH_DATA_DIR": str(tmp_path),
            "CCPUSH_ALLOWED_TARGET_NETWORKS": "127.0.0.0/8", "CCPUSH_LOG_LEVEL": "WARNING",
            "CCPUSH_METRICS_PORT": "0",
        }  # fmt: skip
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ccpush", "worker", env=env
        )
        await asyncio.wait_for(arrived.wait(), 30)
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), 30) == 0
        counts = await store.count_by_state(app.id)
        assert counts[DeliveryState.SENDING] == 0
        assert counts[DeliveryState.DELIVERED] == len(receiver.sessions())
        assert counts[DeliveryState.DELIVERED] + counts[DeliveryState.PENDING] == 20
    finally:
        await store.close()
        await receiver.stop()
