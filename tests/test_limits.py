"""Limits: body sizes, request rates per key, failed sign-ins per address."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from ccpush.api.deps import state_of
from ccpush.api.limits import RateLimiter, failure_limiter
from ccpush.service import Service
from tests.api_client import ADMIN, Api, ok
from tests.conftest import minimal_record
from tests.helpers import make_service


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_token_bucket_allows_its_burst_then_its_rate() -> None:
    clock = FakeTime()
    limiter = RateLimiter(rate=2, burst=4, now=clock)
    assert [limiter.take("k") for _ in range(4)] == [None] * 4
    assert limiter.take("k") == pytest.approx(0.5)
    assert limiter.take("other") is None
    clock.now += 0.5
    assert limiter.take("k") is None
    assert limiter.take("k") is not None


def test_failures_refill_over_a_minute() -> None:
    clock = FakeTime()
    failures = failure_limiter(3, now=clock)
    assert [failures.failed("ip", None) for _ in range(3)] == [None] * 3
    assert failures.failed("ip", None) == pytest.approx(20)
    clock.now += 20
    assert failures.failed("ip", None) is None


# One step on a SignInFailures of 3 a minute, and what it answers:
#   "fail ADDRESS CREDENTIAL" (- for no token) -> 401 or 429
#   "known-bad CREDENTIAL", "queues ADDRESS CREDENTIAL" -> True or False
#   "valid CREDENTIAL", "wait SECONDS" -> None
SIGN_IN_FAILURES = {
    "an address's failures, whatever the tokens": [
        ("fail a k1", 401), ("fail a k2", 401), ("fail a k3", 401), ("fail a k4", 429),
        ("known-bad k4", False), ("fail b k5", 401),
    ],
    "one token's failures, whatever the addresses": [
        ("fail a k", 401), ("fail b k", 401), ("known-bad k", False), ("fail c k", 401),
        ("known-bad k", True), ("fail d k", 429), ("fail d other", 401),
    ],
    "no token counts against the address only": [
        ("fail a -", 401), ("fail a -", 401), ("fail a -", 401), ("fail a -", 429),
        ("fail b -", 401),
    ],
    "past its limit, an address's unseen tokens are looked up one at a time": [
        ("valid v", None), ("queues a k0", False),
        ("fail a k1", 401), ("fail a k2", 401), ("fail a k3", 401),
        ("queues a k0", True), ("queues a v", False), ("queues b k0", False),
    ],
    "a failure forgets that a token was valid": [
        ("valid v", None), ("fail a v", 401), ("fail a k2", 401), ("fail a k3", 401),
        ("queues a v", True),
    ],
    "failures are forgiven as the minute passes": [
        ("fail a k", 401), ("fail a k", 401), ("fail a k", 401), ("known-bad k", True),
        ("queues a x", True), ("wait 20", None), ("known-bad k", False),
        ("queues a x", False), ("fail a k", 401), ("fail a k", 429),
    ],
}  # fmt: skip


@pytest.mark.parametrize("steps", SIGN_IN_FAILURES.values(), ids=list(SIGN_IN_FAILURES))
def test_sign_in_failures(steps: list[tuple[str, object]]) -> None:
    clock = FakeTime()
    failures = failure_limiter(3, now=clock)
    for step, expected in steps:
        match step.split():
            case ["fail", address, credential]:
                wait = failures.failed(address, None if credential == "-" else credential)
                answer: object = 401 if wait is None else 429
            case ["known-bad", credential]:
                answer = failures.known_bad(credential)
            case ["queues", address, credential]:
                answer = failures.queues(address, credential)
            case ["valid", credential]:
                failures.succeeded(credential)
                answer = None
            case ["wait", seconds]:
                clock.now += float(seconds)
                answer = None
        assert answer == expected, step


def test_no_limit_on_failures_when_set_to_zero() -> None:
    failures = failure_limiter(0)
    assert all(failures.failed("a", "k") is None for _ in range(1000))
    assert not failures.known_bad("k")
    assert not failures.queues("a", "k")


def test_no_rate_means_no_limit() -> None:
    limiter = RateLimiter(rate=0, burst=0)
    assert all(limiter.take("k") is None for _ in range(1000))


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    service = make_service(
        tmp_path, url, auth_failure_limit=5, key_rate_limit=10, max_request_bytes=2048,
        max_body_bytes=8192,
    )  # fmt: skip
    await service.start(dispatch=False)
    yield service
    await service.stop()


async def test_failed_sign_ins_are_limited_per_address(service: Service) -> None:
    api = Api(service)
    async with api.client("ccpk_guessing") as guesser, api.client() as admin:
        codes = [(await guesser.get("/v1/apps")).status_code for _ in range(7)]
        assert codes == [401] * 5 + [429] * 2
        refused = await guesser.get("/v1/apps")
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["code"] == "rate_limited"
        accepted = await admin.get("/v1/apps")  # same address: the valid token is not refused
        assert accepted.status_code == 200


async def test_a_key_is_limited_to_its_rate(service: Service) -> None:
    api = Api(service)
    clock = FakeTime()
    state_of(api.app).key_limiter.now = clock
    async with api.client() as admin:
        codes = [(await admin.get("/v1/apps")).status_code for _ in range(25)]
        assert codes == [200] * 20 + [429] * 5  # a burst of twice the rate (10/s)
        clock.now += 0.1
        assert (await admin.get("/v1/apps")).status_code == 200  # one token back
        assert (await admin.get("/v1/apps")).status_code == 429


@pytest.mark.parametrize(
    ("path", "size", "status"),
    [
        ("/v1/apps", 4096, 413),
        ("/v1/accounts", 4096, 413),
        ("/v1/apps/app_x/call-records", 4096, 422),  # read (and refused as a record)
        ("/v1/apps/app_x/call-records", 16_384, 413),
    ],
)
async def test_bodies_are_capped(service: Service, path: str, size: int, status: int) -> None:
    async with Api(service).client() as admin:
        body = b'{"name": "' + b"x" * size + b'"}'
        response = await admin.post(
            path, content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == status
        if status == 413:
            assert response.json()["error"]["code"] == "body_too_large"


async def test_a_body_without_length_is_capped_too(service: Service) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1024

    transport = httpx.ASGITransport(Api(service).app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post(
            "/v1/apps", content=chunks(), headers={"Authorization": f"Bearer {ADMIN}"}
        )
    assert response.status_code == 413


async def test_secrets_do_not_leak_into_errors(service: Service) -> None:
    async with Api(service).client() as admin:
        app = await ok(await admin.post("/v1/apps", json={"name": "a"}), 201)
        secret = (await ok(await admin.get(f"/v1/apps/{app['id']}/signing-secret")))["secret"]
        bad = await admin.post(
            f"/v1/apps/{app['id']}/call-records",
            json=minimal_record("s", remark=secret, extra=ADMIN),
        )
        assert bad.status_code == 422
        assert secret not in bad.text
        assert ADMIN not in bad.text
