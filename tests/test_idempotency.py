"""Idempotent writes: ``Idempotency-Key`` on the POSTs that create or send, and a replay
asked again recognised while its pushes run, on every backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccpush.api.idempotency import (
    HELD_FOR,
    KEPT_FOR,
    REPLAYED_HEADER,
    Verdict,
    fingerprint_of,
    verdict,
)
from ccpush.api.sealing import seal, unseal
from ccpush.app import create_app
from ccpush.clock import ManualClock
from ccpush.models import ReplayJob, ReplayKind, ReplayState
from ccpush.service import Service
from ccpush.store import Store
from ccpush.store.base import IdempotentRequest
from ccpush.store.planning import SAME_REPLAY_WINDOW, idempotency_key_free, is_same_replay
from ccpush.upkeep import Upkeep, UpkeepSettings
from tests.api_client import Api, ok
from tests.conftest import minimal_record
from tests.helpers import make_service
from tests.receiver import Receiver, Reply, always

T0 = datetime(2026, 3, 1, 8, tzinfo=UTC)
KEY = "3f0c2a9e-5b1d-4c8e-9a7f-1e2d3c4b5a69"


def held(
    fingerprint: str = "f", status: int | None = None, holder: str = "h", at: datetime = T0
) -> IdempotentRequest:
    return IdempotentRequest(
        caller="admin",
        key=KEY,
        fingerprint=fingerprint,
        holder=holder,
        held_until=at + HELD_FOR,
        expires_at=at + KEPT_FOR,
        status=status,
        answer=None if status is None else b"{}",
    )


# The rules


@pytest.mark.parametrize(
    ("entry", "fingerprint", "expected"),
    [
        (held("f", 201), "f", Verdict.ANSWER_AGAIN),
        (held("f", None), "f", Verdict.IN_USE),
        (held("f", 201), "g", Verdict.OTHER_REQUEST),
        (held("f", None), "g", Verdict.OTHER_REQUEST),
    ],
    ids=["answered", "running", "answered-other", "running-other"],
)
def test_what_a_request_gets_when_its_key_is_taken(
    entry: IdempotentRequest, fingerprint: str, expected: Verdict
) -> None:
    assert verdict(entry, fingerprint) is expected


@pytest.mark.parametrize(
    ("entry", "now", "free"),
    [
        (held(status=None), T0, False),
        (held(status=None), T0 + HELD_FOR - timedelta(seconds=1), False),
        (held(status=None), T0 + HELD_FOR, True),  # its request died without letting go
        (held(status=201), T0 + HELD_FOR, False),
        (held(status=201), T0 + KEPT_FOR - timedelta(seconds=1), False),
        (held(status=201), T0 + KEPT_FOR, True),
    ],
    ids=["running", "running-late", "abandoned", "answered", "answered-late", "expired"],
)
def test_when_a_key_may_be_taken_again(entry: IdempotentRequest, now: datetime, free: bool) -> None:
    assert idempotency_key_free(entry, now=now) is free


def job(state: ReplayState) -> ReplayJob:
    return ReplayJob(
        id="rpl_1",
        app_id="app_1",
        kind=ReplayKind.RANGE,
        range_from=T0 - timedelta(days=1),
        range_to=T0,
        state=state,
        total=200,
        enqueued=200 if state is ReplayState.DONE else 0,
        created_at=T0,
        updated_at=T0,
        finished_at=T0 if state is ReplayState.DONE else None,
    )


LATER = T0 + SAME_REPLAY_WINDOW


@pytest.mark.parametrize(
    ("state", "unfinished", "now", "same"),
    [
        (ReplayState.QUEUED, False, LATER, True),
        (ReplayState.RUNNING, False, LATER, True),
        (ReplayState.DONE, True, T0 + timedelta(days=1), True),  # its pushes still wait
        (ReplayState.DONE, False, T0 + timedelta(milliseconds=33), True),  # sent twice
        (ReplayState.DONE, False, LATER, False),  # done, and asked a while ago
    ],
    ids=["queued", "running", "pushing", "sent-twice", "over"],
)
def test_when_a_replay_asked_again_is_the_same(
    state: ReplayState, unfinished: bool, now: datetime, same: bool
) -> None:
    assert is_same_replay(job(state), unfinished=unfinished, now=now) is same


def test_a_fingerprint_reads_json_as_data() -> None:
    base = fingerprint_of("POST", "/v1/apps", b'{"name": "a", "pushUrl": null}')
    assert fingerprint_of("POST", "/v1/apps", b'{"pushUrl":null,"name":"a"}') == base
    assert fingerprint_of("POST", "/v1/apps", b'{"name": "b", "pushUrl": null}') != base
    assert fingerprint_of("POST", "/v1/accounts", b'{"name": "a", "pushUrl": null}') != base
    assert fingerprint_of("POST", "/v1/apps/x/resend", b"") != fingerprint_of(
        "POST", "/v1/apps/y/resend", b""
    )


def test_a_sealed_answer_opens_only_with_its_token() -> None:
    answer = b'{"secret": "ccpk_abc"}'
    sealed = seal("token-one", answer)
    assert b"ccpk_abc" not in sealed
    assert seal("token-one", answer) != sealed  # a new nonce each time
    assert unseal("token-one", sealed) == answer
    assert unseal("token-two", sealed) is None
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    assert unseal("token-one", tampered) is None
    assert unseal("token-one", b"short") is None
    assert unseal("token-one", seal("token-one", b"")) == b""


# The API


async def post(client: httpx.AsyncClient, path: str, body: Any = None, key: str = KEY) -> Any:
    return await client.post(path, json=body, headers={"Idempotency-Key": key})


async def app_names(service: Service) -> list[str]:
    return sorted(app.name for app in await service.store.list_apps())


async def test_the_same_request_with_the_same_key_is_answered_again_not_done_again(
    admin: httpx.AsyncClient, service: Service
) -> None:
    first = await post(admin, "/v1/apps", {"name": "Support"})
    again = await post(admin, "/v1/apps", {"name": "Support"})
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.content == first.content
    assert again.headers[REPLAYED_HEADER] == "true"
    assert REPLAYED_HEADER not in first.headers
    assert await app_names(service) == ["Support"]
    other = await post(admin, "/v1/apps", {"name": "Support"}, key="another-key")
    assert other.status_code == 201
    assert await app_names(service) == ["Support", "Support"]


async def test_a_key_sent_with_another_request_is_refused(
    admin: httpx.AsyncClient, service: Service
) -> None:
    await ok(await post(admin, "/v1/apps", {"name": "Support"}), 201)
    for path, body in [("/v1/apps", {"name": "Sales"}), ("/v1/accounts", {"name": "Support"})]:
        refused = await post(admin, path, body)
        assert refused.status_code == 409, path
        error = refused.json()["error"]
        assert error["code"] == "idempotency_key_reused"
        assert error["problems"][0]["field"] == "Idempotency-Key"
    assert await app_names(service) == ["Support"]
    assert [account.name for account in await service.store.list_accounts()] == ["Default account"]


async def test_keys_are_each_callers_own(admin: httpx.AsyncClient, service: Service) -> None:
    api = Api(service)
    secrets = []
    for name in ("Acme", "Globex"):
        account = await ok(await admin.post("/v1/accounts", json={"name": name}), 201)
        path = f"/v1/accounts/{account['id']}/keys"
        key = await ok(await admin.post(path, json={"name": "k"}), 201)
        secrets.append(key["secret"])
    answers = []
    for secret in secrets:
        async with api.client(secret) as client:
            answers.append(await ok(await post(client, "/v1/apps", {"name": "Line"}), 201))
    assert answers[0]["accountId"] != answers[1]["accountId"]
    assert answers[0]["id"] != answers[1]["id"]
    assert await app_names(service) == ["Line", "Line"]


async def test_a_new_keys_secret_is_shown_again_but_kept_only_sealed(
    admin: httpx.AsyncClient, service: Service, clock: ManualClock
) -> None:
    first = await ok(await post(admin, "/v1/platform-keys", {"name": "pbx"}), 201)
    again = await ok(await post(admin, "/v1/platform-keys", {"name": "pbx"}), 201)
    assert again == first
    assert len(await service.store.list_keys(None)) == 1
    probe = held(fingerprint="probe", holder="probe", at=clock.now())
    kept = await service.store.claim_idempotency_key(probe, now=clock.now())
    assert kept is not None
    assert kept.answer is not None
    assert first["secret"].encode() not in kept.answer


async def test_an_answer_kept_for_another_admin_token_is_not_given(
    admin: httpx.AsyncClient, service: Service
) -> None:
    await ok(await post(admin, "/v1/platform-keys", {"name": "pbx"}), 201)
    token = "another-admin-token-0123456789abcdef"
    app = create_app(service, admin_token=token)
    headers = {"Authorization": f"Bearer {token}"}
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as new:
        refused = await post(new, "/v1/platform-keys", {"name": "pbx"})
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "idempotency_key_reused"
    assert len(await service.store.list_keys(None)) == 1


async def test_an_answer_that_is_not_a_success_is_not_kept(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver
) -> None:
    app = await ok(await admin.post("/v1/apps", json={"name": "Line"}), 201)
    url = f"/v1/apps/{app['id']}/test-push"
    refused = await post(admin, url)
    assert refused.json()["error"]["code"] == "no_push_address"
    await ok(await admin.patch(f"/v1/apps/{app['id']}", json={"pushUrl": receiver.url}))
    pushed = await ok(await post(admin, url))
    assert pushed["delivered"] is True
    assert (await ok(await post(admin, url))) == pushed
    assert len(receiver.pushes) == 1
    invalid = await post(admin, "/v1/accounts", {"name": ""}, key="k2")
    assert invalid.status_code == 422
    await ok(await post(admin, "/v1/accounts", {"name": "Acme"}, key="k2"), 201)


async def test_the_same_request_is_refused_while_the_first_runs(
    admin: httpx.AsyncClient, service: Service
) -> None:
    slow = await Receiver(lambda push, seen: Reply(delay=60)).start()
    try:
        body = {"name": "Line", "pushUrl": slow.url}
        app = await ok(await admin.post("/v1/apps", json=body), 201)
        url = f"/v1/apps/{app['id']}/test-push"
        first = asyncio.create_task(post(admin, url))
        await slow.wait_for(lambda r: len(r.pushes) == 1)
        running = await post(admin, url)
        assert running.status_code == 409
        assert running.json()["error"]["code"] == "idempotency_key_in_use"
        assert running.headers["Retry-After"] == "1"
    finally:
        await slow.stop()  # the first push ends
    answered = await first
    assert answered.status_code == 200
    assert (await post(admin, url)).content == answered.content
    assert len(slow.pushes) == 1


async def test_concurrent_requests_with_one_key_do_it_once(
    admin: httpx.AsyncClient, service: Service
) -> None:
    answers = await asyncio.gather(*(post(admin, "/v1/apps", {"name": "Once"}) for _ in range(8)))
    assert await app_names(service) == ["Once"]
    made = [answer for answer in answers if answer.status_code == 201]
    assert {answer.content for answer in made} == {made[0].content}
    refused = [answer.json()["error"]["code"] for answer in answers if answer.status_code != 201]
    assert set(refused) <= {"idempotency_key_in_use"}


@pytest.fixture
async def second_service(tmp_path: Path, db_url: str, clock: ManualClock) -> AsyncIterator[Service]:
    """Another service on the same store, as another process would be."""
    other = make_service(tmp_path / "second", db_url, clock)
    await other.start(dispatch=False)
    yield other
    await other.stop()


async def test_a_key_holds_across_services_sharing_the_store(
    admin: httpx.AsyncClient, service: Service, second_service: Service
) -> None:
    first = await ok(await post(admin, "/v1/accounts", {"name": "Acme"}), 201)
    async with Api(second_service).client() as elsewhere:
        again = await post(elsewhere, "/v1/accounts", {"name": "Acme"})
    assert again.status_code == 201
    assert again.json() == first
    assert [a.name for a in await service.store.list_accounts()].count("Acme") == 1


async def test_a_key_is_kept_a_day_then_purged(
    admin: httpx.AsyncClient, service: Service, clock: ManualClock
) -> None:
    first = await ok(await post(admin, "/v1/apps", {"name": "Line"}), 201)
    clock.advance(KEPT_FOR - timedelta(seconds=1))
    assert (await ok(await post(admin, "/v1/apps", {"name": "Line"}), 201)) == first
    clock.advance(timedelta(seconds=1))
    upkeep = Upkeep(service.store, clock, UpkeepSettings(auto_pause_after=None, purge_batch=1))
    assert (await upkeep.run_once()).idempotency_keys == 1
    assert (await upkeep.run_once()).idempotency_keys == 0
    later = await ok(await post(admin, "/v1/apps", {"name": "Line"}), 201)
    assert later["id"] != first["id"]


async def test_a_key_abandoned_by_its_request_is_taken_after_its_hold(
    store: Store, clock: ManualClock
) -> None:
    now = clock.now()
    mine = held(holder="dead", at=now)
    assert await store.claim_idempotency_key(mine, now=now) is None
    successor = held(holder="next", at=now)
    assert await store.claim_idempotency_key(successor, now=now) == mine
    await store.answer_idempotent_request(successor, status=201, answer=b"{}")  # not its key
    await store.release_idempotency_key(successor)  # nor this
    assert await store.claim_idempotency_key(successor, now=now) == mine
    later = now + HELD_FOR
    taker = held(holder="next", at=later)
    assert await store.claim_idempotency_key(taker, now=later) is None
    await store.answer_idempotent_request(taker, status=201, answer=b'{"ok": true}')
    await store.release_idempotency_key(taker)  # answered: kept
    kept = await store.claim_idempotency_key(held(holder="third", at=later), now=later)
    assert kept is not None
    assert (kept.holder, kept.status, kept.answer) == ("next", 201, b'{"ok": true}')


async def test_a_released_key_is_free_at_once(store: Store, clock: ManualClock) -> None:
    now = clock.now()
    failed = held(holder="failed", at=now)
    assert await store.claim_idempotency_key(failed, now=now) is None
    await store.release_idempotency_key(failed)
    assert await store.claim_idempotency_key(held(holder="retry", at=now), now=now) is None


# Replays asked again


async def test_a_replay_asked_again_while_its_records_are_pushed_is_the_same_one(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver, clock: ManualClock
) -> None:
    body = {"name": "a", "pushUrl": receiver.url}
    app = await ok(await admin.post("/v1/apps", json=body), 201)
    records = [minimal_record(f"r{i}") for i in range(5)]
    await ok(await admin.post(f"/v1/apps/{app['id']}/call-records", json=records), 202)
    assert await service.dispatcher.run_until_idle() == 5
    receiver.responder = always(503)
    ask = {"from": "2023-11-17 00:00:00", "to": "2023-11-18 00:00:00"}
    url = f"/v1/apps/{app['id']}/replays"
    replay = await ok(await admin.post(url, json=ask), 202)
    await service.replays.run_until_idle()
    assert await service.dispatcher.run_until_idle() == 5  # each fails: a retry waits
    clock.advance(SAME_REPLAY_WINDOW)
    again = await ok(await admin.post(url, json=ask), 200)
    assert (again["id"], again["state"], again["deliveries"]["pending"]) == (
        replay["id"],
        "done",
        5,
    )
    receiver.responder = always(200)
    clock.advance(timedelta(minutes=30))
    assert await service.dispatcher.run_until_idle() == 5
    done = await ok(await admin.get(f"{url}/{replay['id']}"))
    assert done["deliveries"]["delivered"] == 5
    another = await ok(await admin.post(url, json=ask), 202)
    assert another["id"] != replay["id"]


async def test_a_replay_request_sent_twice_with_a_key_gets_the_first_answer(
    admin: httpx.AsyncClient, service: Service, clock: ManualClock
) -> None:
    app = await ok(await admin.post("/v1/apps", json={"name": "a"}), 201)
    url = f"/v1/apps/{app['id']}/replays"
    ask = {"failedSince": "2023-11-17 00:00:00"}
    first = await post(admin, url, ask)
    await service.replays.run_until_idle()
    clock.advance(SAME_REPLAY_WINDOW)
    again = await post(admin, url, ask)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.content == first.content
    another = await post(admin, url, ask, key="next")
    assert another.status_code == 202
    assert another.json()["id"] != first.json()["id"]
