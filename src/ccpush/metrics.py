"""Prometheus metrics: counters moved by ingestion and by every push attempt, and the
state of the queue read from the store when ``/metrics`` is scraped.

Each process has its own registry (no module-level state); with several processes, scrape
each one.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ccpush.clock import Clock
from ccpush.models import Completion, DeliveryState, ErrorKind, IngestResult, IngestStatus
from ccpush.store.base import Store

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


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
        self.deliveries = Gauge(
            "ccpush_deliveries",
            "Deliveries in the store, by state",
            ["state"],
            registry=self.registry,
        )
        self._attempt_counters: dict[
            tuple[int | None, ErrorKind | None, DeliveryState], Counter
        ] = {}
        self.oldest_due = Gauge(
            "ccpush_oldest_due_age_seconds",
            "How long the oldest due delivery has waited (0: none is late)",
            registry=self.registry,
        )

    def count_ingested(self, results: Sequence[IngestResult]) -> None:
        """Called for every ingestion request: one increment per status, not per record."""
        for status, count in collections.Counter(result.status for result in results).items():
            self._ingested[status].inc(count)

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

    async def render(self, store: Store, clock: Clock) -> bytes:
        """The exposition text, with the queue's state read now."""
        for state, count in (await store.count_by_state()).items():
            self.deliveries.labels(state.value).set(count)
        due = await store.next_due_at()
        late = (clock.now() - due).total_seconds() if due else 0.0
        self.oldest_due.set(max(late, 0.0))
        return generate_latest(self.registry)


def _labels(done: Completion) -> tuple[str, str, str]:
    """``outcome``, ``status_class`` and ``error_kind`` of an attempt."""
    outcome = done.outcome
    status = outcome.status_code
    return (
        _outcome(done),
        f"{status // 100}xx" if status else "none",
        outcome.error_kind.value if outcome.error_kind else "",
    )


def _outcome(done: Completion) -> str:
    if done.outcome.ok:
        return "delivered"
    return "failed" if done.next_state is DeliveryState.FAILED else "retrying"
