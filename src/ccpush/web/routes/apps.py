"""Account Management → Voice Application Management: the account's apps with what came of
their records in the last 24 hours, the search for a record by callSessionId, and each
app's settings: its cc-http push address (set, change, clear), its own push headers,
credentials and client certificate (written, never shown), pausing, a test push and its
signing secret."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ccpush.actions import PushTrial, pause_app, resume_app, send_test_push, target_problem
from ccpush.api.schemas import MAX_NAME_LENGTH, MAX_URL_LENGTH, check_printable, check_push_url
from ccpush.app_pace import read_pace
from ccpush.endpoint import BasicAuth, BearerAuth, ClientCertificate, PushAuth, problems
from ccpush.models import App, SigningKeys
from ccpush.service import Service
from ccpush.store.base import AppActivity
from ccpush.web.activity import sum_activity
from ccpush.web.auditing import ConsoleAudit
from ccpush.web.console import (
    AppDep,
    Console,
    ConsoleDep,
    Viewer,
    ViewerDep,
    require_whole_account,
)
from ccpush.web.forms import read_form
from ccpush.web.pages import redirect, url_to
from ccpush.web.search import SEARCH, apps_with_record

router = APIRouter()

WholeAccountDep = Annotated[Viewer, Depends(require_whole_account)]

DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class AppRow:
    """An app as the list shows it: what came of its pushes in the last 24 hours, and what
    waits now."""

    app: App
    activity: AppActivity


@router.get("/apps")
async def list_apps(request: Request, console: ConsoleDep, viewer: ViewerDep) -> Response:
    """The account's voice applications, with their address, state and recent pushes; with
    ``?callSessionId=``, the record's deliveries in the app that has it."""
    sought = request.query_params.get(SEARCH, "").strip()
    if viewer.app_id is not None:  # a portal session of one app: that app is the list
        return redirect(request, url_to(request, "show_app", app_id=viewer.app_id))
    if not sought:
        return await _apps_page(request, console, viewer)
    apps = await console.service.store.list_apps(viewer.account.id)
    hits = await apps_with_record(console.service.store, apps, sought)
    if len(hits) == 1:
        url = url_to(request, "delivery_log", app_id=hits[0].id)
        return redirect(request, f"{url}?{urlencode({SEARCH: sought})}")
    return await _apps_page(request, console, viewer, sought=sought, hits=hits)


async def _apps_page(
    request: Request,
    console: Console,
    viewer: Viewer,
    *,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    sought: str = "",
    hits: Sequence[App] = (),
) -> Response:
    service = console.service
    apps = sorted(await service.store.list_apps(viewer.account.id), key=lambda app: app.name)
    since = service.clock.now() - DAY
    activity = await service.store.app_activity(since=since, account_id=viewer.account.id)
    rows = [AppRow(app, activity.get(app.id, AppActivity(app_id=app.id))) for app in apps]
    return console.page(
        request,
        viewer,
        "apps.html",
        status=422 if errors else 200,
        rows=rows,
        account=sum_activity(row.activity for row in rows),
        form=form or {"name": "", "push_url": ""},
        errors=errors or {},
        sought=sought,
        hits=hits,
    )


@router.post("/apps")
async def create_app(
    request: Request, console: ConsoleDep, viewer: WholeAccountDep, audit: ConsoleAudit
) -> Response:
    """Add a voice application to the account on screen, with or without an address."""
    form = await read_form(request)
    name, push_url = form.get("name", "").strip(), form.get("push_url", "").strip()
    errors = {}
    if problem := name_problem(name):
        errors["name"] = problem
    if push_url and (problem := await address_problem(console.service, push_url)):
        errors["push_url"] = problem
    if errors:
        form = {"name": name, "push_url": push_url}
        return await _apps_page(request, console, viewer, form=form, errors=errors)
    service = console.service
    app = await service.store.create_app(
        name=name,
        push_url=push_url or None,
        now=service.clock.now(),
        account_id=viewer.account.id,
        audit=audit,
    )
    return redirect(request, url_to(request, "show_app", app_id=app.id) + "?notice=created")


def name_problem(name: str) -> str | None:
    """What is wrong with a name (an app's, an account's, a key's), said for the form; None
    if it will do."""
    if not name or len(name) > MAX_NAME_LENGTH:
        return f"Enter a name of 1 to {MAX_NAME_LENGTH} characters."
    try:
        check_printable(name)
    except ValueError as exc:
        return f"The name {exc}."
    return None


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
    """One app's settings: its push address, pausing, the test push and the signing secret
    (shown with ``?secret=shown``)."""
    shown = request.query_params.get("secret") == "shown"
    return await app_page(request, console, viewer, app, secret_shown=shown)


@dataclass(frozen=True, slots=True)
class SigningPanel:
    """The app's signing secrets as its settings show them: hidden unless asked for."""

    app: App
    keys: SigningKeys
    shown: bool
    now: datetime
    overlap: timedelta
    """How long a rotated-out secret keeps signing (``CCPUSH_ROTATION_OVERLAP``)."""

    @property
    def previous_until(self) -> datetime | None:
        """Until when the previous secret still signs, if it does now."""
        until = self.keys.previous_until
        return until if self.keys.previous and until and until > self.now else None


async def signing_panel(console: Console, app: App, *, shown: bool) -> SigningPanel:
    service = console.service
    keys = await service.store.signing_keys(app.id)
    overlap = service.settings.rotation_overlap
    return SigningPanel(app, keys, shown, service.clock.now(), overlap)


async def app_page(
    request: Request,
    console: Console,
    viewer: Viewer,
    app: App,
    *,
    push_url: str | None = None,
    error: str | None = None,
    trial: PushTrial | None = None,
    secret_shown: bool = False,
    push_error: str | None = None,
    pace_error: str | None = None,
) -> Response:
    return console.page(
        request,
        viewer,
        "app.html",
        status=422 if error or push_error or pace_error else 200,
        pace_error=pace_error,
        push_settings=console.service.store.endpoint_of(app).described(),
        push_error=push_error,
        app=app,
        tab="settings",
        push_url=app.push_url or "" if push_url is None else push_url,
        error=error,
        trial=trial,
        schedule=console.service.settings.retry_schedule,
        signing=await signing_panel(console, app, shown=secret_shown),
    )


@router.post("/apps/{app_id}/address")
async def set_address(
    request: Request, console: ConsoleDep, viewer: ViewerDep, app: AppDep, audit: ConsoleAudit
) -> Response:
    """Set or change the push address; records waiting are pushed to it."""
    push_url = (await read_form(request)).get("push_url", "").strip()
    error = "Enter an address, or use Clear address to remove it." if not push_url else None
    error = error or await address_problem(console.service, push_url)
    if error:
        return await app_page(request, console, viewer, app, push_url=push_url, error=error)
    service = console.service
    await service.store.update_app(app.id, now=service.clock.now(), push_url=push_url, audit=audit)
    return _changed(request, console, app, "address-saved")


@router.post("/apps/{app_id}/address/clear")
async def clear_address(
    request: Request, console: ConsoleDep, app: AppDep, audit: ConsoleAudit
) -> Response:
    """Clear the address: records are kept (held) until one is set."""
    service = console.service
    await service.store.update_app(app.id, now=service.clock.now(), push_url=None, audit=audit)
    return _changed(request, console, app, "address-cleared")


@router.post("/apps/{app_id}/pause")
async def pause(
    request: Request, console: ConsoleDep, app: AppDep, audit: ConsoleAudit
) -> Response:
    service = console.service
    await pause_app(service, app.id, None, audit)
    return _changed(request, console, app, "paused")


@router.post("/apps/{app_id}/resume")
async def resume(
    request: Request, console: ConsoleDep, app: AppDep, audit: ConsoleAudit
) -> Response:
    service = console.service
    await resume_app(service, app.id, None, audit)
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
    return await app_page(request, console, viewer, app, trial=trial)


@router.post("/apps/{app_id}/pace")
async def set_pace(
    request: Request, console: ConsoleDep, viewer: ViewerDep, app: AppDep, audit: ConsoleAudit
) -> Response:
    """Set the pace the receiver can take: pushes per second and at once (empty: no limit)."""
    form = await read_form(request)
    pace, error = read_pace(form.get("rate_limit", ""), form.get("max_in_flight", ""))
    if error:
        return await app_page(request, console, viewer, app, pace_error=error)
    service = console.service
    await service.store.update_app(
        app.id,
        now=service.clock.now(),
        rate_limit=pace.rate_limit,
        max_in_flight=pace.max_in_flight,
        audit=audit,
    )
    return _changed(request, console, app, "pace-saved")


# The app's push headers, credentials and client certificate: written here, never shown.


@router.post("/apps/{app_id}/push-headers")
async def set_push_headers(
    request: Request, console: ConsoleDep, viewer: ViewerDep, app: AppDep, audit: ConsoleAudit
) -> Response:
    """Replace the app's own push headers with the form's ``Name: value`` lines."""
    lines = (await read_form(request)).get("headers", "").splitlines()
    pairs = [line.partition(":") for line in lines if line.strip()]
    if any(not colon for _, colon, _ in pairs):
        error = "Write each header on a line of its own, as Name: value."
        return await app_page(request, console, viewer, app, push_error=error)
    headers = tuple((name.strip(), value.strip()) for name, _, value in pairs)
    return await _save_push(request, console, viewer, app, audit, headers=headers)


@router.post("/apps/{app_id}/push-auth")
async def set_push_auth(
    request: Request, console: ConsoleDep, viewer: ViewerDep, app: AppDep, audit: ConsoleAudit
) -> Response:
    """Set the credentials every push carries (HTTP Basic or a bearer token), or none."""
    form = await read_form(request)
    kind = form.get("type", "none")
    auth: PushAuth | None = None
    if kind == "basic":
        auth = BasicAuth(username=form.get("username", ""), password=form.get("password", ""))
    elif kind == "bearer":
        auth = BearerAuth(token=form.get("token", ""))
    return await _save_push(request, console, viewer, app, audit, auth=auth)


@router.post("/apps/{app_id}/client-certificate")
async def set_client_certificate(
    request: Request, console: ConsoleDep, viewer: ViewerDep, app: AppDep, audit: ConsoleAudit
) -> Response:
    """Set the client certificate pushes present (mutual TLS); both fields empty clear it."""
    form = await read_form(request)
    cert, key = form.get("cert_pem", "").strip(), form.get("key_pem", "").strip()
    pair = ClientCertificate(cert + "\n", key + "\n") if cert or key else None
    return await _save_push(request, console, viewer, app, audit, client_certificate=pair)


async def _save_push(
    request: Request,
    console: Console,
    viewer: Viewer,
    app: App,
    audit: ConsoleAudit,
    **changes: Any,
) -> Response:
    service = console.service
    endpoint = replace(service.store.endpoint_of(app), **changes)
    found = problems(endpoint)
    if found:
        error = "; ".join(f"{problem.field} {problem.reason}" for problem in found)
        return await app_page(request, console, viewer, app, push_error=error)
    await service.store.update_app(app.id, now=service.clock.now(), endpoint=endpoint, audit=audit)
    return _changed(request, console, app, "push-settings-saved")
