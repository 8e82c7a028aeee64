"""Call records from RabbitMQ and NATS JetStream: each message stored (then acknowledged) or
dead-lettered with its reason, never dropped; held while the store fails; consumed again
after the broker drops the connection; and a worker killed twice mid-stream loses nothing.

The brokers are the real ones on loopback (``CCPUSH_TEST_AMQP_URL``,
``CCPUSH_TEST_NATS_URL``); each test has a queue or stream of its own, deleted after it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import aio_pika
import asyncpg
import nats
import nats.errors
import nats.js.errors
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection

from ccpush.clock import SystemClock
from ccpush.metrics import Metrics
from ccpush.models import DeliveryState
from ccpush.sources.brokers import (
    BrokerSource,
    DeadLetter,
    Inbound,
    Ingest,
    Intake,
    Skip,
    decide,
    header_text,
    read_record,
    reconnect_delay,
)
from ccpush.sources.config import (
    SourceConfig,
    parse_source,
    parse_sources,
    redact,
    subject_matches,
)
from ccpush.sources.running import connector_for, reader_for
from ccpush.store import Store, open_store
from ccpush.store.base import DeliveryFilter, RecordFilter
from ccpush.wire import parse_zone
from tests.conftest import IN_CI, POSTGRES_URL, minimal_record
from tests.helpers import eventually
from tests.receiver import Receiver

AMQP_URL = os.environ.get("CCPUSH_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
NATS_URL = os.environ.get("CCPUSH_TEST_NATS_URL", "nats://127.0.0.1:4222")
BROKERS = ["amqp", "nats"]
ZONE = parse_zone("+08:00")


# What a message is: a table


def _inbound(body: Any, app_id: str | None = "app_1") -> Inbound:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Inbound(body=raw, app_id=app_id)


@pytest.mark.parametrize(
    ("message", "default_app", "app_id", "error"),
    [
        (_inbound(minimal_record("a")), "app_default", "app_1", None),
        (_inbound(minimal_record("a"), None), "app_default", "app_default", None),
        (_inbound(minimal_record("a"), ""), "app_default", "app_default", None),
        (_inbound(minimal_record("a"), None), None, None, "no app: the message has no"),
        (_inbound(minimal_record("a"), "app\x00"), None, None, "holds a control character"),
        (_inbound(b"{not json"), None, None, "the message is not valid JSON"),
        (_inbound(b"\xff{}"), None, None, "the message is not UTF-8 (byte 0)"),
        (_inbound(b'{"callSessionId": "a", "callSessionId": "b"}'), None, None, "appears twice"),
        (_inbound(b'{"callDuration": NaN}'), None, None, "NaN is not a JSON number"),
        (_inbound(b"1e999"), None, None, "the number 1e999 is out of range"),
        (_inbound([minimal_record("a")]), None, None, "(record): must be a JSON object"),
        (_inbound({"callSessionId": "a"}), None, None, "callType: is required"),
        (_inbound(minimal_record("a", callType="3")), None, None, "callType: must be a JSON"),
        (_inbound(minimal_record("a", extra=1)), None, None, "extra: is not a field"),
    ],
)
def test_each_message_is_a_record_to_store_or_a_dead_letter_with_the_reason(
    message: Inbound, default_app: str | None, app_id: str | None, error: str | None
) -> None:
    decision = decide(message, read=read_record, zone=ZONE, default_app=default_app)
    if error is None:
        assert isinstance(decision, Ingest)
        assert decision.app_id == app_id
        assert decision.record.call_session_id == "a"
        assert json.loads(decision.record.body)["callType"] == 2
        assert decision.record.call_start == datetime(2023, 11, 17, 5, 42, 30, tzinfo=UTC)
    else:
        assert isinstance(decision, DeadLetter)
        assert error in decision.error


FREESWITCH_CDRS = Path(__file__).parent / "data" / "freeswitch"
FREESWITCH = parse_source("nats://127.0.0.1?stream=S&format=freeswitch")


def cdr(name: str, **variables: str) -> bytes:
    data = json.loads((FREESWITCH_CDRS / f"{name}.json").read_bytes())
    data["variables"].update(variables)
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("body", "header_app", "outcome"),
    [
        (cdr("cgrates_inbound_answered_2018"), None, ("app_default", 2)),
        (cdr("cgrates_inbound_answered_2018", ccpush_app_id="app_cdr"), None, ("app_cdr", 2)),
        (cdr("cgrates_inbound_answered_2018", ccpush_app_id="app_cdr"), "app_1", ("app_1", 2)),
        (cdr("onex_outbound_originate_2025"), None, ("app_default", 3)),
        (cdr("onex_b_leg_cancelled_2025"), None, "Skip: a B-leg"),
        (b'{"callflow": []}', None, "the CDR cannot be a record: variables: is missing"),
        (b"<cdr/>", None, "the CDR is not valid JSON"),
    ],
)
def test_a_freeswitch_source_reads_json_cdrs(
    body: bytes, header_app: str | None, outcome: tuple[str, int] | str
) -> None:
    read = reader_for(FREESWITCH, ZONE)
    decision = decide(_inbound(body, header_app), read=read, zone=ZONE, default_app="app_default")
    if isinstance(outcome, tuple):
        assert isinstance(decision, Ingest)
        record = json.loads(decision.record.body)
        assert (decision.app_id, record["callType"]) == outcome
        assert record["callSessionId"] == json.loads(body)["variables"]["uuid"]
    elif outcome.startswith("Skip: "):
        assert isinstance(decision, Skip)
        assert decision.reason.startswith(outcome.removeprefix("Skip: "))
    else:
        assert isinstance(decision, DeadLetter)
        assert outcome in decision.error


def test_an_error_header_is_one_bounded_line() -> None:
    assert header_text("a\r\nb\x00c") == "a b c"
    long = header_text("x" * 5000)
    assert len(long) == 1000
    assert long.endswith("...")


@pytest.mark.parametrize(
    ("failures", "delay"), [(1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (10_000, 30.0)]
)
def test_reconnecting_waits_longer_each_time_up_to_a_cap(failures: int, delay: float) -> None:
    assert reconnect_delay(failures) == delay


# The sources' URLs: a table


def test_the_sources_of_a_list_of_urls() -> None:
    amqp, nats_source = parse_sources(
        "amqp://guest:guest@127.0.0.1:5672/%2F?queue=cdr&heartbeat=10,"
        "  nats://127.0.0.1:4222?stream=CDR&subject=cdr.>&app=app_1&format=record&prefetch=9"
    )
    assert amqp.kind == "amqp"
    assert amqp.name == "amqp://guest:***@127.0.0.1:5672/%2F?queue=cdr&heartbeat=10"
    assert amqp.connect_url == "amqp://guest:guest@127.0.0.1:5672/%2F?heartbeat=10"
    assert (amqp.queue, amqp.durable, amqp.format, amqp.app_id) == ("cdr", "ccpush", "record", None)
    assert (amqp.prefetch, amqp.dead_exchange, amqp.dead_letter) == (256, "cdr.dead", "cdr.dead")
    assert "guest:guest" not in repr(amqp)
    assert nats_source.kind == "nats"
    assert nats_source.connect_url == "nats://127.0.0.1:4222"
    assert (nats_source.queue, nats_source.subject) == ("CDR", "cdr.>")
    assert (nats_source.app_id, nats_source.prefetch) == ("app_1", 9)
    assert (nats_source.dead_letter, nats_source.ack_wait) == ("dead.CDR", 30.0)
    assert parse_sources("") == parse_sources(" , ") == ()


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("nats://s3cret@h:4222?stream=S", "nats://***@h:4222?stream=S"),
        ("tls://u:s3cret@h?stream=S", "tls://u:***@h?stream=S"),
        ("amqps://u@h/v?queue=q", "amqps://u@h/v?queue=q"),
    ],
)
def test_a_source_is_named_without_its_secret(url: str, name: str) -> None:
    assert parse_source(url).name == name


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("http://h/?queue=q", "the scheme must be one of amqp://"),
        ("amqp://u:s3cret@h/", "queue=<name> is required"),
        ("amqp://h/?queue=q&prefech=5", "unknown option 'prefech'"),
        ("amqp://h/?queue=q&queue=r", "the option 'queue' is given twice"),
        ("amqp://h/?queue=q&prefetch=0", "prefetch must be a whole number from 1 to 10000"),
        ("amqp://h/?queue=q&prefetch=many", "prefetch must be a whole number"),
        ("amqp://h/?queue=q&format=csv", "format must be one of record, freeswitch"),
        ("amqp://h/?queue=q&app=a%00", "app must be an app id"),
        ("nats://h?subject=a", "stream=<name> is required"),
        ("nats://h?stream=a.b", "stream must be a name without spaces"),
        ("nats://h?stream=S&durable=a*", "durable must be a name"),
        ("nats://h?stream=S&subject=a..b", "subject must be a NATS subject"),
        ("nats://h?stream=S&subject=a.>.b", "subject must be a NATS subject"),
        ("nats://h?stream=S&dlq=dead.*", "dlq must be a subject without wildcards"),
        ("nats://h?stream=S&subject=cdr.>&dlq=cdr.dead", "dead letters would return"),
        ("nats://h?stream=S&ack_wait=0.5", "ack_wait must be a number of seconds"),
        ("nats://h?stream=S&queue=q", "unknown option 'queue'"),
        ("nats://h?stream=S nats://h?stream=S", "configured twice"),
    ],
)
def test_a_wrong_source_is_refused_by_name_and_reason(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=r"^source ") as refused:
        parse_sources(text)
    assert error in str(refused.value)
    assert "s3cret" not in str(refused.value)


def test_a_worker_with_a_wrong_source_says_which_and_why_without_its_password(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "CCPUSH_DATA_DIR": str(tmp_path),
        "CCPUSH_SOURCES": "amqp://guest:s3cret@127.0.0.1:5672/%2F?queue=cdr&prefetch=lots",
        "CCPUSH_METRICS_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "ccpush", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "invalid setting CCPUSH_SOURCES: source amqp://guest:***@" in done.stderr
    assert "amqp://guest:***@127.0.0.1:5672/%2F?queue=cdr&prefetch=lots" in done.stderr
    assert "prefetch must be a whole number" in done.stderr
    assert "s3cret" not in done.stderr


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("cdr.>", "cdr.dead", True),
        ("cdr.>", "cdr", False),
        ("cdr.*", "cdr.dead", True),
        ("cdr.*", "cdr.dead.x", False),
        ("*.dead", "cdr.dead", True),
        ("cdr.in", "cdr.dead", False),
        ("cdr.dead", "cdr.dead", True),
        (">", "dead.CDR", True),
        ("cdr.>", "dead.CDR", False),
    ],
)
def test_nats_subject_filters(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches


# The real brokers


class Broker(Protocol):
    kind: str
    name: str

    def source_url(self, port: int | None = None, **options: Any) -> str: ...

    async def publish(self, messages: Sequence[tuple[bytes, dict[str, str]]]) -> None: ...

    async def remaining(self) -> int:
        """Messages of the source not yet acknowledged (ccpush's consumer stopped)."""
        ...

    async def dead_letters(self) -> list[tuple[bytes, dict[str, str]]]: ...

    async def delete(self) -> None: ...


_unavailable: dict[str, str | None] = {}


async def _check(kind: str) -> str | None:
    url = AMQP_URL if kind == "amqp" else NATS_URL
    try:
        if kind == "amqp":
            connection = await aio_pika.connect(url, timeout=5)
            await connection.close()
        else:
            client = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
            await client.jetstream().account_info()
            await client.close()
    except Exception as exc:
        return f"the broker at {redact(url)} is not reachable: {type(exc).__name__}: {exc}"
    return None


async def require_broker(kind: str) -> None:
    """Like PostgreSQL's tests: a broker that does not answer fails the test in CI, and
    skips it elsewhere with the reason."""
    if kind not in _unavailable:
        _unavailable[kind] = await _check(kind)
    reason = _unavailable[kind]
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"{reason} (broker tests are required in CI)")
    pytest.skip(reason)


class Rabbit:
    kind = "amqp"

    def __init__(self, connection: AbstractConnection, channel: AbstractChannel) -> None:
        self.connection = connection
        self.channel = channel
        self.name = f"ccpush-test-{secrets.token_hex(4)}"

    @classmethod
    async def open(cls) -> Rabbit:
        connection = await aio_pika.connect(AMQP_URL)
        rabbit = cls(connection, await connection.channel(publisher_confirms=True))
        await rabbit.channel.declare_queue(rabbit.name, durable=True)
        return rabbit

    def source_url(self, port: int | None = None, **options: Any) -> str:
        return _with(AMQP_URL, port, {"queue": self.name, **options})

    async def publish(self, messages: Sequence[tuple[bytes, dict[str, str]]]) -> None:
        exchange = self.channel.default_exchange
        sent = [
            aio_pika.Message(
                body,
                headers=dict(headers),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                timestamp=datetime.now(UTC),
            )
            for body, headers in messages
        ]
        await _in_chunks([exchange.publish(m, routing_key=self.name) for m in sent])

    async def remaining(self) -> int:
        queue = await self.channel.declare_queue(self.name, passive=True)
        assert queue.declaration_result.message_count is not None
        return queue.declaration_result.message_count

    async def dead_letters(self) -> list[tuple[bytes, dict[str, str]]]:
        queue = await self.channel.declare_queue(self.name + ".dead", passive=True)
        found = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            headers = {
                k: v.decode() if isinstance(v, bytes) else str(v)
                for k, v in message.headers.items()
            }
            found.append((message.body, headers))
        return found

    async def delete(self) -> None:
        for queue in (self.name, self.name + ".dead"):
            await self.channel.queue_delete(queue)
        await self.channel.exchange_delete(self.name + ".dead")
        await self.connection.close()


class Jet:
    kind = "nats"

    def __init__(self, client: nats.NATS) -> None:
        self.client = client
        self.stream = client.jetstream()
        tag = secrets.token_hex(4)
        self.name = f"CCPUSH_TEST_{tag.upper()}"
        self.prefix = f"cdr{tag}"

    @classmethod
    async def open(cls) -> Jet:
        jet = cls(await nats.connect(NATS_URL))
        await jet.stream.add_stream(name=jet.name, subjects=[f"{jet.prefix}.>"])
        return jet

    def source_url(self, port: int | None = None, **options: Any) -> str:
        query = {"stream": self.name, "subject": f"{self.prefix}.>", "ack_wait": "2", **options}
        return _with(NATS_URL, port, query)

    async def publish(self, messages: Sequence[tuple[bytes, dict[str, str]]]) -> None:
        subject = f"{self.prefix}.calls"
        await _in_chunks(
            [
                self.stream.publish(subject, body, headers=dict(headers))
                for body, headers in messages
            ]
        )

    async def remaining(self) -> int:
        info = await self.stream.consumer_info(self.name, "ccpush")
        return info.num_pending + (info.num_ack_pending or 0)

    async def dead_letters(self) -> list[tuple[bytes, dict[str, str]]]:
        dead = self.name + "_DEAD"
        last = (await self.stream.stream_info(dead)).state.last_seq
        found = []
        for seq in range(1, last + 1):
            message = await self.stream.get_msg(dead, seq)
            found.append((message.data or b"", dict(message.headers or {})))
        return found

    async def delete(self) -> None:
        for name in (self.name, self.name + "_DEAD"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.stream.delete_stream(name)
        await self.client.close()


def _with(url: str, port: int | None, query: dict[str, Any]) -> str:
    parts = urlsplit(url)
    if port is not None:
        parts = parts._replace(netloc=parts.netloc.rpartition(":")[0] + f":{port}")
    return parts._replace(query=urlencode(query, safe=">*")).geturl()


async def _in_chunks(sends: list[Awaitable[Any]], size: int = 500) -> None:
    for start in range(0, len(sends), size):
        await asyncio.gather(*sends[start : start + size])


@pytest.fixture(params=BROKERS)
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    await require_broker(request.param)
    opened: Broker = await (Rabbit.open() if request.param == "amqp" else Jet.open())
    yield opened
    await opened.delete()


class Running:
    """A source consuming in this process, until stopped."""

    def __init__(self, config: SourceConfig, store: Store) -> None:
        self.metrics = Metrics()
        self.woken = 0
        intake = Intake(store, SystemClock(), ZONE, self.metrics, self._wake)
        read = reader_for(config, ZONE)
        self.source = BrokerSource(config, connector_for(config), intake, read)
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.source.run(self.stop))

    def _wake(self) -> None:
        self.woken += 1

    def count(self, metric: str) -> float:
        value = self.metrics.registry.get_sample_value(metric, {"source": self.source.config.name})
        return value or 0.0

    async def halt(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


def record_message(session_id: str, app_id: str | None) -> tuple[bytes, dict[str, str]]:
    headers = {"ccpush-app-id": app_id} if app_id else {}
    return json.dumps(minimal_record(session_id)).encode(), headers


async def stored_sessions(store: Store, app_id: str) -> list[str]:
    return [r.call_session_id for r in await store.list_records(app_id, RecordFilter(limit=1000))]


async def test_a_source_stores_records_and_dead_letters_the_rest(
    broker: Broker, store: Store
) -> None:
    now = SystemClock().now()
    app = await store.create_app(name="brokered", push_url=None, now=now)
    default = await store.create_app(name="by default", push_url=None, now=now)
    await broker.publish(
        [
            record_message("r1", app.id),
            (b"{not json", {"ccpush-app-id": app.id, "trace": "t1"}),
            record_message("r2", app.id),
            record_message("r3", None),  # the source's default app
            record_message("r4", "app_nobody"),
            (json.dumps({"callSessionId": "r5"}).encode(), {"ccpush-app-id": app.id}),
            record_message("r1", app.id),  # the same record again: a duplicate
        ]
    )
    config = parse_source(broker.source_url(app=default.id))
    running = Running(config, store)
    await eventually(lambda: running.count("ccpush_source_consumed_total") == 7, timeout=20)
    await eventually(lambda: running.count("ccpush_source_dead_lettered_total") == 3, timeout=20)
    await running.halt()

    assert sorted(await stored_sessions(store, app.id)) == ["r1", "r2"]
    assert await stored_sessions(store, default.id) == ["r3"]
    assert sum((await store.count_by_state(app.id)).values()) == 2  # r1 once: one delivery
    assert running.count("ccpush_source_stored_total") == 4
    assert running.woken >= 1
    assert (
        running.metrics.registry.get_sample_value(
            "ccpush_records_ingested_total", {"status": "duplicate"}
        )
        == 1
    )
    assert 0 <= running.count("ccpush_source_lag_seconds") < 60
    assert await broker.remaining() == 0
    dead = {body: headers for body, headers in await broker.dead_letters()}
    assert len(dead) == 3
    assert "the message is not valid JSON" in dead[b"{not json"]["ccpush-error"]
    assert dead[b"{not json"]["trace"] == "t1"  # the message's own headers are kept
    assert "unknown app" in dead[record_message("r4", None)[0]]["ccpush-error"]
    refused = dead[json.dumps({"callSessionId": "r5"}).encode()]["ccpush-error"]
    assert "callDuration: is required" in refused


async def test_a_freeswitch_source_stores_the_calls_of_json_cdrs(
    broker: Broker, store: Store
) -> None:
    app = await store.create_app(name="switch", push_url=None, now=SystemClock().now())
    files = sorted(FREESWITCH_CDRS.glob("*.json"))
    await broker.publish([(path.read_bytes(), {}) for path in files])
    running = Running(parse_source(broker.source_url(format="freeswitch", app=app.id)), store)
    await eventually(lambda: running.count("ccpush_source_consumed_total") == len(files), 20)
    await running.halt()

    assert running.count("ccpush_source_skipped_total") == 1  # the B-leg
    assert running.count("ccpush_source_stored_total") == len(files) - 1
    assert running.count("ccpush_source_dead_lettered_total") == 0
    uuids = {json.loads(path.read_bytes())["variables"]["uuid"] for path in files}
    stored = set(await stored_sessions(store, app.id))
    assert stored == uuids - {"ab0aa08a-ead3-42c6-a365-99553a001fba"}  # less the B-leg
    assert await broker.remaining() == 0


@pytest.mark.parametrize("broker", ["amqp"], indirect=True)
async def test_an_existing_queue_is_consumed_as_it_was_declared(
    broker: Rabbit, store: Store
) -> None:
    """A queue the platform declared with its own arguments is used, not declared again
    (which the broker would refuse: PRECONDITION_FAILED)."""
    app = await store.create_app(name="theirs", push_url=None, now=SystemClock().now())
    await broker.channel.queue_delete(broker.name)
    arguments = {"x-max-length": 100_000, "x-overflow": "reject-publish"}
    await broker.channel.declare_queue(broker.name, durable=True, arguments=arguments)
    await broker.publish([record_message("q1", app.id)])
    running = Running(parse_source(broker.source_url()), store)
    await eventually(lambda: running.count("ccpush_source_stored_total") == 1, 20)
    await running.halt()
    assert await stored_sessions(store, app.id) == ["q1"]


@pytest.mark.parametrize("broker", ["nats"], indirect=True)
async def test_a_dead_letter_subject_in_the_stream_consumed_whole_is_refused(
    broker: Jet, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    url = _with(NATS_URL, None, {"stream": broker.name, "dlq": f"{broker.prefix}.dead"})
    running = Running(parse_source(url), store)
    with caplog.at_level(logging.WARNING, "ccpush.sources"):
        await eventually(lambda: "which this source consumes whole" in caplog.text, 20)
    await running.halt()
    assert running.count("ccpush_source_consumed_total") == 0


async def rename_schema(old: str, new: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'ALTER SCHEMA "{old}" RENAME TO "{new}"')
    finally:
        await conn.close()


@pytest.mark.parametrize("backend", ["postgres"])  # a schema that is gone: the store fails
async def test_messages_wait_unacknowledged_while_the_store_fails(
    broker: Broker, store: Store, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = await store.create_app(name="held", push_url=None, now=SystemClock().now())
    schema = db_url.rpartition("schema=")[2]
    await rename_schema(schema, schema + "_away")
    try:
        await broker.publish([record_message(f"h{n}", app.id) for n in range(20)])
        running = Running(parse_source(broker.source_url()), store)
        with caplog.at_level(logging.WARNING, "ccpush.sources"):
            await eventually(lambda: "the store failed" in caplog.text, timeout=20)
        await running.halt()  # gives up on its batch, unacknowledged
        assert running.count("ccpush_source_consumed_total") == 20
        assert running.count("ccpush_source_stored_total") == 0
    finally:
        await rename_schema(schema + "_away", schema)
    assert await broker.remaining() == 20

    again = Running(parse_source(broker.source_url()), store)
    await eventually(lambda: again.count("ccpush_source_stored_total") == 20, timeout=30)
    await again.halt()
    assert len(await stored_sessions(store, app.id)) == 20
    assert await broker.remaining() == 0
    assert await broker.dead_letters() == []


class Relay:
    """A TCP relay on loopback to a broker, which a test can cut or close."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 0)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()

    async def open(self) -> Relay:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening (connecting is refused) and cut every connection."""
        if self.server is not None:
            self.server.close()
            self.server = None
        self.cut()

    def cut(self) -> None:
        for writer in list(self.links):
            writer.transport.abort()
        self.links.clear()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.links |= {writer, up_writer}
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.transport.abort()


async def test_a_source_connects_again_when_its_broker_fails(
    broker: Broker, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    app = await store.create_app(name="again", push_url=None, now=SystemClock().now())
    url = AMQP_URL if broker.kind == "amqp" else NATS_URL
    relay = Relay(url)
    await relay.open()
    await relay.close()  # the broker is down when the source starts
    running = Running(parse_source(broker.source_url(port=relay.port)), store)
    try:
        with caplog.at_level(logging.WARNING, "ccpush.sources"):
            await eventually(lambda: "connecting again in 0.5 s" in caplog.text, timeout=10)
            await relay.open()
            await broker.publish([record_message(f"c{n}", app.id) for n in range(5)])
            await eventually(lambda: running.count("ccpush_source_stored_total") == 5, 20)
            relay.cut()  # the connection is lost under the source
            await broker.publish([record_message(f"c{n}", app.id) for n in range(5, 10)])
            await eventually(lambda: running.count("ccpush_source_stored_total") >= 10, 30)
    finally:
        await running.halt()
        await relay.close()
    assert sorted(await stored_sessions(store, app.id)) == sorted(f"c{n}" for n in range(10))
    assert caplog.text.count("connecting again") >= 2  # refused, then cut
    assert "guest:guest" not in caplog.text
    assert await broker.remaining() == 0


# A real worker, killed twice mid-stream

RECORDS = 10_000
MALFORMED = 50
KILL_AT = (2_500, 6_000)


async def start_worker(db_url: str, tmp_path: Path, sources: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "CCPUSH_DATABASE_URL": db_url,
        "CCPUSH_DATA_DIR": str(tmp_path),
        "CCPUSH_SOURCES": sources,
        "CCPUSH_CONCURRENCY": "200",
        "CCPUSH_PUSH_TIMEOUT": "2",
        "CCPUSH_LEASE": "3s",
        "CCPUSH_POLL_INTERVAL": "0.2",
        "CCPUSH_LOG_LEVEL": "WARNING",
        "CCPUSH_ALLOWED_TARGET_NETWORKS": "127.0.0.0/8",
        "CCPUSH_METRICS_PORT": "0",
    }
    with (tmp_path / "worker.log").open("ab") as log:  # read it when the test fails
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ccpush", "worker", env=env, stderr=log
        )


def stream_of_messages(app_id: str) -> tuple[list[tuple[bytes, dict[str, str]]], set[bytes]]:
    """The records, with a malformed message after every 200th: bad JSON, or a record
    refused (no ``callType``), each one different."""
    messages, malformed = [], set()
    for n in range(RECORDS):
        messages.append(record_message(f"k{n:05d}", app_id))
        if n % (RECORDS // MALFORMED) == 0:
            bad = (
                f'{{"callSessionId": "bad{n}"'.encode()
                if n % 400
                else json.dumps({"callSessionId": f"bad{n}", "callDuration": 1}).encode()
            )
            malformed.add(bad)
            messages.append((bad, {"ccpush-app-id": app_id}))
    return messages, malformed


async def _count(store: Store, app_id: str) -> int:
    return sum((await store.count_by_state(app_id)).values())


async def _in_flight(store: Store, app_id: str) -> set[str]:
    held = await store.list_deliveries(
        app_id, DeliveryFilter(states=frozenset({DeliveryState.SENDING}), limit=100_000)
    )
    return {delivery.call_session_id for delivery in held}


async def _all_versions(store: Store, app_id: str) -> list[int]:
    versions: list[int] = []
    after = None
    while page := await store.list_records(app_id, RecordFilter(after=after, limit=1000)):
        versions += [record.version for record in page]
        after = (page[-1].call_start, page[-1].id)
    return versions


@pytest.mark.slow
@pytest.mark.parametrize(
    ("broker", "backend"), [("amqp", "sqlite"), ("nats", "postgres")], indirect=["broker"]
)
async def test_a_worker_killed_twice_mid_stream_loses_no_record_and_pushes_each_once(
    broker: Broker, db_url: str, tmp_path: Path
) -> None:
    receiver = await Receiver().start()
    store = open_store(db_url)
    await store.open()
    try:
        app = await store.create_app(name="stream", push_url=receiver.url, now=SystemClock().now())
        messages, malformed = stream_of_messages(app.id)
        await broker.publish(messages)
        sources = broker.source_url(prefetch="200")
        in_flight: set[str] = set()
        for threshold in KILL_AT:
            worker = await start_worker(db_url, tmp_path, sources)
            await eventually(lambda t=threshold: _count_reaches(store, app.id, t), timeout=60)
            worker.send_signal(signal.SIGKILL)
            assert await worker.wait() == -signal.SIGKILL
            in_flight |= await _in_flight(store, app.id)

        last = await start_worker(db_url, tmp_path, sources)
        try:
            await receiver.wait_for(lambda r: len(r.seen) >= RECORDS, timeout=120)
            await eventually(lambda: _delivered(store, app.id), timeout=60)
        finally:
            last.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(last.wait(), 30) == 0

        expected = {f"k{n:05d}" for n in range(RECORDS)}
        assert set(receiver.seen) == expected  # every record pushed, none lost
        versions = await _all_versions(store, app.id)
        assert len(versions) == RECORDS
        assert set(versions) == {1}  # each redelivered record was a duplicate
        counts = await store.count_by_state(app.id)  # one delivery each: none made twice
        assert counts[DeliveryState.DELIVERED] == sum(counts.values()) == RECORDS
        repeated = {sid for sid, times in receiver.seen.items() if times > 1}
        assert repeated <= in_flight, "a record pushed twice that no kill interrupted"
        dead = await broker.dead_letters()
        assert {body for body, _ in dead} == malformed
        assert all(headers.get("ccpush-error") for _, headers in dead)
        assert await broker.remaining() == 0
        assert "connecting again" not in (tmp_path / "worker.log").read_text()
        print(  # the numbers behind the assertions, shown with -s
            f"{broker.kind}: {len(repeated)} pushes repeated, {len(in_flight)} in flight at"
            f" the kills, {len(dead) - MALFORMED} dead letters repeated"
        )
    finally:
        await store.close()
        await receiver.stop()


async def _count_reaches(store: Store, app_id: str, count: int) -> bool:
    return await _count(store, app_id) >= count


async def _delivered(store: Store, app_id: str) -> bool:
    return (await store.count_by_state(app_id))[DeliveryState.DELIVERED] == RECORDS
