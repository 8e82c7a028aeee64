"""Call records: ingestion, the reconciliation query, deliveries, resend and replay."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from ccpush.api.auth import Manager, authenticate
from ccpush.api.deps import ServiceDep
from ccpush.api.errors import ApiError, invalid
from ccpush.api.ingest import GroupCommit, parse_records
from ccpush.api.params import decode_cursor, encode_cursor, parse_time
from ccpush.api.schemas import (
    DeliveriesOut,
    DeliveryOut,
    DeliveryPage,
    ErrorOut,
    IngestOut,
    RecordPage,
    RecordResult,
    ReplayCreate,
    ReplayOut,
)
from ccpush.models import DeliveryState, ReplayJob, ReplayKind, StoredRecord
from ccpush.record import Problem
from ccpush.service import Service
from ccpush.store.base import DeliveryFilter, RecordFilter

router = APIRouter(prefix="/v1/apps/{app_id}")

MAX_REPLAY_RECORDS = 100_000
"""The most records one replay may push again; a larger range must be split."""

INGEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/CallRecord"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/CallRecord"}},
                ]
            }
        }
    },
}


@router.post(
    "/call-records",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestOut,
    tags=["call records"],
    openapi_extra={"requestBody": INGEST_BODY},
    responses={
        400: {"model": ErrorOut, "description": "The body is not JSON"},
        413: {"model": ErrorOut, "description": "Body or batch too large"},
    },
)
async def ingest_records(app_id: str, request: Request) -> Response:
    """Store one call record or an array of them for pushing.

    All or nothing: if any record is invalid, none is stored and the answer lists every
    problem with its field path (``[3].callType``). Answers once the records are durable
    (requests that arrive together are committed together).
    A record whose ``callSessionId`` the app already has is reported as a duplicate and is
    not pushed again."""
    return await _ingest(app_id, request)


INGEST_PATH = router.prefix + "/call-records"


async def ingest(request: Request) -> Response:
    """``ingest_records`` as a plain Starlette endpoint, which ``create_api`` matches before
    any other route: on the hottest route, FastAPI's per-request resolution of parameters
    (path, query, headers, cookies, none of them needed) cost ~15 % of a request. The
    decorated route above documents it in the API's schema."""
    return await _ingest(request.path_params["app_id"], request)


async def _ingest(app_id: str, request: Request) -> Response:
    # No dependencies (``AnyCaller``, ``ServiceDep``): resolving them costs more than
    # authenticating, and a plain function dependency runs in a worker thread.
    caller = await authenticate(request)
    service: Service = request.app.state.service
    settings = service.settings
    body = await request.body()  # its size is capped by the BodyLimit middleware
    records = parse_records(body, zone=service.zone, max_records=settings.max_batch_records)
    committer: GroupCommit = request.app.state.group_commit
    results = await committer.ingest(
        app_id, records, now=service.clock.now(), account_id=caller.account_id
    )
    service.dispatcher.wake()
    service.metrics.count_ingested(results)
    accepted = sum(result.accepted for result in results)
    answer = IngestOut(
        accepted=accepted,
        duplicates=len(results) - accepted,
        results=[RecordResult.of(result) for result in results],
    )
    # Serialized here, once: FastAPI would validate the answer again and encode it in Python.
    return Response(
        answer.model_dump_json(by_alias=True),
        status_code=status.HTTP_202_ACCEPTED,
        media_type="application/json",
    )


@router.get(
    "/call-records",
    tags=["call records"],
    response_model=RecordPage,
    responses={200: {"model": RecordPage}},
)
async def list_records(
    app_id: str,
    caller: Manager,
    service: ServiceDep,
    since: Annotated[str | None, Query(alias="from", description="Call start ≥ this")] = None,
    until: Annotated[str | None, Query(alias="to", description="Call start < this")] = None,
    first: Annotated[
        int | None, Query(alias="fromSequence", ge=1, description="Sequence numbers from this")
    ] = None,
    last: Annotated[
        int | None, Query(alias="toSequence", ge=1, description="up to this one, included")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> Response:
    """Records exactly as pushed, by call start time or by sequence number: what a receiver
    missed can be fetched here. Each version of a record is one item.

    Times are ISO 8601 with an offset, or ``yyyy-MM-dd HH:mm:ss`` in the record time zone.
    Sequence numbers (the ``ccpush-sequence`` header of each push) have no holes, so a
    receiver that saw 41 then 44 asks for ``fromSequence=42&toSequence=43``."""
    await service.store.get_app(app_id, caller.account_id)
    if first is not None or last is not None:
        if since is not None or until is not None:
            raise invalid([_problem("fromSequence", "cannot be combined with from/to")], "query")
        records, next_cursor = await _by_sequence(service, app_id, first, last, limit, cursor)
    else:
        records, next_cursor = await _by_time(service, app_id, since, until, limit, cursor)
    return Response(_record_page(records, next_cursor), media_type="application/json")


async def _by_time(
    service: Service,
    app_id: str,
    since: str | None,
    until: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[StoredRecord], str | None]:
    after = decode_cursor(cursor)
    query = RecordFilter(
        since=parse_time(since, "from", service.zone),
        until=parse_time(until, "to", service.zone),
        after=_record_cursor(after) if after is not None else None,
        limit=limit,
    )
    records = await service.store.list_records(app_id, query)
    if len(records) < limit:
        return records, None
    return records, encode_cursor([records[-1].call_start.timestamp(), records[-1].id])


async def _by_sequence(
    service: Service,
    app_id: str,
    first: int | None,
    last: int | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[StoredRecord], str | None]:
    after = decode_cursor(cursor)
    if after is not None and not isinstance(after, int):
        raise invalid([_problem("cursor", "is not a cursor this API gave")], "query")
    start = max(first or 1, (after or 0) + 1)
    records = await service.store.records_by_sequence(app_id, start, last or 2**62, limit)
    more = len(records) == limit and records[-1].sequence != last
    return records, encode_cursor(records[-1].sequence) if more else None


def _record_page(records: list[StoredRecord], next_cursor: str | None) -> bytes:
    """The stored bodies go out byte for byte: this is what was (or will be) pushed."""
    items = [
        b'{"sequence":%d,"version":%d,"receivedAt":"%s","record":%s}'
        % (r.sequence, r.version, _iso(r.received_at).encode(), r.body)
        for r in records
    ]
    cursor = json.dumps(next_cursor).encode()
    return b'{"items":[' + b",".join(items) + b'],"nextCursor":' + cursor + b"}"


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _problem(field: str, reason: str) -> Problem:
    return Problem(field=field, reason=reason)


def _record_cursor(value: object) -> tuple[datetime, int]:
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], int | float)
        and isinstance(value[1], int)
    ):
        return datetime.fromtimestamp(value[0], UTC), value[1]
    raise invalid([_problem("cursor", "is not a cursor this API gave")], "query")


@router.get("/call-records/{call_session_id}/deliveries", tags=["deliveries"])
async def record_deliveries(
    app_id: str, call_session_id: str, caller: Manager, service: ServiceDep
) -> DeliveriesOut:
    """The deliveries of a record, newest first: state, and every attempt with its outcome."""
    await service.store.get_app(app_id, caller.account_id)
    deliveries = await service.store.deliveries_of(app_id, call_session_id)
    if not deliveries:
        raise ApiError(404, "not_found", "This app has no record with this callSessionId.")
    return DeliveriesOut(
        call_session_id=call_session_id,
        deliveries=[DeliveryOut.of(delivery) for delivery in deliveries],
    )


@router.post(
    "/call-records/{call_session_id}/resend",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["deliveries"],
)
async def resend(
    app_id: str, call_session_id: str, caller: Manager, service: ServiceDep
) -> DeliveryOut:
    """Push a record again now: a new delivery with its own attempts, the record unchanged."""
    await service.store.get_app(app_id, caller.account_id)
    delivery = await service.store.resend(app_id, call_session_id, now=service.clock.now())
    service.dispatcher.wake()
    return DeliveryOut.of(delivery)


@router.get("/deliveries", tags=["deliveries"])
async def list_deliveries(
    app_id: str,
    caller: Manager,
    service: ServiceDep,
    state: Annotated[
        str | None, Query(description="Comma-separated: held, pending, sending, delivered, failed")
    ] = None,
    since: Annotated[str | None, Query(description="Created at or after")] = None,
    until: Annotated[str | None, Query(description="Created before")] = None,
    call_session_id: Annotated[str | None, Query(alias="callSessionId")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> DeliveryPage:
    """The app's delivery log, newest first, each delivery with its attempts."""
    await service.store.get_app(app_id, caller.account_id)
    before = decode_cursor(cursor)
    if before is not None and not isinstance(before, int):
        raise invalid([Problem(field="cursor", reason="is not a cursor this API gave")], "query")
    query = DeliveryFilter(
        states=_states(state),
        since=parse_time(since, "since", service.zone),
        until=parse_time(until, "until", service.zone),
        call_session_id=call_session_id,
        before_id=before,
        limit=limit,
    )
    deliveries = await service.store.list_deliveries(app_id, query)
    return DeliveryPage(
        deliveries=[DeliveryOut.of(delivery) for delivery in deliveries],
        next_cursor=encode_cursor(deliveries[-1].id) if len(deliveries) == limit else None,
    )


def _states(text: str | None) -> frozenset[DeliveryState]:
    names = [name.strip() for name in (text or "").split(",") if name.strip()]
    try:
        return frozenset(DeliveryState(name) for name in names)
    except ValueError:
        allowed = ", ".join(state.value for state in DeliveryState)
        raise invalid(
            [Problem(field="state", reason=f"must be among {allowed}")], "query"
        ) from None


@router.post(
    "/replays",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["deliveries"],
    responses={200: {"model": ReplayOut, "description": "The same replay was already asked"}},
)
async def create_replay(
    app_id: str, body: ReplayCreate, caller: Manager, service: ServiceDep, response: Response
) -> ReplayOut:
    """Push again every record whose call started in [``from``, ``to``), or every record
    whose latest delivery failed since ``failedSince``, as one background job.

    At most 100,000 records per replay (a larger range is refused: split it). Asking for
    the same replay while it has not finished returns it (200) instead of starting another."""
    await service.store.get_app(app_id, caller.account_id)
    kind, start, end = _replay_request(body, service)
    job, created = await service.store.create_replay(
        app_id,
        kind=kind,
        range_from=start,
        range_to=end,
        cap=MAX_REPLAY_RECORDS,
        now=service.clock.now(),
    )
    if created:
        service.replays.wake()
    else:
        response.status_code = status.HTTP_200_OK
    return await _replay_out(service, job)


def _replay_request(
    body: ReplayCreate, service: Service
) -> tuple[ReplayKind, datetime | None, datetime | None]:
    zone = service.zone
    if body.failed_since is not None:
        if body.range_from or body.range_to:
            raise invalid([Problem(field="failedSince", reason="cannot be combined with from/to")])
        return ReplayKind.FAILED, parse_time(body.failed_since, "failedSince", zone), None
    start = parse_time(body.range_from, "from", zone)
    end = parse_time(body.range_to, "to", zone)
    if start is None or end is None:
        raise invalid([Problem(field="from", reason="from and to are required (or failedSince)")])
    if end <= start:
        raise invalid([Problem(field="to", reason="must be after from")])
    return ReplayKind.RANGE, start, end


@router.get("/replays/{replay_id}", tags=["deliveries"])
async def get_replay(
    app_id: str, replay_id: str, caller: Manager, service: ServiceDep
) -> ReplayOut:
    """A replay's progress: records covered, enqueued, and its deliveries by state."""
    await service.store.get_app(app_id, caller.account_id)
    return await _replay_out(service, await service.store.get_replay(app_id, replay_id))


async def _replay_out(service: Service, job: ReplayJob) -> ReplayOut:
    return ReplayOut.of(job, await service.store.replay_progress(job.id))
