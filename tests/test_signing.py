"""Signed pushes, checked by the independent ``standardwebhooks`` package."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from ccpush.clock import ManualClock
from ccpush.service import Service
from ccpush.signing import generate_secret, sign
from tests.api_client import ok
from tests.conftest import minimal_record
from tests.helpers import make_service
from tests.receiver import Push, Receiver, fail_first


@pytest.fixture
def now_clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
async def service(tmp_path: Path, db_url: str, now_clock: ManualClock) -> AsyncIterator[Service]:
    service = make_service(tmp_path, db_url, now_clock, rotation_overlap="1h")
    await service.start(dispatch=False)
    yield service
    await service.stop()


async def app_with_secret(admin: httpx.AsyncClient, url: str) -> tuple[str, str]:
    app = await ok(await admin.post("/v1/apps", json={"name": "s", "pushUrl": url}), 201)
    keys = await ok(await admin.get(f"/v1/apps/{app['id']}/signing-secret"))
    assert keys["previousSecret"] is None
    return app["id"], keys["secret"]


async def push(admin: httpx.AsyncClient, service: Service, app_id: str, sid: str) -> None:
    await ok(await admin.post(f"/v1/apps/{app_id}/call-records", json=minimal_record(sid)), 202)
    await service.dispatcher.run_until_idle()


def verify(secret: str, p: Push, body: bytes | None = None) -> None:
    """The reference verifier: signature and a timestamp within 5 minutes of the real now."""
    Webhook(secret).verify(body if body is not None else p.body, p.headers)


def signed_with(secret: str, p: Push) -> bool:
    """Whether the push carries the reference implementation's signature for ``secret``
    (for pushes made at a moved clock, which its timestamp check would refuse)."""
    when = datetime.fromtimestamp(int(p.headers["webhook-timestamp"]), UTC)
    expected = Webhook(secret).sign(p.headers["webhook-id"], when, p.body.decode())
    return expected in p.headers["webhook-signature"].split(" ")


def test_our_signature_is_the_reference_implementations() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:])) == 32
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    body = '{"callSessionId":"é"}'
    expected = Webhook(secret).sign("dlv_1", when, body)
    assert sign(secret, "dlv_1", int(when.timestamp()), body.encode()) == expected


async def test_every_push_verifies_with_the_apps_secret(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver, now_clock: ManualClock
) -> None:
    receiver.responder = fail_first(1)
    app_id, secret = await app_with_secret(admin, receiver.url)
    await push(admin, service, app_id, "s1")
    now_clock.advance(timedelta(minutes=30))
    await service.dispatcher.run_until_idle()
    first, second = receiver.pushes
    verify(secret, first)
    assert signed_with(secret, second)
    assert not signed_with(generate_secret(), second)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert (
        int(second.headers["webhook-timestamp"]) - int(first.headers["webhook-timestamp"]) == 1800
    )


async def test_a_tampered_body_or_another_secret_fails(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver
) -> None:
    app_id, secret = await app_with_secret(admin, receiver.url)
    await push(admin, service, app_id, "s1")
    [p] = receiver.pushes
    with pytest.raises(WebhookVerificationError):
        verify(secret, p, p.body.replace(b'"s1"', b'"s2"'))
    with pytest.raises(WebhookVerificationError):
        verify(generate_secret(), p)


async def test_a_stale_timestamp_fails(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver, now_clock: ManualClock
) -> None:
    app_id, secret = await app_with_secret(admin, receiver.url)
    now_clock.advance(timedelta(minutes=-10))  # the push is made ten minutes ago
    await push(admin, service, app_id, "old")
    [p] = receiver.pushes
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(secret, p)


async def test_rotation_signs_with_both_secrets_for_the_overlap(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver, now_clock: ManualClock
) -> None:
    app_id, old = await app_with_secret(admin, receiver.url)
    keys = await ok(await admin.post(f"/v1/apps/{app_id}/signing-secret/rotate"))
    new = keys["secret"]
    assert (keys["previousSecret"], new != old) == (old, True)
    await push(admin, service, app_id, "during")
    during = receiver.pushes[-1]
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    verify(old, during)
    verify(new, during)
    now_clock.advance(timedelta(hours=1))
    await push(admin, service, app_id, "after")
    after = receiver.pushes[-1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    assert signed_with(new, after)
    assert not signed_with(old, after)


async def test_signing_can_be_turned_off(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver
) -> None:
    app_id, _ = await app_with_secret(admin, receiver.url)
    changed = await ok(await admin.patch(f"/v1/apps/{app_id}", json={"signing": False}))
    assert changed["signing"] is False
    await push(admin, service, app_id, "plain")
    [p] = receiver.pushes
    assert "webhook-signature" not in p.headers
    assert p.headers["webhook-id"].startswith("dlv_")
    assert p.headers["Content-Type"] == "application/json;charset=UTF-8"


async def test_test_pushes_are_signed_and_secrets_stay_out_of_answers(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver
) -> None:
    app_id, secret = await app_with_secret(admin, receiver.url)
    result = await admin.post(f"/v1/apps/{app_id}/test-push")
    verify(secret, receiver.pushes[-1])
    await push(admin, service, app_id, "s1")
    for url in (f"/v1/apps/{app_id}", "/v1/apps", f"/v1/apps/{app_id}/deliveries", "/openapi.json"):
        assert secret not in (await admin.get(url)).text
    assert secret not in result.text
