"""``ccpush_delivery_lag_seconds`` in ``/metrics``: from a record's ingestion to the start of
the attempt that delivered it, first attempts apart from retries, after real pushes to a
loopback receiver, on both backends (the claim carries the delivery's making)."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ccpush.clock import ManualClock
from ccpush.service import Service
from tests.api_client import ok
from tests.conftest import minimal_record
from tests.receiver import Receiver, Reply


async def lag_samples(admin: httpx.AsyncClient) -> dict[tuple[str, str, str], float]:
    """The histogram's samples: (sample name, attempt, le) to value."""
    text = (await admin.get("/metrics")).text
    samples = {}
    for family in text_string_to_metric_families(text):
        if family.name == "ccpush_delivery_lag_seconds":
            for sample in family.samples:
                key = (sample.name, sample.labels["attempt"], sample.labels.get("le", ""))
                samples[key] = sample.value
    return samples


async def test_the_lag_of_first_attempts_and_of_retries(
    service: Service, admin: httpx.AsyncClient, clock: ManualClock, receiver: Receiver
) -> None:
    # a and b are refused once, c never
    receiver.responder = lambda push, seen: Reply(
        500 if push.session_id != "c" and not seen else 200
    )
    body = {"name": "crm", "pushUrl": receiver.url}
    app_id = (await ok(await admin.post("/v1/apps", json=body), 201))["id"]
    url = f"/v1/apps/{app_id}/call-records"
    await ok(await admin.post(url, json=[minimal_record("a"), minimal_record("b")]), 202)
    clock.advance(timedelta(seconds=3))
    # each record's first attempt fails (500); both are retried 30 minutes later
    assert await service.dispatcher.run_until_idle() == 2
    await ok(await admin.post(url, json=minimal_record("c")), 202)
    clock.advance(timedelta(seconds=0.2))
    assert await service.dispatcher.run_until_idle() == 1  # c: delivered at once
    clock.advance(timedelta(minutes=30))
    assert await service.dispatcher.run_until_idle() == 2  # a and b: delivered
    await receiver.wait_for(lambda r: len(r.pushes) == 5)

    samples = await lag_samples(admin)
    bucket = "ccpush_delivery_lag_seconds_bucket"
    assert samples[("ccpush_delivery_lag_seconds_count", "first", "")] == 1
    assert samples[(bucket, "first", "0.1")] == 0
    assert samples[(bucket, "first", "0.25")] == 1  # c waited 0.2 s
    assert samples[("ccpush_delivery_lag_seconds_sum", "first", "")] == pytest.approx(0.2)
    assert samples[("ccpush_delivery_lag_seconds_count", "retry", "")] == 2
    assert samples[(bucket, "retry", "1800.0")] == 0
    assert samples[(bucket, "retry", "3600.0")] == 2  # 30 min 3.2 s after their ingestion
    assert samples[("ccpush_delivery_lag_seconds_sum", "retry", "")] == pytest.approx(2 * 1803.2)
