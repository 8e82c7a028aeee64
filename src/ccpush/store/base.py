"""The store interface: one contract, one module per backend (sqlite, postgres)."""

from __future__ import annotations

import abc
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Final

from ccpush.models import (
    App,
    Claimed,
    Completion,
    Delivery,
    DeliveryState,
    IngestResult,
    NewRecord,
)


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(dialect: str) -> list[Migration]:
    """The numbered ``NNNN_name.sql`` files of a backend, in order."""
    folder = resources.files("ccpush.store") / "migrations" / dialect
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    return sorted(found, key=lambda migration: migration.version)


def new_app_id() -> str:
    return "app_" + secrets.token_hex(10)


def unique_by_session(records: Sequence[NewRecord]) -> list[NewRecord]:
    """The records with the first of each ``callSessionId`` kept, in order."""
    seen: set[str] = set()
    kept = []
    for record in records:
        if record.call_session_id not in seen:
            seen.add(record.call_session_id)
            kept.append(record)
    return kept


def ingest_results(records: Sequence[NewRecord], accepted: set[str]) -> list[IngestResult]:
    """One result per input record; only the first of a repeated id counts as accepted."""
    results = []
    for record in records:
        sid = record.call_session_id
        results.append(IngestResult(call_session_id=sid, accepted=sid in accepted))
        accepted.discard(sid)
    return results


class Store(abc.ABC):
    """Durable state of ccpush: apps, records, deliveries and attempts.

    Every method is one transaction. Times come from the caller's clock, so a test that
    moves a ``ManualClock`` moves the store's idea of "now" too.
    """

    @abc.abstractmethod
    async def open(self, *, migrate: bool = True) -> None:
        """Connect, and (unless told not to) bring the schema up to date."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def migrate(self) -> list[str]:
        """Apply the migrations not yet applied; the names of those applied."""

    # Voice applications

    @abc.abstractmethod
    async def create_app(self, *, name: str, push_url: str | None, now: datetime) -> App: ...

    @abc.abstractmethod
    async def get_app(self, app_id: str) -> App:
        """The app; ``AppNotFound`` if there is none."""

    @abc.abstractmethod
    async def update_app(
        self,
        app_id: str,
        *,
        now: datetime,
        name: str | _Unset = UNSET,
        push_url: str | _Unset | None = UNSET,
    ) -> App:
        """Change an app. Clearing the push address holds its waiting deliveries; setting
        one releases them (due now). Pending retries go to the address current when due."""

    # Records

    @abc.abstractmethod
    async def ingest(
        self, app_id: str, records: Sequence[NewRecord], *, now: datetime
    ) -> list[IngestResult]:
        """Store records and their deliveries in one transaction (all or nothing).

        A record whose ``callSessionId`` the app already has is not stored again and gets
        no new delivery (``accepted=False``)."""

    @abc.abstractmethod
    async def deliveries_of(self, app_id: str, call_session_id: str) -> list[Delivery]:
        """The deliveries of one record, newest first, each with its attempts."""

    @abc.abstractmethod
    async def count_by_state(self, app_id: str | None = None) -> dict[DeliveryState, int]: ...

    # Dispatching

    @abc.abstractmethod
    async def claim_due(
        self, *, now: datetime, limit: int, lease_until: datetime, owner: str
    ) -> list[Claimed]:
        """Lease up to ``limit`` pending deliveries due at ``now``, oldest due first."""

    @abc.abstractmethod
    async def complete(self, completions: Sequence[Completion], *, owner: str) -> None:
        """Record attempts and move their deliveries on, in one transaction.

        The attempt is always kept; the delivery moves only if ``owner`` still holds it."""

    @abc.abstractmethod
    async def release_expired(self, *, now: datetime) -> int:
        """Return deliveries whose lease ran out (their worker died) to pending."""

    @abc.abstractmethod
    async def next_due_at(self) -> datetime | None:
        """When the earliest pending delivery is due, if any."""
