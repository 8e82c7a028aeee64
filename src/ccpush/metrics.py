"""Prometheus metrics: counters moved by ingestion and by every push attempt, and the
state of the queue read from the store when ``/metrics`` is scraped.

Each process has its own registry (no module-level state); with several processes, scrape
each one.
"""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Sequence
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ccpush.answers import UNSTORABLE_ANSWER
from ccpush.clock import Clock
from ccpush.models import Completion, DeliveryState, ErrorKind, IngestResult, IngestStatus
from ccpush.pacing import HostLimits
from ccpush.store.base import Store

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LAG_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    *(300, 900, 1800, 3600, 5400, 7200),
)
"""Seconds: the first attempt's lag (milliseconds to seconds), and the retries' (the
contract's schedule retries at 30, 60 and 90 minutes)."""
HOLD_REASONS = ("back_off", "limited")
"""Why a host is held back (``ccpush.pacing.Throttled.reason``)."""


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.ingested = Counter(
            "ccpush_records_ingested",
            "Call records received, by what became of them",
            ["status"],
            registry=self.registry,
        )
        self._ingested = {status: self.ingested.labels(status.value) for status in IngestStatus}
        self.attempts = Counter(
            "ccpush_push_attempts",
            "Push attempts, by outcome and HTTP status class",
            ["outcome", "status_class", "error_kind"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ccpush_push_duration_seconds",
            "How long a push attempt took",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.lag = Histogram(
            "ccpush_delivery_lag_seconds",
            "From a delivery's making (its record ingested, resent or replayed) to the start"
            " of the attempt that delivered it, by whether that was the first attempt",
            ["attempt"],
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self._lag = {"first": self.lag.labels("first"), "retry": self.lag.labels("retry")}
        self.hosts_held = Gauge(
            "ccpush_hosts_held",
            "Hosts this process holds pushes back from now: asked to back off (429 or 503,"
            " for their Retry-After or a pause), or limited below the start after timeouts,"
            " refused connections or 5xx",
            ["reason"],
            registry=self.registry,
        )
        self.deliveries = Gauge(
            "ccpush_deliveries",
            "Deliveries in the store, by state",
            ["state"],
            registry=self.registry,
        )
        self._attempt_counters: dict[
            tuple[int | None, ErrorKind | None, DeliveryState], Counter
        ] = {}
        self.unstorable = Counter(
            "ccpush_unstorable_answers",
            "Attempts whose outcome the store refused, written without the receiver's answer"
            " (alert on any: an answer the senders did not make storable)",
            registry=self.registry,
        )
        self.oldest_due = Gauge(
            "ccpush_oldest_due_age_seconds",
            "How long the oldest due delivery has waited (0: none is late)",
            registry=self.registry,
        )
        self.source_consumed = Counter(
            "ccpush_source_consumed",
            "Messages taken from a broker source",
            ["source"],
            registry=self.registry,
        )
        self.source_stored = Counter(
            "ccpush_source_stored",
            "Messages of a broker source whose record was stored (duplicates included), then"
            " acknowledged",
            ["source"],
            registry=self.registry,
        )
        self.source_skipped = Counter(
            "ccpush_source_skipped",
            "Messages of a broker source acknowledged without a record, on purpose (FreeSWITCH"
            " legs whose call another leg's CDR carries)",
            ["source"],
            registry=self.registry,
        )
        self.source_dead_lettered = Counter(
            "ccpush_source_dead_lettered",
            "Invalid messages of a broker source published to its dead-letter target",
            ["source"],
            registry=self.registry,
        )
        self.source_lag = Gauge(
            "ccpush_source_lag_seconds",
            "Age of the last message taken from a broker source, by its broker timestamp",
            ["source"],
            registry=self.registry,
        )

    def count_ingested(self, results: Sequence[IngestResult]) -> None:
        """Called for every ingestion request: one increment per status, not per record."""
        for status, count in collections.Counter(result.status for result in results).items():
            self._ingested[status].inc(count)

    def count_refused(self, count: int) -> None:
        """Records an ingestion request refused (the others of its batch were stored)."""
        self.ingested.labels("refused").inc(count)

    def source(self, name: str) -> SourceMetrics:
        """The metrics of one broker source, labelled with its name (password hidden)."""
        return SourceMetrics(
            consumed=self.source_consumed.labels(name),
            stored=self.source_stored.labels(name),
            skipped=self.source_skipped.labels(name),
            dead_lettered=self.source_dead_lettered.labels(name),
            lag=self.source_lag.labels(name),
        )

    def count_attempt(self, done: Completion) -> None:
        """An ``AttemptListener``: called for every attempt written (on the hot path: the
        labelled counter is looked up once per kind of attempt, not once per attempt)."""
        outcome = done.outcome
        kind = (outcome.status_code, outcome.error_kind, done.next_state)
        counter = self._attempt_counters.get(kind)
        if counter is None:
            counter = self._attempt_counters[kind] = self.attempts.labels(*_labels(done))
        counter.inc()
        self.latency.observe(outcome.duration_ms / 1000)
        enqueued_at = done.claimed.enqueued_at
        if outcome.error_kind is None and enqueued_at is not None:
            lag = (outcome.started_at - enqueued_at).total_seconds()
            self._lag["first" if done.claimed.attempt == 1 else "retry"].observe(max(lag, 0.0))
        if outcome.error == UNSTORABLE_ANSWER:
            self.unstorable.inc()

    def watch_hosts(self, limits: HostLimits) -> None:
        """Let ``ccpush_hosts_held`` count ``limits``' throttled hosts at each scrape."""
        for reason in HOLD_REASONS:
            self.hosts_held.labels(reason).set_function(functools.partial(_held, limits, reason))

    async def render(self, store: Store, clock: Clock) -> bytes:
        """The exposition text, with the queue's state read now."""
        for state, count in (await store.count_by_state()).items():
            self.deliveries.labels(state.value).set(count)
        due = await store.next_due_at()
        late = (clock.now() - due).total_seconds() if due else 0.0
        self.oldest_due.set(max(late, 0.0))
        return generate_latest(self.registry)


def _held(limits: HostLimits, reason: str) -> float:
    return limits.throttled_count(reason, time.monotonic())


class SourceMetrics(NamedTuple):
    consumed: Counter
    stored: Counter
    skipped: Counter
    dead_lettered: Counter
    lag: Gauge


def _labels(done: Completion) -> tuple[str, str, str]:
    """``outcome``, ``status_class`` and ``error_kind`` of an attempt."""
    outcome = done.outcome
    status = outcome.status_code
    return (
        done.result,
        f"{status // 100}xx" if status else "none",
        outcome.error_kind.value if outcome.error_kind else "",
    )
