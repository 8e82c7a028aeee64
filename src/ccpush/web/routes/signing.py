"""An app's signing secret in its settings: shown on request, and rotated (the previous
secret keeps signing for ``CCPUSH_ROTATION_OVERLAP``, as in the API)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ccpush.signing import generate_secret
from ccpush.web.auditing import ConsoleAudit
from ccpush.web.console import AppDep, ConsoleDep, ViewerDep
from ccpush.web.pages import redirect, url_to
from ccpush.web.routes.apps import app_page, signing_panel

router = APIRouter()


@router.get("/apps/{app_id}/signing-secret")
async def signing_secret(
    request: Request, console: ConsoleDep, viewer: ViewerDep, app: AppDep, shown: bool = True
) -> Response:
    """The secret shown, or hidden again: in place with htmx, else on the settings page."""
    if request.headers.get("hx-request") != "true":
        return await app_page(request, console, viewer, app, secret_shown=shown)
    signing = await signing_panel(console, app, shown=shown)
    return console.page(request, viewer, "_signing_secret.html", app=app, signing=signing)


@router.post("/apps/{app_id}/signing-secret/rotate")
async def rotate_signing_secret(
    request: Request, console: ConsoleDep, app: AppDep, audit: ConsoleAudit
) -> Response:
    """Make a new secret; the previous one keeps signing until the overlap ends."""
    service = console.service
    await service.store.rotate_signing_secret(
        app.id,
        secret=generate_secret(),
        now=service.clock.now(),
        overlap=service.settings.rotation_overlap,
        audit=audit,
    )
    await service.notifier.secret_rotated(app.id)
    url = url_to(request, "show_app", app_id=app.id)
    return redirect(request, f"{url}?notice=rotated&secret=shown#signing-heading")
