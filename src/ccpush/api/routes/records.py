"""Call records: ingestion, the reconciliation query, deliveries, resend and replay."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from ccpush.api.auditing import Audit
from ccpush.api.auth import Manager, authenticate
from ccpush.api.deps import ApiState, ServiceDep
from ccpush.api.errors import BODY, QUERY, ApiError, invalid
from ccpush.api.idempotency import idempotent_post
from ccpush.api.ingest import parse_records
from ccpush.api.params import (
    INT64_MAX,
    PAGE_SIZE,
    Cursor,
    Limit,
    PathId,
    check_path_id,
    encode_cursor,
    id_cursor,
    parse_time,
    sequence_cursor,
    time_cursor,
)
from ccpush.api.schemas import (
    DeliveryOut,
    DeliveryPage,
    ErrorOut,
    IngestOut,
    ObjectId,
    RecordPage,
    ReplayCreate,
    ReplayOut,
    TimeText,
)
from ccpush.models import DeliveryState, ReplayJob, ReplayKind, StoredRecord
from ccpush.record import Problem
from ccpush.replays import MAX_REPLAY_RECORDS
from ccpush.service import Service
from ccpush.store.base import DeliveryFilter, RecordFilter

router = APIRouter(prefix="/v1/apps/{app_id}")

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
        207: {
            "model": IngestOut,
            "description": "Some records refused (each with its problems), the others stored",
        },
        400: {"model": ErrorOut, "description": "The body is not strict JSON"},
        413: {"model": ErrorOut, "description": "Body or batch too large"},
        422: {"model": ErrorOut, "description": "Every record refused: nothing stored"},
    },
)
async def ingest_records(app_id: str, request: Request) -> Response:
    """Store one call record or an array of them for pushing. Each record is checked on
    its own: an invalid one is refused without holding back the others. Answers once the
    stored records are durable (requests that arrive together are committed together).

    * **202**: every record taken. ``results`` holds each one's outcome, in the request's
      order: ``accepted`` (new), ``updated`` (the app had this ``callSessionId`` with other
      content: its next version, pushed again) or ``duplicate`` (the same content again:
      neither stored nor pushed).
    * **207**: some records refused, the others taken as above. A refused record's result
      has ``status: refused`` and its ``problems``, each a field path with the record's
      position (``[3].callType``) and a reason. Nothing of a refused record is stored and
      it takes no sequence number: correct it and send it again.
    * **422**: nothing stored: the record (a body that is one object) or every record of
      the array is refused; ``error.problems`` lists every problem.
    * **400** ``invalid_json``: the body is not strict JSON (not UTF-8, a key twice in an
      object, ``NaN``, an integer beyond 64 bits, nesting deeper than 32 levels).

    Records of one array that share a ``callSessionId`` are taken in order, as if sent one
    after the other: a later one with other content is the next version (``updated``),
    with the same content a ``duplicate``."""
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
    check_path_id(app_id, "app_id")
    state: ApiState = request.app.state.ccpush
    service = state.service
    body = await request.body()  # its size is capped by the BodyLimit middleware
    limit = service.settings.max_batch_records
    parsed = parse_records(body, zone=service.zone, max_records=limit)
    if parsed.refusals:
        service.metrics.count_refused(len(parsed.refusals))
    if not parsed.records:  # the one record, or every record of the array, is refused
        raise invalid(parsed.problems)
    results = await state.group_commit.ingest(
        app_id, parsed.records, now=service.clock.now(), account_id=caller.account_id
    )
    service.dispatcher.wake()
    service.metrics.count_ingested(results)
    answer = parsed.answer(results)
    # Serialized here, once: FastAPI would validate the answer again and encode it in Python.
    return Response(
        answer.model_dump_json(by_alias=True),
        status_code=status.HTTP_207_MULTI_STATUS if answer.refused else status.HTTP_202_ACCEPTED,
        media_type="application/json",
    )


@router.get(
    "/call-records",
    tags=["call records"],
    response_model=RecordPage,
    responses={200: {"model": RecordPage}},
)
async def list_records(
    app_id: PathId,
    caller: Manager,
    service: ServiceDep,
    since: Annotated[TimeText | None, Query(alias="from", description="Call start ≥ this")] = None,
    until: Annotated[TimeText | None, Query(alias="to", description="Call start < this")] = None,
    first: Annotated[
        int | None,
        Query(alias="fromSequence", ge=1, le=INT64_MAX, description="Sequence numbers from this"),
    ] = None,
    last: Annotated[
        int | None,
        Query(alias="toSequence", ge=1, le=INT64_MAX, description="up to this one, included"),
    ] = None,
    limit: Limit = PAGE_SIZE,
    cursor: Cursor = None,
) -> Response:
    """Records exactly as pushed, by call start time or by sequence number: what a receiver
    missed can be fetched here. Each version of a record is one item.

    Times are ISO 8601 with an offset, or ``yyyy-MM-dd HH:mm:ss`` in the record time zone.
    Sequence numbers (the ``ccpush-sequence`` header of each push) have no holes, so a
    receiver that saw 41 then 44 asks for ``fromSequence=42&toSequence=43``."""
    if first is not None or last is not None:
        if since is not None or until is not None:
            raise invalid([_problem("fromSequence", "cannot be combined with from/to")], QUERY)
        if first is not None and last is not None and last < first:
            raise invalid([_problem("toSequence", "must not be less than fromSequence")], QUERY)
        start = max(first or 1, (sequence_cursor(cursor) or 0) + 1)
        await service.store.get_app(app_id, caller.account_id)
        records, next_cursor = await _by_sequence(service, app_id, start, last, limit)
    else:
        query = RecordFilter(
            since=parse_time(since, "from", service.zone),
            until=parse_time(until, "to", service.zone),
            after=time_cursor(cursor),
            limit=limit,
        )
        await service.store.get_app(app_id, caller.account_id)
        records, next_cursor = await _by_time(service, app_id, query)
    return Response(_record_page(records, next_cursor), media_type="application/json")


async def _by_time(
    service: Service, app_id: str, query: RecordFilter
) -> tuple[list[StoredRecord], str | None]:
    records = await service.store.list_records(app_id, query)
    if len(records) < query.limit:
        return records, None
    return records, encode_cursor([records[-1].call_start.timestamp(), records[-1].id])


async def _by_sequence(
    service: Service, app_id: str, start: int, last: int | None, limit: int
) -> tuple[list[StoredRecord], str | None]:
    records = await service.store.records_by_sequence(app_id, start, last or INT64_MAX, limit)
    more = len(records) == limit and records[-1].sequence not in (last, INT64_MAX)
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


@router.get("/call-records/{call_session_id}/deliveries", tags=["deliveries"])
async def record_deliveries(
    app_id: PathId,
    call_session_id: PathId,
    caller: Manager,
    service: ServiceDep,
    limit: Limit = PAGE_SIZE,
    cursor: Cursor = None,
) -> DeliveryPage:
    """The deliveries of a record, newest first: state, and every attempt with its outcome."""
    query = DeliveryFilter(
        call_session_id=call_session_id, before_id=id_cursor(cursor), limit=limit
    )
    page = await _delivery_page(service, app_id, caller.account_id, query)
    if not page.items and cursor is None:
        raise ApiError(404, "not_found", "This app has no record with this callSessionId.")
    return page


@idempotent_post(
    router,
    "/call-records/{call_session_id}/resend",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["deliveries"],
)
async def resend(
    app_id: PathId, call_session_id: PathId, caller: Manager, service: ServiceDep, audit: Audit
) -> DeliveryOut:
    """Push a record again now: a new delivery with its own attempts, the record unchanged."""
    await service.store.get_app(app_id, caller.account_id)
    now = service.clock.now()
    delivery = await service.store.resend(app_id, call_session_id, now=now, audit=audit)
    service.dispatcher.wake()
    return DeliveryOut.of(delivery)


@router.get("/deliveries", tags=["deliveries"])
async def list_deliveries(
    app_id: PathId,
    caller: Manager,
    service: ServiceDep,
    state: Annotated[
        str | None,
        Query(
            max_length=200,
            description="Comma-separated: held, pending, sending, delivered, failed",
        ),
    ] = None,
    since: Annotated[TimeText | None, Query(description="Created at or after")] = None,
    until: Annotated[TimeText | None, Query(description="Created before")] = None,
    call_session_id: Annotated[ObjectId | None, Query(alias="callSessionId")] = None,
    limit: Limit = PAGE_SIZE,
    cursor: Cursor = None,
) -> DeliveryPage:
    """The app's delivery log, newest first, each delivery with its attempts."""
    query = DeliveryFilter(
        states=_states(state),
        since=parse_time(since, "since", service.zone),
        until=parse_time(until, "until", service.zone),
        call_session_id=call_session_id,
        before_id=id_cursor(cursor),
        limit=limit,
    )
    return await _delivery_page(service, app_id, caller.account_id, query)


async def _delivery_page(
    service: Service, app_id: str, account_id: str | None, query: DeliveryFilter
) -> DeliveryPage:
    await service.store.get_app(app_id, account_id)
    deliveries = await service.store.list_deliveries(app_id, query)
    last = deliveries[-1].id if len(deliveries) == query.limit else None
    return DeliveryPage(
        items=[DeliveryOut.of(delivery) for delivery in deliveries],
        next_cursor=None if last is None else encode_cursor(last),
    )


def _states(text: str | None) -> frozenset[DeliveryState]:
    names = [name.strip() for name in (text or "").split(",") if name.strip()]
    try:
        return frozenset(DeliveryState(name) for name in names)
    except ValueError:
        allowed = ", ".join(state.value for state in DeliveryState)
        raise invalid([Problem(field="state", reason=f"must be among {allowed}")], QUERY) from None


@idempotent_post(
    router,
    "/replays",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["deliveries"],
    responses={200: {"model": ReplayOut, "description": "The same replay was asked already"}},
)
async def create_replay(
    app_id: PathId,
    body: ReplayCreate,
    caller: Manager,
    service: ServiceDep,
    response: Response,
    audit: Audit,
) -> ReplayOut:
    """Push again every record whose call started in [``from``, ``to``), or every record
    whose latest delivery failed since ``failedSince``, as one background job.

    Times are ISO 8601 with an offset, or ``yyyy-MM-dd HH:mm:ss`` in the record time zone,
    between 1970 and 2100. At most 100,000 records per replay (a larger range is refused:
    split it). Asking for the same replay (same ``from`` and ``to``, or ``failedSince``)
    returns the app's latest one (200) instead of starting another while it enqueues,
    while any delivery it made is not finished (held, pending, sending), and in any case
    for a minute after it was asked."""
    kind, start, end = _replay_request(body, service)
    await service.store.get_app(app_id, caller.account_id)
    job, created = await service.store.create_replay(
        app_id,
        kind=kind,
        range_from=start,
        range_to=end,
        cap=MAX_REPLAY_RECORDS,
        now=service.clock.now(),
        audit=audit,
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
        return ReplayKind.FAILED, parse_time(body.failed_since, "failedSince", zone, BODY), None
    start = parse_time(body.range_from, "from", zone, BODY)
    end = parse_time(body.range_to, "to", zone, BODY)
    if start is None or end is None:
        raise invalid([Problem(field="from", reason="from and to are required (or failedSince)")])
    if end <= start:
        raise invalid([Problem(field="to", reason="must be after from")])
    return ReplayKind.RANGE, start, end


@router.get("/replays/{replay_id}", tags=["deliveries"])
async def get_replay(
    app_id: PathId, replay_id: PathId, caller: Manager, service: ServiceDep
) -> ReplayOut:
    """A replay's progress: records covered, enqueued, and its deliveries by state."""
    await service.store.get_app(app_id, caller.account_id)
    return await _replay_out(service, await service.store.get_replay(app_id, replay_id))


async def _replay_out(service: Service, job: ReplayJob) -> ReplayOut:
    return ReplayOut.of(job, await service.store.replay_progress(job.id))
