"""Managing apps and deliveries end to end, against real receivers, on every backend."""

from __future__ import annotations

from datetime import timedelta

import httpx

from ccpush.clock import ManualClock
from ccpush.service import Service
from ccpush.store.planning import SAME_REPLAY_WINDOW
from tests.api_client import ok
from tests.conftest import minimal_record
from tests.receiver import Receiver, always, fail_first


async def new_app(admin: httpx.AsyncClient, push_url: str | None) -> str:
    body = await ok(await admin.post("/v1/apps", json={"name": "a", "pushUrl": push_url}), 201)
    return str(body["id"])


async def send(admin: httpx.AsyncClient, app_id: str, *session_ids: str, **fields: object) -> None:
    records = [minimal_record(sid, **fields) for sid in session_ids]
    await ok(await admin.post(f"/v1/apps/{app_id}/call-records", json=records), 202)


async def states(admin: httpx.AsyncClient, app_id: str) -> dict[str, str]:
    page = await ok(await admin.get(f"/v1/apps/{app_id}/deliveries?limit=200"))
    return {d["callSessionId"]: d["state"] for d in reversed(page["items"])}


async def test_records_arriving_while_paused_are_kept_and_pushed_on_resume(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver
) -> None:
    app_id = await new_app(admin, receiver.url)
    paused = await ok(await admin.post(f"/v1/apps/{app_id}/pause"))
    assert (paused["paused"], paused["pushing"]) == (True, False)
    await send(admin, app_id, "p1", "p2")
    assert await service.dispatcher.run_until_idle() == 0
    assert await states(admin, app_id) == {"p1": "held", "p2": "held"}
    resumed = await ok(await admin.post(f"/v1/apps/{app_id}/resume"))
    assert resumed["pushing"]
    assert await service.dispatcher.run_until_idle() == 2
    assert receiver.sessions() == {"p1", "p2"}
    assert await states(admin, app_id) == {"p1": "delivered", "p2": "delivered"}


async def test_pausing_holds_pending_retries_too(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver, clock: ManualClock
) -> None:
    receiver.responder = fail_first(1)
    app_id = await new_app(admin, receiver.url)
    await send(admin, app_id, "r1")
    await service.dispatcher.run_until_idle()
    await ok(await admin.patch(f"/v1/apps/{app_id}", json={"paused": True}))
    clock.advance(timedelta(hours=2))
    assert await service.dispatcher.run_until_idle() == 0
    await ok(await admin.patch(f"/v1/apps/{app_id}", json={"paused": False}))
    assert await service.dispatcher.run_until_idle() == 1
    assert await states(admin, app_id) == {"r1": "delivered"}


async def test_a_changed_address_receives_the_pending_retries(
    admin: httpx.AsyncClient, service: Service, clock: ManualClock
) -> None:
    old, new = Receiver(always(503)), Receiver()
    await old.start()
    await new.start()
    try:
        app_id = await new_app(admin, old.url)
        await send(admin, app_id, "m1", "m2")
        assert await service.dispatcher.run_until_idle() == 2
        await ok(await admin.patch(f"/v1/apps/{app_id}", json={"pushUrl": new.url}))
        clock.advance(timedelta(minutes=30))
        assert await service.dispatcher.run_until_idle() == 2
        assert (old.sessions(), new.sessions()) == ({"m1", "m2"}, {"m1", "m2"})
        assert [p.headers["ccpush-attempt"] for p in new.pushes] == ["2", "2"]
    finally:
        await old.stop()
        await new.stop()


async def test_a_test_push_reports_its_outcome_and_stores_nothing(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver
) -> None:
    receiver.responder = always(202)
    app_id = await new_app(admin, receiver.url)
    result = await ok(await admin.post(f"/v1/apps/{app_id}/test-push"))
    assert (result["delivered"], result["statusCode"], result["errorKind"]) == (True, 202, None)
    assert result["responseExcerpt"] == "ok"
    assert result["latencyMs"] > 0
    [push] = receiver.pushes
    assert push.headers["ccpush-test"] == "true"
    assert push.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert push.json == result["record"]
    assert sum((await service.store.count_by_state()).values()) == 0


async def test_a_failing_test_push_says_why(admin: httpx.AsyncClient, receiver: Receiver) -> None:
    receiver.responder = always(500)
    app_id = await new_app(admin, receiver.url)
    result = await ok(await admin.post(f"/v1/apps/{app_id}/test-push"))
    assert (result["delivered"], result["statusCode"], result["errorKind"]) == (
        False,
        500,
        "http_status",
    )
    no_address = await new_app(admin, None)
    response = await admin.post(f"/v1/apps/{no_address}/test-push")
    assert (response.status_code, response.json()["error"]["code"]) == (409, "no_push_address")


async def test_resend_makes_a_new_delivery_of_the_same_record(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver
) -> None:
    app_id = await new_app(admin, receiver.url)
    await send(admin, app_id, "x1")
    await service.dispatcher.run_until_idle()
    resent = await ok(await admin.post(f"/v1/apps/{app_id}/call-records/x1/resend"), 202)
    assert (resent["state"], resent["callSessionId"]) == ("pending", "x1")
    assert await service.dispatcher.run_until_idle() == 1
    first, second = receiver.pushes
    assert first.body == second.body
    assert first.headers["webhook-id"] != second.headers["webhook-id"]
    history = await ok(await admin.get(f"/v1/apps/{app_id}/call-records/x1/deliveries"))
    assert [d["state"] for d in history["items"]] == ["delivered", "delivered"]
    missing = await admin.post(f"/v1/apps/{app_id}/call-records/nope/resend")
    assert missing.status_code == 404


async def test_replay_of_a_call_time_range(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver, clock: ManualClock
) -> None:
    app_id = await new_app(admin, receiver.url)
    for hour in range(10, 16):
        start = f"2023-11-17 {hour}:00:00"
        end = f"2023-11-17 {hour}:05:00"
        await send(admin, app_id, f"h{hour}", callStartTime=start, callEndTime=end)
    await service.dispatcher.run_until_idle()
    ask = {"from": "2023-11-17 12:00:00", "to": "2023-11-17T14:00:00+08:00"}
    job = await ok(await admin.post(f"/v1/apps/{app_id}/replays", json=ask), 202)
    assert (job["state"], job["total"], job["enqueued"]) == ("queued", 2, 0)
    again = await ok(await admin.post(f"/v1/apps/{app_id}/replays", json=ask), 200)
    assert again["id"] == job["id"]
    assert await service.replays.run_until_idle() == 1
    assert await service.dispatcher.run_until_idle() == 2
    assert [p.session_id for p in receiver.pushes[6:]] == ["h12", "h13"]
    done = await ok(await admin.get(f"/v1/apps/{app_id}/replays/{job['id']}"))
    assert (done["state"], done["enqueued"], done["deliveries"]["delivered"]) == ("done", 2, 2)
    sent_twice = await ok(await admin.post(f"/v1/apps/{app_id}/replays", json=ask), 200)
    assert sent_twice["id"] == job["id"]  # within a minute of asking
    clock.advance(SAME_REPLAY_WINDOW)
    after = await ok(await admin.post(f"/v1/apps/{app_id}/replays", json=ask), 202)
    assert after["id"] != job["id"]


async def test_replay_of_failed_deliveries(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver, clock: ManualClock
) -> None:
    receiver.responder = lambda push, seen: always(500 if push.session_id != "fine" else 200)(
        push, seen
    )
    app_id = await new_app(admin, receiver.url)
    since = clock.now().isoformat()
    await send(admin, app_id, "lost1", "lost2", "fine")
    for _ in range(4):
        await service.dispatcher.run_until_idle()
        clock.advance(timedelta(minutes=30))
    assert await states(admin, app_id) == {
        "lost1": "failed",
        "lost2": "failed",
        "fine": "delivered",
    }
    receiver.responder = always(200)
    job = await ok(await admin.post(f"/v1/apps/{app_id}/replays", json={"failedSince": since}), 202)
    assert job["total"] == 2
    await service.replays.run_until_idle()
    assert await service.dispatcher.run_until_idle() == 2
    history = await ok(await admin.get(f"/v1/apps/{app_id}/call-records/lost1/deliveries"))
    assert [d["state"] for d in history["items"]] == ["delivered", "failed"]
    assert history["items"][0]["replayId"] == job["id"]


async def test_replay_requests_are_checked(admin: httpx.AsyncClient, service: Service) -> None:
    app_id = await new_app(admin, None)
    for body, field in [
        ({}, "from"),
        ({"from": "2023-11-17 12:00:00"}, "from"),
        ({"from": "2023-11-17 12:00:00", "to": "2023-11-17 11:00:00"}, "to"),
        ({"from": "yesterday", "to": "2023-11-17 11:00:00"}, "from"),
        ({"failedSince": "2023-11-17 12:00:00", "from": "2023-11-17 12:00:00"}, "failedSince"),
        # a replay that could not run is refused, not stored to fail every lease
        ({"from": "0001-01-01 00:00:00", "to": "2023-11-17 11:00:00"}, "from"),
        ({"from": "2023-11-17 11:00:00", "to": "2101-01-01 08:00:00"}, "to"),
        ({"failedSince": "1969-12-31T23:59:59Z"}, "failedSince"),
    ]:
        response = await admin.post(f"/v1/apps/{app_id}/replays", json=body)
        assert response.status_code == 422, body
        assert response.json()["error"]["problems"][0]["field"] == field
    assert await service.replays.run_until_idle() == 0


async def test_reconciliation_returns_records_exactly_as_pushed(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver
) -> None:
    app_id = await new_app(admin, receiver.url)
    for minute in range(25):
        start = f"2023-11-17 13:{minute:02d}:00"
        await send(
            admin, app_id, f"k{minute}", callStartTime=start, callEndTime=start, labels=["é"]
        )
    await service.dispatcher.run_until_idle()
    pushed = {p.session_id: p.body for p in receiver.pushes}
    url = f"/v1/apps/{app_id}/call-records"
    window = {"from": "2023-11-17 13:05:00", "to": "2023-11-17 13:20:00", "limit": 4}
    seen, cursor, pages = [], None, 0
    while True:
        response = await admin.get(url, params={**window, **({"cursor": cursor} if cursor else {})})
        page = await ok(response)
        seen += [item["record"] for item in page["items"]]
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert [r["callSessionId"] for r in seen] == [f"k{m}" for m in range(5, 20)]
    assert pages == 4
    raw = (await admin.get(url, params={"from": "2023-11-17 13:00:00", "limit": 1})).content
    assert b'"record":' + pushed["k0"] + b"}]" in raw  # byte for byte as pushed
    bad = await admin.get(url, params={"cursor": "garbage!"})
    assert bad.status_code == 422


async def test_delivery_log_filters_and_pages(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver, clock: ManualClock
) -> None:
    receiver.responder = lambda push, seen: always(
        500 if push.session_id.startswith("bad") else 200
    )(push, seen)
    app_id = await new_app(admin, receiver.url)
    await send(admin, app_id, *(f"good{i}" for i in range(5)), "bad0", "bad1")
    clock.advance(timedelta(minutes=1))
    later = clock.now().isoformat()
    await send(admin, app_id, "good5")
    await service.dispatcher.run_until_idle()
    log = f"/v1/apps/{app_id}/deliveries"
    pending = await ok(await admin.get(log, params={"state": "pending"}))
    assert [d["callSessionId"] for d in pending["items"]] == ["bad1", "bad0"]
    assert pending["items"][0]["attemptLog"][0]["statusCode"] == 500
    recent = await ok(await admin.get(log, params={"since": later}))
    assert [d["callSessionId"] for d in recent["items"]] == ["good5"]
    one = await ok(await admin.get(log, params={"callSessionId": "good3"}))
    assert [d["callSessionId"] for d in one["items"]] == ["good3"]
    names, cursor = [], None
    while True:
        page = await ok(
            await admin.get(log, params={"limit": 3, **({"cursor": cursor} if cursor else {})})
        )
        names += [d["callSessionId"] for d in page["items"]]
        if (cursor := page["nextCursor"]) is None:
            break
    assert names == ["good5", "bad1", "bad0", "good4", "good3", "good2", "good1", "good0"]
    assert (await admin.get(log, params={"state": "lost"})).status_code == 422


async def test_apps_are_listed_and_deleted(admin: httpx.AsyncClient, service: Service) -> None:
    keep, drop = await new_app(admin, None), await new_app(admin, None)
    await send(admin, drop, "d1")
    listed = (await ok(await admin.get("/v1/apps")))["items"]
    assert {app["id"] for app in listed} == {keep, drop}
    await ok(await admin.delete(f"/v1/apps/{drop}"), 204)
    assert (await admin.get(f"/v1/apps/{drop}")).status_code == 404
    assert [app["id"] for app in (await ok(await admin.get("/v1/apps")))["items"]] == [keep]
    assert sum((await service.store.count_by_state()).values()) == 0
