"""The store's rules, the same for every backend: pure functions of their arguments.

What an ingestion stores (``plan_ingest``), which columns an app update sets
(``app_changes``), what a batch of attempts says of apps' failing streaks
(``failure_streaks``), how a new delivery starts (``new_delivery_state``), how large a
replay may be (``check_replay_size``), when a replay asked again is the one asked before
(``is_same_replay``), when an idempotency key may be taken (``idempotency_key_free``),
deliveries counted by state (``counts_by_state``), and new ids.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from ccpush.errors import ReplayTooLarge
from ccpush.models import (
    App,
    Completion,
    DeliveryState,
    IngestResult,
    IngestStatus,
    NewRecord,
    ReplayJob,
    ReplayState,
)
from ccpush.store.base import UNSET, IdempotentRequest, _Unset


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def new_app_id() -> str:
    return new_id("app")


def counts_by_state(rows: Iterable[Iterable[Any]]) -> dict[DeliveryState, int]:
    """``(state, count)`` rows as a count for every state, zero where no row said."""
    counts = dict.fromkeys(DeliveryState, 0)
    for state, count in rows:
        counts[DeliveryState(state)] += count
    return counts


def new_delivery_state(app: App) -> DeliveryState:
    """A new delivery is due now, or held while its app is not pushing."""
    return DeliveryState.PENDING if app.pushing else DeliveryState.HELD


def check_replay_size(total: int, cap: int) -> None:
    """``ReplayTooLarge`` for a replay of ``total`` records when one may cover ``cap``."""
    if total > cap:
        raise ReplayTooLarge(
            f"the replay covers {total} records, more than the {cap} one replay may;"
            " narrow the range"
        )


SAME_REPLAY_WINDOW: Final = timedelta(minutes=1)
"""However fast a replay's pushes ended, the same request is the same replay this long."""


def is_same_replay(job: ReplayJob, *, unfinished: bool, now: datetime) -> bool:
    """Whether a request identical to ``job``'s (same app, kind and range) asks for
    ``job`` again: while it enqueues, while a delivery it made is not finished
    (``unfinished``: one is held, pending or sending), and within ``SAME_REPLAY_WINDOW`` of
    its asking (a request a client sent twice, the first one's pushes already done)."""
    running = job.state is not ReplayState.DONE
    return running or unfinished or now < job.created_at + SAME_REPLAY_WINDOW


def idempotency_key_free(held: IdempotentRequest, *, now: datetime) -> bool:
    """Whether another request may take the key ``held`` has: it expired, or its request
    has no answer and held it past ``held_until`` (its process died, or the store failed
    as it let go)."""
    return now >= held.expires_at or (held.status is None and now >= held.held_until)


@dataclass(frozen=True, slots=True)
class Latest:
    """What the store has of a record: its id and latest version."""

    record_id: int | None
    """None for a record first seen in the batch being planned."""
    version: int
    body: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedVersion:
    record: NewRecord
    record_id: int | None
    """None: a record new in this batch (its row is made once, for its first version)."""
    version: int
    sequence: int


@dataclass(frozen=True, slots=True)
class IngestPlan:
    versions: list[PlannedVersion]
    results: list[IngestResult]
    last_sequence: int


def plan_ingest(
    records: Sequence[NewRecord], latest: dict[str, Latest], last_sequence: int
) -> IngestPlan:
    """Decide, in order, what each record is: new (version 1), a new version (other
    content than the latest), or a duplicate; and give each version the app's next
    sequence number, so the numbers have no holes."""
    known = dict(latest)
    versions, results = [], []
    for record in records:
        sid = record.call_session_id
        before = known.get(sid)
        if before is not None and before.body == record.body:
            results.append(
                IngestResult(
                    call_session_id=sid,
                    status=IngestStatus.DUPLICATE,
                    sequence=None,
                    version=before.version,
                )
            )
            continue
        last_sequence += 1
        version = 1 if before is None else before.version + 1
        record_id = None if before is None else before.record_id
        versions.append(
            PlannedVersion(
                record=record, record_id=record_id, version=version, sequence=last_sequence
            )
        )
        known[sid] = Latest(record_id, version, record.body)
        status = IngestStatus.ACCEPTED if before is None else IngestStatus.UPDATED
        results.append(
            IngestResult(
                call_session_id=sid, status=status, sequence=last_sequence, version=version
            )
        )
    return IngestPlan(versions, results, last_sequence)


def app_changes(
    *,
    name: str | _Unset,
    push_url: str | _Unset | None,
    paused: bool | _Unset,
    signing: bool | _Unset,
    paused_reason: str | None,
    endpoint: str | _Unset | None = UNSET,
    rate_limit: float | _Unset | None = UNSET,
    max_in_flight: int | _Unset | None = UNSET,
) -> dict[str, Any]:
    """The columns an app update sets: those given, and what follows from them (a resume
    clears the pause reason; a resume or a new address forgets the failing streak; a new
    rate starts with a full bucket)."""
    given = {
        "name": name,
        "push_url": push_url,
        "paused": paused,
        "signing": signing,
        "endpoint": endpoint,
        "rate_limit": rate_limit,
        "max_in_flight": max_in_flight,
    }
    changes = {column: value for column, value in given.items() if not isinstance(value, _Unset)}
    if not isinstance(rate_limit, _Unset):
        changes["pace_tokens"] = changes["pace_at"] = None
    if paused is True:
        changes["paused_reason"] = paused_reason
    if paused is False:
        changes["paused_reason"] = None
    if paused is False or not isinstance(push_url, _Unset):
        changes["failing_since"] = None
    return changes


@dataclass(frozen=True, slots=True)
class Streak:
    """What a batch of attempts says of an app's failing streak."""

    succeeded: bool
    """A push succeeded: the streak restarts at ``failing_since`` (None: no failure after)."""
    failing_since: datetime | None


def failure_streaks(completions: Sequence[Completion]) -> dict[str, Streak]:
    """Per app: whether a push succeeded, and since when pushes have failed without a
    success after (the first failure after the last success)."""
    if all(done.outcome.error_kind is None for done in completions):  # the usual batch
        return {done.claimed.app_id: Streak(True, None) for done in completions}
    last_ok: dict[str, datetime] = {}
    for done in completions:
        if done.outcome.ok:
            app_id, at = done.claimed.app_id, done.outcome.started_at
            last_ok[app_id] = max(at, last_ok.get(app_id, at))
    first_failure: dict[str, datetime] = {}
    for done in completions:
        app_id, at = done.claimed.app_id, done.outcome.started_at
        if not done.outcome.ok and (app_id not in last_ok or at > last_ok[app_id]):
            first_failure[app_id] = min(at, first_failure.get(app_id, at))
    apps = {done.claimed.app_id for done in completions}
    return {app: Streak(app in last_ok, first_failure.get(app)) for app in apps}
