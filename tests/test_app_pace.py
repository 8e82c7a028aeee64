"""An app's pace set by its customer (``rateLimit``, ``maxInFlight``): the rule, the
claims that keep it across workers, the dispatcher's spacing, the API and the console."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from ccpush.app_pace import (
    Bucket,
    LocalPaces,
    Pace,
    Spacing,
    paced_limits,
    read_pace,
    spent_buckets,
)
from ccpush.clock import ManualClock
from ccpush.models import Claimed, Completion, DeliveryState, Outcome
from ccpush.service import Service
from ccpush.store import Store
from tests.api_client import Api, ok
from tests.conftest import drop_schema, store_url
from tests.helpers import make_service
from tests.receiver import Receiver, Reply
from tests.test_console_http import Console
from tests.test_fairness import claim, ingest
from tests.test_operator_cli import Cli, served_cli
from tests.test_store import new_records

PUSH_URL = "http://127.0.0.1:9/x"
T0 = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# The rule


@pytest.mark.parametrize(
    ("rate", "tokens", "since", "now", "expected"),
    [
        (20.0, None, None, 0.0, 20.0),  # a new bucket is full: one second's worth
        (2.5, None, None, 0.0, 3.0),  # burst: ceil(rate)
        (20.0, 0.0, 0.0, 0.5, 10.0),  # refilled at the rate
        (20.0, 0.0, 0.0, 5.0, 20.0),  # never beyond the burst
        (20.0, 3.5, 1.0, 0.5, 3.5),  # a clock behind refills nothing
        (0.5, 0.0, 0.0, 1.0, 0.5),
    ],
)
def test_a_bucket_refills_at_its_rate_up_to_one_seconds_worth(
    rate: float, tokens: float | None, since: float | None, now: float, expected: float
) -> None:
    pace = Pace(rate_limit=rate)
    assert pace.tokens(tokens, None if since is None else at(since), at(now)) == expected


@pytest.mark.parametrize(
    ("pace", "tokens", "sending", "expected"),
    [
        (Pace(), math.inf, 0, None),
        (Pace(rate_limit=20), 20.0, 0, 20),
        (Pace(rate_limit=20), 0.99, 0, 0),  # only whole pushes
        (Pace(max_in_flight=2), math.inf, 0, 2),
        (Pace(max_in_flight=2), math.inf, 2, 0),
        (Pace(max_in_flight=2), math.inf, 5, 0),  # never negative
        (Pace(rate_limit=20, max_in_flight=3), 7.0, 1, 2),  # the stricter wins
        (Pace(rate_limit=20, max_in_flight=30), 7.5, 1, 7),
    ],
)
def test_how_many_a_claim_may_take(
    pace: Pace, tokens: float, sending: int, expected: int | None
) -> None:
    assert pace.allowance(tokens, sending) == expected


def test_a_claim_spends_the_bucket_and_the_limits_asked_are_kept() -> None:
    rated = Bucket("a", Pace(rate_limit=10), 2.0, at(0), 0)
    full = Bucket("b", Pace(max_in_flight=2), None, None, 2)
    loose = Bucket("c", Pace(max_in_flight=50), None, None, 0)
    skip, limits = paced_limits([rated, full, loose], at(0.5), ["z"], {"a": 3, "c": 9})
    assert skip == ["z", "b"]
    assert limits == {"a": 3, "c": 9}  # a: 7 tokens but 3 asked; c: 50 allowed, 9 asked
    spent = spent_buckets([rated, full, loose], Counter({"a": 3, "c": 9}), at(0.5))
    assert spent == [("a", 4.0, at(0.5))]  # 2 + 0.5 s x 10/s - 3; only rated buckets


def test_spacing_lets_one_push_start_per_interval_without_a_burst() -> None:
    spacing = Spacing()
    assert spacing.wait(100.0) == 0.0
    spacing.take(100.0, 20.0)
    assert spacing.wait(100.0) == pytest.approx(0.05)
    assert spacing.wait(100.05) == pytest.approx(0.0)
    spacing.take(100.05, 20.0)
    # Idle a long while: still one at a time, nothing saved up.
    spacing.take(200.0, 20.0)
    assert spacing.wait(200.0) == pytest.approx(0.05)


def test_a_worker_keeps_each_apps_pace_from_its_claims() -> None:
    paces = LocalPaces()
    paces.learn("a", 20.0, 2)
    paces.learn("b", None, None)
    assert "a" in paces
    assert "b" not in paces
    assert paces.room("a", waiting=1, busy=1) == 0  # maxInFlight counts both
    assert paces.room("b", waiting=0, busy=0) is None
    assert paces.wait("a", busy=2, now=0.0) == math.inf
    paces.started("a", 10.0)
    assert paces.wait("a", busy=1, now=10.0) == pytest.approx(0.05)
    paces.learn("a", None, None)  # the pace was removed
    assert "a" not in paces
    assert paces.wait("a", busy=5, now=10.0) == 0.0


# Claims: the store keeps the pace for every worker


def delivered(item: Claimed, clock: ManualClock) -> Completion:
    outcome = Outcome(clock.now(), 1.0, 200, None, None, None)
    return Completion(item, outcome, DeliveryState.DELIVERED, None)


class TestClaims:
    async def test_a_rate_limit_is_a_bucket_shared_by_every_claim(
        self, store: Store, clock: ManualClock
    ) -> None:
        paced = await store.create_app(name="paced", push_url=PUSH_URL, now=clock.now())
        free = await store.create_app(name="free", push_url=PUSH_URL, now=clock.now())
        app = await store.update_app(paced.id, now=clock.now(), rate_limit=5.0)
        assert (app.rate_limit, app.max_in_flight) == (5.0, None)
        await ingest(store, clock, paced.id, "p", 50)
        await ingest(store, clock, free.id, "f", 50)
        first = await claim(store, clock, 100, owner="w1")
        assert Counter(item.app_id for item in first) == {paced.id: 5, free.id: 50}
        assert {item.rate_limit for item in first if item.app_id == paced.id} == {5.0}
        assert await claim(store, clock, 100, owner="w2") == []  # another worker: none left
        clock.advance(timedelta(seconds=0.5))
        assert len(await claim(store, clock, 100, owner="w2")) == 2  # 2.5 tokens
        clock.advance(timedelta(seconds=0.1))
        assert len(await claim(store, clock, 100, owner="w1")) == 1  # 0.5 + 0.5
        clock.advance(timedelta(seconds=60))
        assert len(await claim(store, clock, 100, owner="w1")) == 5  # at most the burst

    async def test_max_in_flight_counts_every_workers_pushes(
        self, store: Store, clock: ManualClock
    ) -> None:
        app = await store.create_app(name="paced", push_url=PUSH_URL, now=clock.now())
        await store.update_app(app.id, now=clock.now(), max_in_flight=2)
        await ingest(store, clock, app.id, "p", 10)
        one = await claim(store, clock, 10, owner="w1")
        assert len(one) == 2
        assert await claim(store, clock, 10, owner="w2") == []
        await store.complete([delivered(one[0], clock)], owner="w1")
        two = await claim(store, clock, 10, owner="w2")
        assert len(two) == 1
        # Lifting the limit lets the rest go at once.
        await store.update_app(app.id, now=clock.now(), max_in_flight=None)
        assert len(await claim(store, clock, 10, owner="w2")) == 7

    async def test_a_new_rate_starts_with_a_full_bucket(
        self, store: Store, clock: ManualClock
    ) -> None:
        app = await store.create_app(name="paced", push_url=PUSH_URL, now=clock.now())
        await store.update_app(app.id, now=clock.now(), rate_limit=3.0)
        await ingest(store, clock, app.id, "p", 20)
        assert len(await claim(store, clock, 20)) == 3
        assert await claim(store, clock, 20) == []
        await store.update_app(app.id, now=clock.now(), rate_limit=4.0)
        assert len(await claim(store, clock, 20)) == 4


# Pushing: a real receiver on loopback sees the pace


class Timed(Receiver):
    """A receiver that notes when each push arrived (by path) and how many it was answering
    at once; each answer waits ``delay`` seconds (cut short when the receiver stops)."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(lambda push, seen: Reply(delay=delay))
        self.arrivals: dict[str, list[float]] = {}
        self.answering = 0
        self.most_at_once = 0

    def url_for(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.arrivals.setdefault(request.path.strip("/"), []).append(time.monotonic())
        self.answering += 1
        self.most_at_once = max(self.most_at_once, self.answering)
        try:
            return await super()._handle(request)
        finally:
            self.answering -= 1

    def count(self, name: str) -> int:
        return len(self.arrivals.get(name, ()))


def count_push(pushed: Counter[int], worker: int, done: Completion) -> None:
    pushed[worker] += 1


def most_in_one_second(times: list[float]) -> int:
    """The most arrivals in any one-second window (both ends included)."""
    times = sorted(times)
    most, start = 0, 0
    for end, last in enumerate(times):
        while last - times[start] > 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


@asynccontextmanager
async def dispatching(tmp_path: Path, db_url: str) -> AsyncIterator[Service]:
    """A service pushing on the wall clock (the arrival windows are real time)."""
    service = make_service(tmp_path, db_url)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def app_with_backlog(
    service: Service, receiver: Timed, name: str, count: int, **pace: float | int | None
) -> str:
    store, now = service.store, service.clock.now()
    app = await store.create_app(name=name, push_url=receiver.url_for(name), now=now)
    if pace:
        await store.update_app(app.id, now=now, **pace)  # type: ignore[arg-type]
    await store.ingest(app.id, new_records(*(f"{name}{n}" for n in range(count))), now=now)
    service.dispatcher.wake()
    return app.id


async def test_a_rate_limit_holds_in_every_second_while_other_apps_go_at_full_speed(
    tmp_path: Path, db_url: str
) -> None:
    """A backlog of 2,000 records at 20/s: its first 200 pushes (10 s) are watched."""
    receiver = Timed()
    await receiver.start()
    try:
        async with dispatching(tmp_path, db_url) as service:
            await app_with_backlog(service, receiver, "paced", 2000, rate_limit=20.0)
            await app_with_backlog(service, receiver, "free", 200)
            await receiver.wait_for(lambda _: receiver.count("paced") >= 200, timeout=120)
    finally:
        await receiver.stop()
    paced, free = sorted(receiver.arrivals["paced"]), sorted(receiver.arrivals["free"])
    assert most_in_one_second(paced) <= 21
    took = paced[199] - paced[0]
    # No faster than the limit allows, and draining at about that rate.
    assert (200 - 21) / 20 <= took < 30
    # The app without a pace was not held back by the paced one's backlog.
    assert len(free) == 200
    assert free[-1] < paced[40]
    print(f"paced app: 200 of 2,000 pushes in {took:.2f} s ({199 / took:.1f}/s)")


async def most_at_once(tmp_path: Path, db_url: str, workers: int) -> tuple[int, Counter[int]]:
    """40 records of an app with ``maxInFlight`` 2 pushed by ``workers`` dispatchers sharing
    the store: the most pushes the receiver answered at once, and each worker's pushes."""
    receiver = Timed(delay=0.02)
    await receiver.start()
    pushed = Counter[int]()
    try:
        async with AsyncExitStack() as stack:
            services = [
                await stack.enter_async_context(dispatching(tmp_path, db_url))
                for _ in range(workers)
            ]
            for n, service in enumerate(services):
                service.dispatcher.listeners.append(partial(count_push, pushed, n))
            await app_with_backlog(services[0], receiver, "paced", 40, max_in_flight=2)
            for service in services:
                service.dispatcher.wake()
            await receiver.wait_for(lambda _: receiver.count("paced") == 40, timeout=60)
    finally:
        await receiver.stop()
    return receiver.most_at_once, pushed


async def test_max_in_flight_is_never_exceeded(tmp_path: Path, db_url: str) -> None:
    most, _ = await most_at_once(tmp_path, db_url, workers=1)
    assert most == 2


async def test_max_in_flight_holds_across_two_workers_on_postgres(tmp_path: Path) -> None:
    url, schema = await store_url("postgres", tmp_path)
    try:
        most, pushed = await most_at_once(tmp_path, url, workers=2)
    finally:
        await drop_schema(schema)
    assert most == 2
    assert len(pushed) == 2  # both workers pushed some


# Set by the customer: the API, the console


async def test_the_pace_is_set_read_and_lifted_through_the_api(admin: httpx.AsyncClient) -> None:
    body = {"name": "CRM", "pushUrl": PUSH_URL, "rateLimit": 20, "maxInFlight": 2}
    created = await ok(await admin.post("/v1/apps", json=body), 201)
    assert (created["rateLimit"], created["maxInFlight"]) == (20.0, 2)
    url = f"/v1/apps/{created['id']}"
    changed = await ok(await admin.patch(url, json={"rateLimit": 0.5}))
    assert (changed["rateLimit"], changed["maxInFlight"]) == (0.5, 2)  # one not given is kept
    lifted = await ok(await admin.patch(url, json={"maxInFlight": None}))
    assert (lifted["rateLimit"], lifted["maxInFlight"]) == (0.5, None)
    assert (await ok(await admin.get(url)))["rateLimit"] == 0.5


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rateLimit": 0}, "rateLimit"),
        ({"rateLimit": -1}, "rateLimit"),
        ({"rateLimit": 10_001}, "rateLimit"),
        ({"rateLimit": "20"}, "rateLimit"),
        ({"rateLimit": True}, "rateLimit"),
        ({"maxInFlight": 0}, "maxInFlight"),
        ({"maxInFlight": -2}, "maxInFlight"),
        ({"maxInFlight": 1001}, "maxInFlight"),
        ({"maxInFlight": 2.5}, "maxInFlight"),
        ({"maxInFlight": "2"}, "maxInFlight"),
    ],
)
async def test_a_pace_out_of_bounds_is_refused_naming_the_field(
    admin: httpx.AsyncClient, change: dict[str, object], field: str
) -> None:
    created = await ok(await admin.post("/v1/apps", json={"name": "CRM", "pushUrl": PUSH_URL}), 201)
    url = f"/v1/apps/{created['id']}"
    response = await admin.patch(url, json={"name": "Renamed", **change})
    assert response.status_code == 422, response.text
    assert [problem["field"] for problem in response.json()["error"]["problems"]] == [field]
    refused = await admin.post("/v1/apps", json={"name": "Other", **change})
    assert refused.status_code == 422
    unchanged = await ok(await admin.get(url))  # nothing half stored
    assert (unchanged["name"], unchanged["rateLimit"], unchanged["maxInFlight"]) == (
        "CRM",
        None,
        None,
    )
    assert [app["name"] for app in (await ok(await admin.get("/v1/apps")))["items"]] == ["CRM"]


async def test_the_console_shows_and_sets_the_pace(service: Service) -> None:
    api = Api(service)
    async with api.client() as admin:
        app = await ok(await admin.post("/v1/apps", json={"name": "CRM", "pushUrl": PUSH_URL}), 201)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(api.app), base_url="http://ccpush.test"
    ) as client:
        console = Console(client)
        await console.sign_in("test-admin-token-0123456789abcdef")
        page = f"/apps/{app['id']}"
        assert "Pace" in await console.get(page)
        refused = await console.post(f"{page}/pace", {"rate_limit": "0", "max_in_flight": ""})
        assert refused.status_code == 422
        assert "The rate limit must be over 0" in refused.text
        saved = await console.post(f"{page}/pace", {"rate_limit": "12.5", "max_in_flight": "3"})
        assert saved.status_code == 303
        shown = await console.get(page)
        assert "12.5 pushes a second" in shown
        assert "3 pushes at most" in shown
        stored = await service.store.get_app(app["id"])
        assert (stored.rate_limit, stored.max_in_flight) == (12.5, 3)
        await console.post(f"{page}/pace", {"rate_limit": "", "max_in_flight": ""})
        stored = await service.store.get_app(app["id"])
        assert (stored.rate_limit, stored.max_in_flight) == (None, None)


@pytest.mark.parametrize(
    ("rate", "most", "refused"),
    [
        ("", "", None),
        ("20", "2", None),
        ("0.5", "", None),
        ("abc", "", "number"),
        ("nan", "", "over 0"),
        ("inf", "", "over 0"),
        ("-3", "", "over 0"),
        ("", "0", "whole number"),
        ("", "1.5", "whole number"),
        ("", "1001", "whole number"),
    ],
)
def test_the_consoles_form_is_read_strictly(rate: str, most: str, refused: str | None) -> None:
    _, error = read_pace(rate, most)
    assert (error is None) if refused is None else (error is not None and refused in error)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    yield from served_cli(tmp_path, f"sqlite:///{tmp_path / 'ccpush.db'}")


async def test_the_operator_cli_sets_shows_and_lifts_the_pace(cli: Cli) -> None:
    app = (await cli("apps", "create", "CRM", "--push-url", PUSH_URL, "--json")).json
    paced = await cli("apps", "set-pace", app["id"], "--rate-limit", "20", "--max-in-flight", "2")
    assert "rate limit     20/s" in paced.lines
    assert "max in flight  2" in paced.lines
    lifted = await cli("apps", "set-pace", app["id"], "--max-in-flight", "none", "--json")
    assert (lifted.json["rateLimit"], lifted.json["maxInFlight"]) == (20.0, None)
    refused = await cli("apps", "set-pace", app["id"], "--rate-limit", "fast")
    assert refused.code == 1
    assert "rateLimit" in refused.err
