"""The delivery log of an app: deliveries newest first, filtered by state and time; a
delivery with its pushed JSON and every attempt; resend, and replay of failed deliveries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import QueryParams

from ccpush.errors import NotFound, ReplayTooLarge
from ccpush.models import WAITING, App, Delivery, DeliveryState, ReplayJob, ReplayKind, ReplayState
from ccpush.replays import MAX_REPLAY_RECORDS
from ccpush.service import Service
from ccpush.store.base import DeliveryFilter
from ccpush.web.auditing import ConsoleAudit
from ccpush.web.console import AppDep, Console, ConsoleDep, Viewer, ViewerDep
from ccpush.web.forms import local_value, parse_local, read_form
from ccpush.web.pages import redirect, url_to
from ccpush.web.search import SEARCH, searchable_session_id

router = APIRouter()

PAGE_SIZE = 50


class DeliveryNotFound(NotFound):
    """This app has no delivery with this id."""


@dataclass(frozen=True, slots=True)
class LogFilters:
    """The delivery log's filters as typed in its form, and the query they make."""

    state: str
    since: str
    until: str
    call_session_id: str
    query: DeliveryFilter
    problems: tuple[str, ...]

    @property
    def narrowed(self) -> bool:
        """Whether any filter is set (a state, a time, a record)."""
        return bool(self.state or self.since or self.until or self.call_session_id)

    def link(self, **changes: str | int | None) -> str:
        """This log's query string with ``changes``; empty values left out."""
        values: dict[str, str | int | None] = {
            "state": self.state,
            "since": self.since,
            "until": self.until,
            SEARCH: self.call_session_id,
        }
        values.update(changes)
        return urlencode({key: value for key, value in values.items() if value})


def read_filters(params: QueryParams, zone: tzinfo) -> LogFilters:
    state, since, until = (params.get(name, "").strip() for name in ("state", "since", "until"))
    call_session_id = params.get(SEARCH, "").strip()
    problems: list[str] = []
    states: frozenset[DeliveryState] = frozenset()
    if state in {member.value for member in DeliveryState}:
        states = frozenset({DeliveryState(state)})
    elif state:
        problems.append("Choose a state from the list.")
    start = _time(since, "Created from", zone, problems)
    end = _time(until, "Created before", zone, problems)
    before = params.get("before", "")
    query = DeliveryFilter(
        states=states,
        since=start,
        until=end,
        call_session_id=call_session_id or None,
        before_id=int(before) if before.isdigit() else None,
        limit=PAGE_SIZE,
    )
    return LogFilters(state, since, until, call_session_id, query, tuple(problems))


def _time(text: str, label: str, zone: tzinfo, problems: list[str]) -> datetime | None:
    try:
        return parse_local(text, zone)
    except ValueError:
        problems.append(f"{label} is not a date and time.")
        return None


@dataclass(frozen=True, slots=True)
class Progress:
    """A replay, and the states of the deliveries it has made so far."""

    job: ReplayJob
    counts: dict[DeliveryState, int]

    @property
    def waiting(self) -> int:
        return sum(self.counts[state] for state in WAITING)

    @property
    def live(self) -> bool:
        """Still moving: records left to enqueue, or deliveries not finished."""
        return self.job.state is not ReplayState.DONE or self.waiting > 0


@router.get("/apps/{app_id}/deliveries")
async def delivery_log(
    request: Request,
    console: ConsoleDep,
    viewer: ViewerDep,
    app: AppDep,
    replay: str | None = None,
) -> Response:
    """The app's deliveries, newest first, filtered by state and creation time."""
    progress = await _progress(console.service, app, replay) if replay else None
    return await _log_page(request, console, viewer, app, progress=progress)


async def _log_page(
    request: Request,
    console: Console,
    viewer: Viewer,
    app: App,
    *,
    progress: Progress | None = None,
    replay_since: str | None = None,
    replay_error: str | None = None,
) -> Response:
    service = console.service
    filters = read_filters(request.query_params, service.zone)
    store = service.store
    searchable = searchable_session_id(filters.call_session_id)
    found = not filters.problems and (searchable or not filters.call_session_id)
    deliveries = await store.list_deliveries(app.id, filters.query) if found else []
    now = service.clock.now()
    return console.page(
        request,
        viewer,
        "deliveries.html",
        status=422 if replay_error else 200,
        app=app,
        tab="deliveries",
        filters=filters,
        deliveries=deliveries,
        more=len(deliveries) == PAGE_SIZE,
        counts=await store.count_by_state(app.id),
        progress=progress,
        replay_since=replay_since or local_value(now - timedelta(days=1), service.zone),
        replay_error=replay_error,
        time_example=local_value(now, service.zone),
    )


async def find_delivery(service: Service, app: App, delivery_id: int) -> Delivery:
    query = DeliveryFilter(before_id=delivery_id + 1, limit=1)
    found = await service.store.list_deliveries(app.id, query)
    if not found or found[0].id != delivery_id:
        raise DeliveryNotFound()
    return found[0]


@router.get("/apps/{app_id}/deliveries/{delivery_id}")
async def show_delivery(
    request: Request, console: ConsoleDep, viewer: ViewerDep, app: AppDep, delivery_id: int
) -> Response:
    """A delivery: its state, every attempt, and the JSON pushed."""
    service = console.service
    delivery = await find_delivery(service, app, delivery_id)
    versions = await service.store.records_by_sequence(
        app.id, delivery.sequence, delivery.sequence, 1
    )
    return console.page(
        request,
        viewer,
        "delivery.html",
        app=app,
        tab="deliveries",
        delivery=delivery,
        record=versions[0] if versions else None,
        history=await service.store.deliveries_of(app.id, delivery.call_session_id),
        max_attempts=service.settings.retry_schedule.max_attempts,
    )


@router.get("/apps/{app_id}/deliveries/{delivery_id}/status")
async def delivery_status(
    request: Request, console: ConsoleDep, viewer: ViewerDep, app: AppDep, delivery_id: int
) -> Response:
    """The state and attempts of a delivery (polled by its page while it is not finished)."""
    service = console.service
    delivery = await find_delivery(service, app, delivery_id)
    max_attempts = service.settings.retry_schedule.max_attempts
    return console.page(
        request,
        viewer,
        "_delivery_status.html",
        app=app,
        delivery=delivery,
        max_attempts=max_attempts,
    )


@router.post("/apps/{app_id}/deliveries/{delivery_id}/resend")
async def resend(
    request: Request, console: ConsoleDep, app: AppDep, delivery_id: int, audit: ConsoleAudit
) -> Response:
    """Push the record again now, as a new delivery; show that delivery."""
    service = console.service
    delivery = await find_delivery(service, app, delivery_id)
    now = service.clock.now()
    again = await service.store.resend(app.id, delivery.call_session_id, now=now, audit=audit)
    service.dispatcher.wake()
    url = url_to(request, "show_delivery", app_id=app.id, delivery_id=again.id)
    return redirect(request, url + "?notice=resent")


@router.post("/apps/{app_id}/replays")
async def replay_failed(
    request: Request, console: ConsoleDep, viewer: ViewerDep, app: AppDep, audit: ConsoleAudit
) -> Response:
    """Push again every record whose latest delivery failed since a time (a replay job)."""
    service = console.service
    text = (await read_form(request)).get("since", "")
    try:
        since = parse_local(text, service.zone)
    except ValueError:
        since = None
    if since is None:
        error = "Enter the date and time from which to replay failed deliveries."
        return await _log_page(request, console, viewer, app, replay_since=text, replay_error=error)
    try:
        job, created = await service.store.create_replay(
            app.id,
            kind=ReplayKind.FAILED,
            range_from=since,
            range_to=None,
            cap=MAX_REPLAY_RECORDS,
            now=service.clock.now(),
            audit=audit,
        )
    except ReplayTooLarge:
        error = f"More than {MAX_REPLAY_RECORDS:,} records failed since then: pick a later time."
        return await _log_page(request, console, viewer, app, replay_since=text, replay_error=error)
    if created:
        service.replays.wake()
    url = url_to(request, "delivery_log", app_id=app.id)
    return redirect(request, f"{url}?{urlencode({'replay': job.id})}")


async def _progress(service: Service, app: App, replay_id: str) -> Progress:
    job = await service.store.get_replay(app.id, replay_id)
    return Progress(job, await service.store.replay_progress(job.id))


@router.get("/apps/{app_id}/replays/{replay_id}")
async def replay_progress(
    request: Request, console: ConsoleDep, viewer: ViewerDep, app: AppDep, replay_id: str
) -> Response:
    """A replay's progress (polled while it moves)."""
    progress = await _progress(console.service, app, replay_id)
    return console.page(request, viewer, "_replay.html", app=app, progress=progress)
