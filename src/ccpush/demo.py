"""``ccpush demo``: watch ccpush push call records, retry, and give up, in a few seconds.

Everything runs in this process, on 127.0.0.1, and is removed at the end:

* the real service on a temporary SQLite store: the API served by uvicorn and the
  dispatcher, with the retry schedule shortened from the contract's 30 minutes to
  2 seconds;
* a receiver standing for a customer's cc-http push address: it answers most records
  with 200 at once, about 30 % with 503 on their first attempt (200 afterwards), and a
  few with 500 every time, so those end ``failed`` after 4 attempts. What it answers is
  decided from a hash of the ``callSessionId``, never from anything ccpush sends;
* a simulated call center that creates a voice app through the API and posts its call
  records over HTTP, one at a time and sometimes in small batches, over a few seconds.

It prints each record ingested and each push attempt as it happens, then a summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import random
import secrets
import signal
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web

from ccpush.api import create_api
from ccpush.codes import HangupReason
from ccpush.http_server import make_server
from ccpush.models import WAITING, Completion, DeliveryState
from ccpush.service import Service
from ccpush.settings import CONTRACT_RETRY_SCHEDULE, Settings
from ccpush.wire import CONTENT_TYPE, TIME_FORMAT

DEMO_SCHEDULE: Final = "2s,2s,2s"
INGEST_SECONDS: Final = 4.0
"""Over how long the call center posts its records."""
POLL_SECONDS: Final = 0.2
RECEIVER_PATH: Final = "/cc-http/call-records"
SEED: Final = 20231117


# What is printed: lines stamped with the seconds since the demo started


class Timeline:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def at(self, when: datetime) -> float:
        """A wall-clock time as seconds since the start of the demo."""
        return self.elapsed() + (when - datetime.now(UTC)).total_seconds()

    def say(self, tag: str, text: str) -> None:
        print(f"{self.elapsed():6.2f}s  {tag:<8} {text}", flush=True)

    @staticmethod
    def plain(text: str = "") -> None:
        print(text, flush=True)


# The receiver: a customer's push address


class Behaviour(Enum):
    OK = "answers 200"
    FLAKY = "answers 503 on the first attempt, then 200"
    BROKEN = "answers 500 every time"


def behaviour_of(call_session_id: str) -> Behaviour:
    """How the receiver treats a record, from a hash of its ``callSessionId``."""
    digest = hashlib.sha256(call_session_id.encode()).digest()
    bucket = int.from_bytes(digest[:4], "big") % 100
    if bucket < 6:
        return Behaviour.BROKEN
    if bucket < 36:
        return Behaviour.FLAKY
    return Behaviour.OK


def bind_loopback() -> socket.socket:
    """A TCP socket bound to a free port on 127.0.0.1 (the server listens on it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def port_of(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


class Receiver:
    """An aiohttp server that checks each push's Content-Type and answers by plan."""

    def __init__(self) -> None:
        self.pushes: Counter[str] = Counter()
        self.requests = 0
        self.wrong_content_type: Counter[str] = Counter()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post(RECEIVER_PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = bind_loopback()
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{port_of(sock)}{RECEIVER_PATH}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        content_type = request.headers.get("Content-Type", "(none)")
        if content_type != CONTENT_TYPE:
            self.wrong_content_type[content_type] += 1
            return web.Response(status=415, text=f"expected Content-Type: {CONTENT_TYPE}")
        try:
            record = json.loads(await request.read())
            call_session_id = str(record["callSessionId"])
        except (ValueError, TypeError, KeyError):
            return web.Response(status=400, text="expected a call record")
        self.pushes[call_session_id] += 1
        return _answer(behaviour_of(call_session_id), self.pushes[call_session_id])


def _answer(behaviour: Behaviour, seen: int) -> web.Response:
    if behaviour is Behaviour.BROKEN:
        return web.Response(status=500, text="database unavailable")
    if behaviour is Behaviour.FLAKY and seen == 1:
        return web.Response(status=503, text="busy, try again later")
    return web.Response(status=200, text="OK")


# The simulated call center: realistic records of the 23 contract fields


@dataclass(frozen=True, slots=True)
class Country:
    ccode: str
    name: str
    carrier: str
    mobile_prefix: str
    national_digits: int
    hotline: str
    """The call center's number in this country (caller ID of outgoing calls)."""
    rate: int
    """Base cost per started minute, in 1/10000 USD."""


COUNTRIES: Final = (
    Country("91", "India", "Jio", "9", 10, "918069451200", 95),
    Country("63", "Philippines", "Globe Telecom", "9", 10, "63288805120", 150),
    Country("62", "Indonesia", "Telkomsel", "81", 11, "62215080120", 130),
    Country("55", "Brazil", "Vivo", "119", 11, "551130425120", 120),
    Country("52", "Mexico", "Telcel", "55", 10, "525541705120", 110),
    Country("234", "Nigeria", "MTN", "80", 10, "23412775120", 180),
)


@dataclass(frozen=True, slots=True)
class Agent:
    name: str
    group: str
    account: str


AGENTS: Final = (
    Agent("Priya Sharma", "TAOTAO", "priya.sharma"),
    Agent("Arjun Mehta", "TAOTAO", "arjun.mehta"),
    Agent("Maria Santos", "Support PH", "maria.santos"),
    Agent("Jose Reyes", "Support PH", "jose.reyes"),
    Agent("Siti Rahma", "Sales ID", "siti.rahma"),
    Agent("Lucas Oliveira", "Collections BR", "lucas.oliveira"),
    Agent("Chinedu Okafor", "Sales NG", "chinedu.okafor"),
)
LABELS: Final = ("Intended customers", "High level", "Callback requested", "Complaint", "VIP")
REMARKS: Final = (
    "Asked for a callback tomorrow morning",
    "Interested in the annual plan",
    "Wrong number, removed from the list",
    "Payment promised by Friday",
)
KINDS: Final = {1: "group call to agent", 2: "incoming call", 3: "outgoing call"}

# (hangupReason, hangingDirection, SIP hangupCode), consistent with answered or not.
OUTGOING_ANSWERED: Final = ((1, 0, "200"), (1, 1, "200"), (3, 1, "200"))
OUTGOING_UNANSWERED: Final = ((0, 3, "480"), (0, 1, "487"), (7, 3, "486"), (6, 3, "480"))
INCOMING_ANSWERED: Final = ((9, 0, "200"), (9, 1, "200"), (2, 0, "200"))
INCOMING_UNANSWERED: Final = ((8, 0, "487"), (8, 3, "408"), (4, 3, "500"))


def planned_behaviour(index: int) -> Behaviour:
    """The mix the demo shows: about 30 % refused once, one in 16 refused every time."""
    if index % 16 == 7:
        return Behaviour.BROKEN
    if index % 10 in (1, 4, 8):
        return Behaviour.FLAKY
    return Behaviour.OK


class RecordFactory:
    """Makes call records as the platform would, at the moment each call ends."""

    def __init__(self, zone: tzinfo, seed: int = SEED) -> None:
        self.zone = zone
        self.rng = random.Random(seed)
        self.used: set[str] = set()
        self.api_calls = 0

    def session_id(self, end: datetime, want: Behaviour) -> str:
        """``yyMMddHHmmss`` + 5 digits, like "23111713424802472", chosen to get ``want``."""
        prefix, suffix = end.strftime("%y%m%d%H%M%S"), self.rng.randrange(100_000)
        while True:
            candidate = f"{prefix}{suffix % 100_000:05d}"
            if candidate not in self.used and behaviour_of(candidate) is want:
                self.used.add(candidate)
                return candidate
            suffix += 1

    def make(self, index: int) -> dict[str, Any]:
        rng = self.rng
        call_type = rng.choices((1, 2, 3), weights=(3, 3, 4))[0]
        answered = rng.random() < 0.75
        country, agent = rng.choice(COUNTRIES), rng.choice(AGENTS)
        end = datetime.now(self.zone).replace(microsecond=0)
        talk = rng.randint(8, 420) if answered else 0
        answer = end - timedelta(seconds=talk)
        start = answer - timedelta(seconds=rng.randint(3, 25))
        sid = self.session_id(end, planned_behaviour(index))
        return {
            "callId": self._call_id(start) if call_type == 3 and rng.random() < 0.7 else None,
            "callSessionId": sid,
            **self._parties(call_type, country),
            **self._agent(call_type, answered, agent),
            "callDuration": talk,
            "callType": call_type,
            **self._hangup(call_type, answered),
            **self._notes(answered),
            **_costs(talk, country),
            "callStartTime": start.strftime(TIME_FORMAT),
            "answerTime": answer.strftime(TIME_FORMAT) if answered else None,
            "callEndTime": end.strftime(TIME_FORMAT),
            "voiceUrl": _voice_url(end, sid) if answered else None,
        }

    def _call_id(self, start: datetime) -> str:
        """What the call interface returned when the call was placed ("23111714122312000001")."""
        self.api_calls += 1
        return f"{start:%y%m%d%H%M%S}12{self.api_calls:06d}"

    def _parties(self, call_type: int, country: Country) -> dict[str, Any]:
        rest = country.national_digits - len(country.mobile_prefix)
        customer = (
            country.ccode + country.mobile_prefix + f"{self.rng.randrange(10**rest):0{rest}d}"
        )
        if call_type == 3:
            return {
                "called": customer,
                "calledInfo": f"{country.name}, {country.carrier} mobile",
                "caller": country.hotline,
                "ccode": country.ccode,
                "ccodeName": country.name,
            }
        return {
            "called": country.hotline,
            "calledInfo": f"{country.name} customer hotline",
            "caller": customer,
            "ccode": country.ccode,
            "ccodeName": country.name,
        }

    @staticmethod
    def _agent(call_type: int, answered: bool, agent: Agent) -> dict[str, Any]:
        # Nobody took an unanswered incoming call; an outgoing call has the agent who placed it.
        someone = answered or call_type == 3
        return {
            "agentName": agent.name if someone else None,
            "agentGroupName": agent.group if someone or call_type == 1 else None,
            "agentAccount": agent.account if someone else None,
        }

    def _hangup(self, call_type: int, answered: bool) -> dict[str, Any]:
        if call_type == 3:
            choices = OUTGOING_ANSWERED if answered else OUTGOING_UNANSWERED
        else:
            choices = INCOMING_ANSWERED if answered else INCOMING_UNANSWERED
        reason, direction, code = self.rng.choice(choices)
        return {"hangupCode": code, "hangupReason": reason, "hangingDirection": direction}

    def _notes(self, answered: bool) -> dict[str, Any]:
        rng = self.rng
        noted = answered and rng.random() < 0.4
        return {
            "labels": rng.sample(LABELS, rng.randint(1, 2)) if noted else [],
            "remark": rng.choice(REMARKS) if noted else None,
        }


def _costs(talk: int, country: Country) -> dict[str, str]:
    minutes = math.ceil(talk / 60)
    base = Decimal(minutes * country.rate).scaleb(-4)
    return {"baseCost": f"{base:.4f}", "cost": f"{base * Decimal('1.5'):.4f}"}


def _voice_url(end: datetime, call_session_id: str) -> str:
    return f"https://recordings.example.com/cc/{end:%Y%m%d}/{call_session_id}.mp3"


def describe(record: dict[str, Any]) -> str:
    """One line for a record: who called whom, and how it ended."""
    customer = record["called"] if record["callType"] == 3 else record["caller"]
    text = f"{KINDS[record['callType']]} +{customer} ({record['ccodeName']}), "
    if record["answerTime"] is None:
        reason = HangupReason(record["hangupReason"]).name.lower().replace("_", " ")
        text += f"not answered ({reason})"
    else:
        talk = record["callDuration"]
        text += f"answered, {talk // 60}:{talk % 60:02d}"
    if record["agentName"]:
        text += f", agent {record['agentName']}"
    return text + (f", callId {record['callId']}" if record["callId"] else "")


def batch_sizes(count: int, rng: random.Random) -> list[int]:
    """Mostly one record per request, sometimes a batch of 2 to 4."""
    sizes = []
    while count > 0:
        size = min(count, rng.randint(2, 4) if rng.random() < 0.25 else 1)
        sizes.append(size)
        count -= size
    return sizes


class CallCenter:
    """Creates a voice app through the API, then posts its call records as calls end."""

    def __init__(self, *, api_url: str, token: str, zone: tzinfo, timeline: Timeline) -> None:
        self.api_url = api_url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.factory = RecordFactory(zone)
        self.timeline = timeline
        self.accepted = 0

    async def run(self, push_url: str, records: int) -> None:
        sizes = batch_sizes(records, self.factory.rng)
        pause = min(INGEST_SECONDS / len(sizes), 0.5)
        async with aiohttp.ClientSession(self.api_url, headers=self.headers) as session:
            app_id = await self._create_app(session, push_url)
            index = 0
            for size in sizes:
                await asyncio.sleep(pause * self.factory.rng.uniform(0.5, 1.5))
                batch = [self.factory.make(index + offset) for offset in range(size)]
                await self._post(session, app_id, batch)
                index += size

    async def _create_app(self, session: aiohttp.ClientSession, push_url: str) -> str:
        body = {"name": "Acme call center", "pushUrl": push_url}
        async with session.post("/v1/apps", json=body) as response:
            answer = await _json_or_raise(response, 201)
        self.timeline.say("app", f"created voice app {answer['id']} pushing to {push_url}")
        return str(answer["id"])

    async def _post(
        self, session: aiohttp.ClientSession, app_id: str, batch: Sequence[dict[str, Any]]
    ) -> None:
        payload: Any = batch[0] if len(batch) == 1 else list(batch)
        async with session.post(f"/v1/apps/{app_id}/call-records", json=payload) as response:
            answer = await _json_or_raise(response, 202)
        self.accepted += int(answer["accepted"])
        if len(batch) > 1:
            self.timeline.say("ingest", f"a batch of {len(batch)} records in one request:")
        for record, result in zip(batch, answer["results"], strict=True):
            line = f"{record['callSessionId']} {result['status']}: {describe(record)}"
            self.timeline.say("ingest", line)


async def _json_or_raise(response: aiohttp.ClientResponse, expected: int) -> Any:
    if response.status != expected:
        text = await response.text()
        raise RuntimeError(f"{response.method} {response.url.path}: HTTP {response.status} {text}")
    return await response.json()


# What the dispatcher did: one listener call per attempt written


class Tally:
    """Prints each push attempt and counts how deliveries ended."""

    def __init__(self, timeline: Timeline, max_attempts: int) -> None:
        self.timeline = timeline
        self.max_attempts = max_attempts
        self.attempts = 0
        self.first_try = 0
        self.after_retries = 0
        self.failed = 0

    def __call__(self, done: Completion) -> None:
        self.attempts += 1
        attempt = done.claimed.attempt
        if done.next_state is DeliveryState.DELIVERED:
            self.first_try += attempt == 1
            self.after_retries += attempt > 1
        elif done.next_state is DeliveryState.FAILED:
            self.failed += 1
        self.timeline.say("push", self._line(done))

    def _line(self, done: Completion) -> str:
        claimed, outcome = done.claimed, done.outcome
        answer = (
            f"HTTP {outcome.status_code}"
            if outcome.status_code is not None
            else f"{outcome.error_kind}: {outcome.error}"
        )
        head = (
            f"{claimed.call_session_id} attempt {claimed.attempt}/{self.max_attempts}:"
            f" {answer} in {outcome.duration_ms:.1f} ms"
        )
        if done.next_state is DeliveryState.DELIVERED:
            return f"{head} -> delivered"
        if done.next_state is DeliveryState.FAILED:
            return f"{head} -> failed, no attempts left"
        if done.next_attempt_at is None:
            return f"{head} -> {done.next_state}"
        due = self.timeline.at(done.next_attempt_at)
        wait = max(due - self.timeline.elapsed(), 0.0)
        return f"{head} -> retry {claimed.attempt + 1} scheduled at {due:.2f}s (in {wait:.1f} s)"


# Putting it together


def demo_settings(data_dir: Path, token: str, port: int) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'ccpush-demo.db'}",
        admin_token=token,
        retry_schedule=DEMO_SCHEDULE,
        host="127.0.0.1",
        port=port,
        push_timeout=5.0,
        lease="30s",
        poll_interval=0.5,
        log_level="WARNING",
        allowed_target_networks="127.0.0.0/8",  # the demo's receiver is on this machine
        only_allowed_targets=True,
    )


async def serve_api(
    stack: AsyncExitStack, service: Service, token: str, sock: socket.socket
) -> str:
    """Serve the real API as ``ccpush serve`` does on ``sock``; stopped when ``stack`` closes.
    Ctrl-C is left to the demo (which stops everything, then summarizes)."""
    server = make_server(create_api(service, admin_token=token), service.settings)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="ccpush-demo-api")

    async def stop() -> None:
        server.should_exit = True
        await serving

    stack.push_async_callback(stop)
    while not server.started:
        if serving.done():
            await serving
            raise RuntimeError("the API server did not start")
        await asyncio.sleep(0.02)
    return f"http://127.0.0.1:{port_of(sock)}"


@contextlib.contextmanager
def interruptible(interrupted: asyncio.Event) -> Iterator[None]:
    """Ctrl-C or SIGTERM sets ``interrupted`` instead of killing the process."""
    loop = asyncio.get_running_loop()
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)
    try:
        for signum in signals:
            loop.add_signal_handler(signum, interrupted.set)
    except NotImplementedError:  # pragma: no cover - Windows: Ctrl-C stays KeyboardInterrupt
        signals = ()
    try:
        yield
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


async def cancel(task: asyncio.Task[None]) -> None:
    if not task.done():
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def watch(
    service: Service, ingesting: asyncio.Task[None], interrupted: asyncio.Event, until: float
) -> str:
    """How the demo ends: ``finished`` (every record in, every delivery delivered or
    failed), ``deadline``, or ``interrupted`` (Ctrl-C)."""
    while time.monotonic() < until:
        if interrupted.is_set():
            return "interrupted"
        if ingesting.done():
            ingesting.result()  # raises what stopped the call center, if anything
            counts = await service.store.count_by_state()
            if not any(counts[state] for state in WAITING):
                return "finished"
        await asyncio.sleep(POLL_SECONDS)
    return "deadline"


async def ending(
    timeline: Timeline,
    deadline: float,
    service: Service,
    ingesting: asyncio.Task[None],
) -> str:
    """Wait for the end of the demo and say why it ended, unless all went well."""
    interrupted = asyncio.Event()
    try:
        with interruptible(interrupted):
            end = await watch(service, ingesting, interrupted, timeline.started + deadline)
    except (aiohttp.ClientError, RuntimeError) as exc:
        timeline.say("error", f"the call center stopped: {exc}")
        return "error"
    if end == "deadline":
        timeline.say("stop", f"the {deadline:g} s deadline passed with work left")
    elif end == "interrupted":
        timeline.say("stop", "interrupted")
    return end


def announce(timeline: Timeline, records: int, deadline: float, where: dict[str, str]) -> None:
    plan = Counter(planned_behaviour(index) for index in range(records))
    timeline.plain(f"ccpush demo: {records} simulated call records, ending within {deadline:g} s")
    timeline.plain(
        f"  Retry schedule shortened for this demo: {DEMO_SCHEDULE} (a retry 2 seconds after"
        f" each failed attempt)\n  instead of the contract's {CONTRACT_RETRY_SCHEDULE} (every"
        " 30 minutes, up to 3 times). At most 4 attempts either way."
    )
    for name, value in where.items():
        timeline.plain(f"  {name:<10}{value}")
    timeline.plain(
        "  The receiver will answer 503 to the first attempt of"
        f" {_plural(plan[Behaviour.FLAKY], 'record')} and 500 to every attempt of"
        f" {plan[Behaviour.BROKEN]}; 200 otherwise.\n"
    )


def summarize(
    timeline: Timeline,
    counts: dict[DeliveryState, int],
    center: CallCenter,
    tally: Tally,
    receiver: Receiver,
) -> None:
    pending = sum(counts[state] for state in WAITING)
    rows = [
        ("records ingested", center.accepted),
        ("delivered at the first attempt", tally.first_try),
        ("delivered after retries", tally.after_retries),
        (f"failed after {tally.max_attempts} attempts", tally.failed),
        ("still pending", pending),
        ("total push attempts", tally.attempts),
    ]
    timeline.plain(f"\nSummary after {timeline.elapsed():.1f} s")
    for label, value in rows:
        timeline.plain(f"  {label + ':':<34}{value:>5}")
    if receiver.wrong_content_type:
        timeline.plain(f"  WRONG Content-Type received: {dict(receiver.wrong_content_type)}")
    else:
        timeline.plain(
            f"  The receiver got {_plural(receiver.requests, 'request')},"
            f" each with Content-Type: {CONTENT_TYPE}"
        )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


async def run_demo(*, records: int, deadline: float) -> int:
    """Run the demo; 0 if every delivery finished in time, 1 if not (or on an error)."""
    timeline = Timeline()
    if records < 1 or deadline <= 0:
        print("ccpush demo: --records must be at least 1 and --seconds positive", flush=True)
        return 2
    with tempfile.TemporaryDirectory(prefix="ccpush-demo-") as tmp:
        async with AsyncExitStack() as stack:
            code = await _run(stack, Path(tmp), timeline, records, deadline)
    return code


async def _run(
    stack: AsyncExitStack, tmp: Path, timeline: Timeline, records: int, deadline: float
) -> int:
    receiver = Receiver()
    push_url = await receiver.start()
    stack.push_async_callback(receiver.stop)
    token, sock = "demo_" + secrets.token_urlsafe(32), bind_loopback()
    settings = demo_settings(tmp, token, port_of(sock))
    tally = Tally(timeline, settings.retry_schedule.max_attempts)
    service = Service(settings, listeners=[tally])
    await service.start()
    stack.push_async_callback(service.stop)
    api_url = await serve_api(stack, service, token, sock)
    where = {"store:": f"SQLite in {tmp} (removed at the end)", "API:": api_url}
    announce(timeline, records, deadline, {**where, "receiver:": push_url})
    center = CallCenter(api_url=api_url, token=token, zone=service.zone, timeline=timeline)
    ingesting = asyncio.create_task(center.run(push_url, records), name="ccpush-demo-calls")
    stack.push_async_callback(cancel, ingesting)
    end = await ending(timeline, deadline, service, ingesting)
    await cancel(ingesting)
    service.request_stop()  # let the pushes in flight finish, so the summary is final
    await service.wait_dispatcher()
    summarize(timeline, await service.store.count_by_state(), center, tally, receiver)
    return 0 if end == "finished" and not receiver.wrong_content_type else 1
