"""How far behind an app's pushes are (``GET /v1/apps/{appId}/lag``): its oldest record
still waiting, on both backends."""

from __future__ import annotations

from datetime import timedelta

import httpx

from ccpush.clock import ManualClock
from ccpush.service import Service
from tests.api_client import ok
from tests.conftest import minimal_record
from tests.receiver import Receiver


async def new_app(admin: httpx.AsyncClient, push_url: str) -> str:
    app = await ok(await admin.post("/v1/apps", json={"name": "crm", "pushUrl": push_url}), 201)
    return str(app["id"])


async def lag(admin: httpx.AsyncClient, app_id: str) -> dict[str, object]:
    answer: dict[str, object] = await ok(await admin.get(f"/v1/apps/{app_id}/lag"))
    return answer


async def ingest(admin: httpx.AsyncClient, app_id: str, session_id: str) -> None:
    url = f"/v1/apps/{app_id}/call-records"
    await ok(await admin.post(url, json=minimal_record(session_id)), 202)


async def test_the_lag_is_the_age_of_the_oldest_record_waiting(
    service: Service, admin: httpx.AsyncClient, clock: ManualClock, receiver: Receiver
) -> None:
    app_id = await new_app(admin, receiver.url)
    assert await lag(admin, app_id) == {"oldestWaitingAt": None, "lagSeconds": 0.0}
    first_at = clock.now()
    await ingest(admin, app_id, "first")
    clock.advance(timedelta(seconds=30))
    await ingest(admin, app_id, "second")
    clock.advance(timedelta(seconds=15))
    got = await lag(admin, app_id)
    assert got["lagSeconds"] == 45.0
    assert got["oldestWaitingAt"] == first_at.isoformat().replace("+00:00", "Z")
    await service.dispatcher.run_until_idle()
    assert len(receiver.pushes) == 2
    assert await lag(admin, app_id) == {"oldestWaitingAt": None, "lagSeconds": 0.0}


async def test_records_held_or_retrying_still_count(
    service: Service, admin: httpx.AsyncClient, clock: ManualClock
) -> None:
    unreachable = await new_app(admin, "http://127.0.0.1:9/cdr")  # nothing listens there
    await ingest(admin, unreachable, "retrying")
    await service.dispatcher.run_until_idle()
    paused = await new_app(admin, "http://127.0.0.1:9/cdr")
    await ok(await admin.post(f"/v1/apps/{paused}/pause"))
    await ingest(admin, paused, "held")
    clock.advance(timedelta(minutes=2))
    assert (await lag(admin, unreachable))["lagSeconds"] == 120.0
    assert (await lag(admin, paused))["lagSeconds"] == 120.0


async def test_an_unknown_app_has_no_lag_to_show(
    service: Service, admin: httpx.AsyncClient
) -> None:
    missing = await admin.get("/v1/apps/app_nope/lag")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
