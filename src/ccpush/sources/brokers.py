"""Call records from message brokers: what a message is (``decide``: a record to store, a
message to skip, or a dead letter), and the loop every broker source runs
(``BrokerSource``); each broker's client is in ``ccpush.sources.amqp`` and ``.nats``.

Each message is one record. A batch of messages (up to the source's prefetch) is stored in
one transaction; then its invalid messages are published to the dead-letter target, each
with its reason in the ``ccpush-error`` header; then every message of the batch is
acknowledged. A message is therefore acknowledged only once its record is durable or its
dead letter is, and never dropped: a process that dies before acknowledging has its
messages delivered again, and a record stored twice is a ``duplicate`` (same
``callSessionId``, same content), stored and pushed once. While the store fails, the batch
stays unacknowledged and is stored again after a growing pause; when the broker fails, the
source connects again after a growing pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Final, Generic, Protocol, TypeVar

from pydantic import ValidationError

from ccpush.clock import Clock
from ccpush.dispatcher import store_retry_delay
from ccpush.errors import AppNotFound, StoreError, StoreRefusedValue
from ccpush.metrics import Metrics
from ccpush.models import IngestResult, NewRecord
from ccpush.record import CallRecord, problems_from
from ccpush.sources.config import SourceConfig
from ccpush.store.base import IngestRequest, Store
from ccpush.strict_json import loads_bytes

log = logging.getLogger(__name__)

APP_HEADER: Final = "ccpush-app-id"
"""The message header naming the record's app (else the source's ``app=``)."""
ERROR_HEADER: Final = "ccpush-error"
"""The header of a dead letter: why the message was not stored."""
MAX_ERROR_LENGTH: Final = 1000
CONNECT_TIMEOUT: Final = 10
"""Seconds a source's connection to its broker may take to open."""
FIRST_WAIT: Final = 1.0
"""Seconds a session waits for a first message before its source looks whether to stop."""
RECONNECT_FIRST: Final = 0.5
RECONNECT_LAST: Final = 30.0
"""Seconds between tries to reach a failing broker: doubling from the first to the last."""

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")

M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class Inbound:
    """What ccpush reads of a broker's message."""

    body: bytes
    app_id: str | None
    """The ``ccpush-app-id`` header, if the message has one."""
    sent_at: datetime | None = None
    """The broker's timestamp of the message, if any (for the lag gauge)."""


@dataclass(frozen=True, slots=True)
class Ingest:
    """A valid record, for this app."""

    app_id: str
    record: NewRecord


@dataclass(frozen=True, slots=True)
class Skip:
    """A message acknowledged without a record, on purpose, and why: a FreeSWITCH leg
    whose call another leg's CDR carries."""

    reason: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An invalid message, and why."""

    error: str


Read = tuple[CallRecord, str | None] | Skip
"""What a message holds: its record and the app it names itself (a CDR's variable), or
why it is skipped."""
Reader = Callable[[bytes], Read]
"""How a source's ``format=`` reads a message: ``ValidationError`` for a refused record,
``ValueError`` for a message that cannot be read."""


def read_record(body: bytes) -> Read:
    """A message of ``format=record``: the push contract's 23-field JSON."""
    return CallRecord.model_validate(read_json(body)), None


def decide(
    message: Inbound, *, read: Reader, zone: tzinfo, default_app: str | None
) -> Ingest | Skip | DeadLetter:
    """What to do with a message: store its record (for the app of its ``ccpush-app-id``
    header, else the one it names itself, else ``default_app``), skip it, or dead-letter
    it with the reason."""
    try:
        found = read(message.body)
    except ValidationError as exc:
        reasons = "; ".join(f"{p.field}: {p.reason}" for p in problems_from(exc))
        return DeadLetter(f"the record is refused: {reasons}")
    except ValueError as exc:
        return DeadLetter(str(exc))
    if isinstance(found, Skip):
        return found
    record, named_app = found
    app_id = message.app_id or named_app or default_app
    if not app_id:
        return DeadLetter(f"no app: the message has no {APP_HEADER} header and the source no app=")
    if not app_id.isprintable():
        return DeadLetter(f"the app id {app_id!r} holds a control character")
    new = NewRecord(
        call_session_id=record.callSessionId,
        body=record.push_body(),
        call_start=record.call_start(zone),
    )
    return Ingest(app_id, new)


def read_json(body: bytes) -> Any:
    """A message's JSON, read as strictly as the API reads a request body (``ValueError``
    saying what is wrong)."""
    return loads_bytes(body, "the message")


def header_text(error: str) -> str:
    """``error`` as a header value any broker carries: one line, bounded."""
    text = _UNPRINTABLE.sub(" ", error)
    return text if len(text) <= MAX_ERROR_LENGTH else text[: MAX_ERROR_LENGTH - 3] + "..."


def reconnect_delay(failures: int) -> float:
    """Seconds to wait before connecting again after ``failures`` failures in a row."""
    return min(RECONNECT_LAST, RECONNECT_FIRST * 2.0 ** min(failures - 1, 30))


@dataclass(frozen=True, slots=True)
class Received(Generic[M]):
    """A message as its broker's client gave it, and what ccpush reads of it."""

    message: M
    inbound: Inbound


class Session(Protocol[M]):
    """A source's open connection to its broker."""

    async def next_batch(self) -> list[Received[M]]:
        """The messages that have come, up to the prefetch, after waiting ``FIRST_WAIT``
        at most for the first; perhaps none. Raises when the connection is lost."""
        ...

    async def dead_letter(self, message: M, error: str) -> None:
        """Publish the message to the dead-letter target with ``error`` in its
        ``ccpush-error`` header, and return once the broker has it durably."""
        ...

    async def acknowledge(self, messages: Sequence[M]) -> None:
        """Acknowledge the messages: the broker will not deliver them again."""
        ...


class Connector(Protocol[M]):
    def session(self) -> AbstractAsyncContextManager[Session[M]]:
        """Connect, make sure of the queues or streams, start consuming; close on exit
        (the broker then delivers again what was not acknowledged)."""
        ...


@dataclass(frozen=True, slots=True)
class Intake:
    """Where the records of the sources go: the service's store, clock, record time zone
    and metrics, and what wakes the dispatcher."""

    store: Store
    clock: Clock
    zone: tzinfo
    metrics: Metrics
    on_stored: Callable[[], None]


class _Abandoned(Exception):
    """Stopping while the store fails: the batch is left unacknowledged."""


class BrokerSource(Generic[M]):
    """One source: consumes its broker, stores, dead-letters and acknowledges, until stopped."""

    def __init__(
        self, config: SourceConfig, connector: Connector[M], intake: Intake, read: Reader
    ) -> None:
        self.config = config
        self.connector = connector
        self.intake = intake
        self.read = read
        self.counts = intake.metrics.source(config.name)
        self._stop = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, connecting again (after a growing pause) whenever
        the broker fails; the batch in hand is finished first."""
        self._stop = stop
        failures = 0
        while not stop.is_set():
            try:
                async with self.connector.session() as session:
                    log.info("source %s: consuming", self.config.name)
                    failures = 0
                    await self._consume(session)
            except _Abandoned:
                return
            except Exception as exc:  # the broker's failures are many; each is retried
                failures += 1
                delay = reconnect_delay(failures)
                log.warning(
                    "source %s: %s: %s; connecting again in %.1f s",
                    self.config.name,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await _stopped_within(stop, delay)

    async def _consume(self, session: Session[M]) -> None:
        while not self._stop.is_set():
            batch = await session.next_batch()
            if batch:
                await self.take(session, batch)

    async def take(self, session: Session[M], batch: Sequence[Received[M]]) -> None:
        """Store the records of a batch, dead-letter its invalid messages, then acknowledge
        every message of it."""
        self._observe(batch)
        decisions = [self._decide(item.inbound) for item in batch]
        valid = [(index, d) for index, d in enumerate(decisions) if isinstance(d, Ingest)]
        refused = await self._ingest([ingest for _, ingest in valid])
        for (index, _), dead in zip(valid, refused, strict=True):
            decisions[index] = dead or decisions[index]
        for item, decision in zip(batch, decisions, strict=True):
            if isinstance(decision, DeadLetter):
                await session.dead_letter(item.message, header_text(decision.error))
                log.warning("source %s: dead-lettered: %s", self.config.name, decision.error)
        await session.acknowledge([item.message for item in batch])
        outcomes = Counter(type(decision) for decision in decisions)
        self.counts.stored.inc(outcomes[Ingest])
        self.counts.skipped.inc(outcomes[Skip])
        self.counts.dead_lettered.inc(outcomes[DeadLetter])

    def _decide(self, message: Inbound) -> Ingest | Skip | DeadLetter:
        zone, default_app = self.intake.zone, self.config.app_id
        return decide(message, read=self.read, zone=zone, default_app=default_app)

    def _observe(self, batch: Sequence[Received[M]]) -> None:
        self.counts.consumed.inc(len(batch))
        sent_at = batch[-1].inbound.sent_at
        if sent_at is not None:
            age = (self.intake.clock.now() - sent_at.astimezone(UTC)).total_seconds()
            self.counts.lag.set(max(age, 0.0))

    async def _ingest(self, items: Sequence[Ingest]) -> list[DeadLetter | None]:
        """Store the records; for each, None (stored) or why it is a dead letter after all
        (its app does not exist, the database refuses one of its values)."""
        if not items:
            return []
        try:
            return await self._commit(items)
        except StoreRefusedValue as exc:
            if len(items) == 1:
                return [DeadLetter(f"the store refused the record: {exc}")]
        verdicts: list[DeadLetter | None] = []
        for item in items:  # which record the database refuses: each alone
            verdicts += await self._ingest([item])
        return verdicts

    async def _commit(self, items: Sequence[Ingest]) -> list[DeadLetter | None]:
        by_app: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            by_app.setdefault(item.app_id, []).append(index)
        now = self.intake.clock.now()
        requests = [
            IngestRequest(app_id=app_id, records=[items[i].record for i in indexes], now=now)
            for app_id, indexes in by_app.items()
        ]
        outcomes = await self._retrying(requests)
        verdicts: list[DeadLetter | None] = [None] * len(items)
        for (app_id, indexes), outcome in zip(by_app.items(), outcomes, strict=True):
            if isinstance(outcome, AppNotFound):
                for index in indexes:
                    verdicts[index] = DeadLetter(f"unknown app: no app has the id {app_id!r}")
            elif isinstance(outcome, Exception):
                raise outcome
            else:
                self.intake.metrics.count_ingested(outcome)
        if any(verdict is None for verdict in verdicts):
            self.intake.on_stored()
        return verdicts

    async def _retrying(
        self, requests: Sequence[IngestRequest]
    ) -> list[list[IngestResult] | Exception]:
        """``ingest_many``, tried again after a growing pause while the store fails."""
        failures = 0
        while True:
            try:
                return list(await self.intake.store.ingest_many(requests))
            except StoreRefusedValue:
                raise
            except StoreError as exc:
                failures += 1
                delay = store_retry_delay(failures)
                log.warning(
                    "source %s: the store failed (%s); %d records wait, unacknowledged;"
                    " trying again in %.2f s",
                    self.config.name,
                    exc,
                    sum(len(request.records) for request in requests),
                    delay,
                )
                if await _stopped_within(self._stop, delay):
                    raise _Abandoned from exc


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile; whether it is."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
