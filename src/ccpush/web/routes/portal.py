"""Opening a portal link: the browser is signed into the console, scoped to the link's
account (or app), with no other credential; a link works once, until it expires. And the
accent colour's stylesheet (white label)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ccpush.api.auth import client_address
from ccpush.api.routes.portal_links import PORTAL_PATH, link_hash, plausible_link
from ccpush.audit import AuditEntry
from ccpush.web.console import ConsoleDep
from ccpush.web.pages import redirect, url_to
from ccpush.web.session import portal_session

router = APIRouter()

REFUSED = (
    "This link has already been used or has expired: a portal link signs in once. Ask for a"
    " new one where you found it."
)


@router.get(PORTAL_PATH)
async def open_portal(request: Request, console: ConsoleDep, token: str = "") -> Response:
    """Use the link (the store marks it used as it reads it: of two opens, one wins), sign
    in as it says, and show its app, or its account's apps; 410 and no session else."""
    service, now = console.service, console.service.clock.now()
    link = None
    if plausible_link(token):
        opener = AuditEntry(at=now, actor="portal", source=client_address(request))
        link = await service.store.use_portal_link(link_hash(token), now=now, audit=opener)
    if link is None:
        response: Response = console.page(
            request, None, "error.html", status=410, portal=True, title="Link expired",
            message=REFUSED,
        )  # fmt: skip
        console.sessions.clear(response, request)
        return response
    if link.app_id is not None:
        target = url_to(request, "show_app", app_id=link.app_id)
    else:
        target = url_to(request, "list_apps")
    response = redirect(request, target)
    response.headers["Cache-Control"] = "no-store"
    console.sessions.write(response, request, portal_session(link))
    return response


@router.get("/theme.css")
async def theme(console: ConsoleDep) -> Response:
    """The accent colour (``CCPUSH_CONSOLE_ACCENT``) over the stylesheet's."""
    return Response(
        console.branding.stylesheet(),
        media_type="text/css",
        headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
    )
