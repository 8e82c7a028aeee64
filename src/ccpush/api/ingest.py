"""Reading call records from a request body (one record or an array: each record valid
and stored, or refused with its problems), and committing concurrent requests together."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from pydantic import ValidationError

from ccpush.api.errors import ApiError, invalid
from ccpush.api.json_bodies import load_json
from ccpush.api.schemas import IngestOut, RecordResult
from ccpush.errors import IngestionBusy
from ccpush.models import IngestResult, NewRecord
from ccpush.record import CallRecord, Problem, problems_from
from ccpush.store.base import IngestRequest, Store


@dataclass(frozen=True, slots=True)
class Refusal:
    """An invalid record: its position in the request, its ``callSessionId`` when that is
    valid (to name the record by), and every problem found."""

    index: int
    call_session_id: str | None
    problems: list[Problem]


@dataclass(frozen=True, slots=True)
class ParsedBody:
    """The records of a request body: the valid ones ready to store, and the refused ones."""

    records: list[NewRecord]
    """The valid records, in the request's order."""
    refusals: list[Refusal]

    @property
    def problems(self) -> list[Problem]:
        return [problem for refusal in self.refusals for problem in refusal.problems]

    def answer(self, results: Sequence[IngestResult]) -> IngestOut:
        """Every record's outcome in the request's order: the store's ``results`` (one per
        valid record, in order) with the refusals in their places."""
        if len(results) != len(self.records):
            raise ValueError(f"{len(results)} results for {len(self.records)} records")
        stored = iter(results)
        refused = {refusal.index: refusal for refusal in self.refusals}
        outcomes = []
        for index in range(len(self.records) + len(self.refusals)):
            refusal = refused.get(index)
            outcomes.append(
                RecordResult.of(next(stored))
                if refusal is None
                else RecordResult.refused(refusal.call_session_id, refusal.problems)
            )
        return IngestOut.of(outcomes)


def parse_records(body: bytes, *, zone: tzinfo, max_records: int) -> ParsedBody:
    """Validate every record of a body: the valid ones, and the others with every problem
    found. A body that is not JSON, nor a record or an array of them, raises a 4xx error."""
    data: Any = load_json(body)
    single = isinstance(data, dict)
    items = [data] if single else data
    if not isinstance(items, list):
        raise invalid([Problem(field="(body)", reason="must be a call record or an array of them")])
    if not items:
        raise invalid([Problem(field="(body)", reason="the array holds no records")])
    if len(items) > max_records:
        raise ApiError(413, "too_many_records", f"a batch may hold at most {max_records} records")
    records, refusals = [], []
    for index, item in enumerate(items):
        try:
            record = CallRecord.model_validate(item)
        except ValidationError as exc:
            problems = problems_from(exc, "" if single else f"[{index}]")
            refusals.append(Refusal(index, _session_id(item, problems), problems))
            continue
        records.append(
            NewRecord(
                call_session_id=record.callSessionId,
                body=record.push_body(),
                call_start=record.call_start(zone),
            )
        )
    return ParsedBody(records, refusals)


def _session_id(item: Any, problems: list[Problem]) -> str | None:
    value = item.get("callSessionId") if isinstance(item, dict) else None
    if not isinstance(value, str) or any(p.field.endswith("callSessionId") for p in problems):
        return None
    return value


_Queued = tuple[IngestRequest, "asyncio.Future[list[IngestResult]]"]


class GroupCommit:
    """Ingestion requests that arrive together are committed together.

    Each request waits for the commit that holds its records, then answers: 202 still
    means durable. While one commit runs, the requests that arrive queue up and go in the
    next one (at most ``max_records`` records each, and the queue waits ``window`` seconds
    for company first when it is small); a store writes one transaction for all of them
    (``Store.ingest_many``), instead of one each. Each request (its valid records) is
    stored whole or not at all: one for an unknown app is refused alone.
    """

    def __init__(
        self,
        store: Store,
        *,
        window: float = 0.0,
        max_records: int = 2000,
        max_queued: int = 20_000,
    ) -> None:
        self.store = store
        self.window = window
        self.max_records = max_records
        self.max_queued = max_queued
        """Records the queue may hold: a slow database makes ingestion refuse (and the
        platform send again), not pile requests up in memory."""
        self._queue: deque[_Queued] = deque()
        self._queued_records = 0
        self._committer: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Requests queued for the next commit."""
        return len(self._queue)

    async def ingest(
        self,
        app_id: str,
        records: Sequence[NewRecord],
        *,
        now: datetime,
        account_id: str | None = None,
    ) -> list[IngestResult]:
        if self._queued_records and self._queued_records + len(records) > self.max_queued:
            raise IngestionBusy
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[IngestResult]] = loop.create_future()
        request = IngestRequest(app_id=app_id, records=records, now=now, account_id=account_id)
        self._queue.append((request, done))
        self._queued_records += len(records)
        if self._committer is None:
            self._committer = loop.create_task(self._commit_all(), name="ccpush-group-commit")
        return await done

    async def _commit_all(self) -> None:
        try:
            while self._queue:
                if self.window and self._queued_records < self.max_records:
                    await asyncio.sleep(self.window)
                await self._commit(self._take())
        finally:
            self._committer = None

    def _take(self) -> list[_Queued]:
        taken: list[_Queued] = []
        count = 0
        while self._queue and (
            not taken or count + len(self._queue[0][0].records) <= (self.max_records)
        ):
            request, done = self._queue.popleft()
            self._queued_records -= len(request.records)
            if not done.done():  # a request whose client went away is not stored
                taken.append((request, done))
                count += len(request.records)
        return taken

    async def _commit(self, batch: list[_Queued]) -> None:
        if not batch:
            return
        try:
            outcomes = await self.store.ingest_many([request for request, _ in batch])
        except Exception as exc:  # the store failed: every request of the batch fails
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        for (_, done), outcome in zip(batch, outcomes, strict=True):
            if done.done():
                continue
            if isinstance(outcome, Exception):
                done.set_exception(outcome)
            else:
                done.set_result(outcome)
