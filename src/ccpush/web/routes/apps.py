"""Account Management → Voice Application Management: the account's apps, each with its
cc-http push address (set, change, clear), pausing, and a test push."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ccpush.actions import PushTrial, pause_app, resume_app, send_test_push, target_problem
from ccpush.api.schemas import check_push_url
from ccpush.models import WAITING, App, AttemptBucket
from ccpush.service import Service
from ccpush.web.console import AppDep, Console, ConsoleDep, Viewer, ViewerDep
from ccpush.web.forms import read_form
from ccpush.web.pages import redirect, url_to

router = APIRouter()

MAX_URL_LENGTH = 2048
MAX_NAME_LENGTH = 200


@dataclass(frozen=True, slots=True)
class AppRow:
    """An app as the list shows it: its backlog and its last 24 hours."""

    app: App
    backlog: int
    day: AttemptBucket | None


@router.get("/apps")
async def list_apps(request: Request, console: ConsoleDep, viewer: ViewerDep) -> Response:
    """The account's voice applications, with their address, state and recent pushes."""
    return await _apps_page(request, console, viewer, name="", push_url="", errors={})


async def _apps_page(
    request: Request,
    console: Console,
    viewer: Viewer,
    *,
    name: str,
    push_url: str,
    errors: dict[str, str],
) -> Response:
    service = console.service
    apps = sorted(await service.store.list_apps(viewer.account.id), key=lambda app: app.name)
    rows = [await _row(service, app) for app in apps]
    form = {"name": name, "push_url": push_url}
    status = 422 if errors else 200
    return console.page(
        request, viewer, "apps.html", status=status, rows=rows, form=form, errors=errors
    )


async def _row(service: Service, app: App) -> AppRow:
    counts = await service.store.count_by_state(app.id)
    since = service.clock.now() - timedelta(days=1)
    day = await service.store.attempt_stats(app.id, since=since, bucket=timedelta(days=2))
    return AppRow(app, sum(counts[state] for state in WAITING), day[0] if day else None)


@router.post("/apps")
async def create_app(request: Request, console: ConsoleDep, viewer: ViewerDep) -> Response:
    """Add a voice application to the account on screen, with or without an address."""
    form = await read_form(request)
    name, push_url = form.get("name", "").strip(), form.get("push_url", "").strip()
    errors = {}
    if not name or len(name) > MAX_NAME_LENGTH:
        errors["name"] = f"Enter a name of 1 to {MAX_NAME_LENGTH} characters."
    if push_url and (problem := await address_problem(console.service, push_url)):
        errors["push_url"] = problem
    if errors:
        return await _apps_page(
            request, console, viewer, name=name, push_url=push_url, errors=errors
        )
    service = console.service
    app = await service.store.create_app(
        name=name, push_url=push_url or None, now=service.clock.now(), account_id=viewer.account.id
    )
    return redirect(request, url_to(request, "show_app", app_id=app.id) + "?notice=created")


async def address_problem(service: Service, push_url: str) -> str | None:
    """What is wrong with a push address, said for the form; None if it will do."""
    if len(push_url) > MAX_URL_LENGTH:
        return f"The address is longer than {MAX_URL_LENGTH} characters."
    try:
        check_push_url(push_url)
    except ValueError as exc:
        return f"The address {exc}."
    problem = await target_problem(service, push_url)
    return None if problem is None else f"This address {problem}."


@router.get("/apps/{app_id}")
async def show_app(
    request: Request, console: ConsoleDep, viewer: ViewerDep, app: AppDep
) -> Response:
    """One app's settings: its push address, pausing, and the test push."""
    return _app_page(request, console, viewer, app)


def _app_page(
    request: Request,
    console: Console,
    viewer: Viewer,
    app: App,
    *,
    push_url: str | None = None,
    error: str | None = None,
    trial: PushTrial | None = None,
) -> Response:
    return console.page(
        request,
        viewer,
        "app.html",
        status=422 if error else 200,
        app=app,
        tab="settings",
        push_url=app.push_url or "" if push_url is None else push_url,
        error=error,
        trial=trial,
        schedule=console.service.settings.schedule,
    )


@router.post("/apps/{app_id}/address")
async def set_address(
    request: Request, console: ConsoleDep, viewer: ViewerDep, app: AppDep
) -> Response:
    """Set or change the push address; records waiting are pushed to it."""
    push_url = (await read_form(request)).get("push_url", "").strip()
    error = "Enter an address, or use Clear address to remove it." if not push_url else None
    error = error or await address_problem(console.service, push_url)
    if error:
        return _app_page(request, console, viewer, app, push_url=push_url, error=error)
    service = console.service
    await service.store.update_app(app.id, now=service.clock.now(), push_url=push_url)
    return _changed(request, console, app, "address-saved")


@router.post("/apps/{app_id}/address/clear")
async def clear_address(request: Request, console: ConsoleDep, app: AppDep) -> Response:
    """Clear the address: records are kept (held) until one is set."""
    service = console.service
    await service.store.update_app(app.id, now=service.clock.now(), push_url=None)
    return _changed(request, console, app, "address-cleared")


@router.post("/apps/{app_id}/pause")
async def pause(request: Request, console: ConsoleDep, app: AppDep) -> Response:
    service = console.service
    await pause_app(service, app.id, None)
    return _changed(request, console, app, "paused")


@router.post("/apps/{app_id}/resume")
async def resume(request: Request, console: ConsoleDep, app: AppDep) -> Response:
    service = console.service
    await resume_app(service, app.id, None)
    return _changed(request, console, app, "resumed")


def _changed(request: Request, console: Console, app: App, notice: str) -> Response:
    """After a change: wake the dispatcher (records may be due now), and show the app."""
    console.service.dispatcher.wake()
    return redirect(request, url_to(request, "show_app", app_id=app.id) + f"?notice={notice}")


@router.post("/apps/{app_id}/test-push")
async def send_test(
    request: Request, console: ConsoleDep, viewer: ViewerDep, app: AppDep
) -> Response:
    """Push a sample record to the address now; show the outcome (in place, with htmx)."""
    trial = await send_test_push(console.service, app, app.push_url) if app.push_url else None
    if request.headers.get("hx-request") == "true":
        return console.page(request, viewer, "_test_result.html", app=app, trial=trial)
    return _app_page(request, console, viewer, app, trial=trial)
