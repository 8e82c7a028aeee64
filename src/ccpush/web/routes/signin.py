"""Signing in with an account's API key (or the admin token), signing out, switching account."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ccpush.api.auditing import entry_for
from ccpush.api.auth import Caller, Refused, check_token, client_address, record_failed_sign_in
from ccpush.audit import AuditAction
from ccpush.errors import NotFound
from ccpush.store.base import DEFAULT_ACCOUNT
from ccpush.web.console import (
    Console,
    ConsoleDep,
    SignInRequired,
    TooManyRequests,
    Viewer,
    current_viewer,
    require_admin,
)
from ccpush.web.forms import read_form
from ccpush.web.pages import redirect, url_to
from ccpush.web.session import Session, anonymous, fingerprint, signed_in_as

router = APIRouter()


@router.get("/")
async def home(request: Request) -> Response:
    return redirect(request, url_to(request, "list_apps"))


@router.get("/sign-in")
async def sign_in_page(request: Request, console: ConsoleDep) -> Response:
    """The sign-in form, with a session that holds only its CSRF token; the applications
    for someone already signed in."""
    try:
        await current_viewer(request, console)
    except (SignInRequired, TooManyRequests, NotFound):
        return await _form(request, console, error=None, status=200)
    return redirect(request, url_to(request, "list_apps"))


@router.post("/sign-in")
async def sign_in(request: Request, console: ConsoleDep) -> Response:
    """Check the key like the API does, counting failures against the same limits."""
    token = (await read_form(request)).get("key", "").strip()
    if not token:
        return await _form(request, console, "Enter an API key.", 400)
    caller = await check_token(
        token,
        client_address(request),
        console.auth_failures,
        admin_token=console.admin_token,
        store=console.service.store,
    )
    if isinstance(caller, Refused):
        return await _refused(request, console, caller)
    entry = entry_for(caller, client_address(request), console.service)
    if not caller.may_manage:
        failed = entry.about(
            AuditAction.SIGN_IN_FAILED, after={"via": "console", "scope": "ingest"}
        )
        await console.service.store.record_audit([failed])
        error = "This key may only send call records. Sign in with a manage key."
        return await _form(request, console, error, 403)
    after = {"via": "console"}
    await console.service.store.record_audit(
        [entry.about(AuditAction.SIGN_IN_SUCCEEDED, after=after)]
    )
    response = redirect(request, url_to(request, "list_apps"))
    console.sessions.write(response, request, _session_for(caller, console))
    return response


async def _refused(request: Request, console: Console, refused: Refused) -> Response:
    if refused.retry_after is None:  # counted, within the limit: kept in the audit log
        await record_failed_sign_in(console.service, client_address(request), via="console")
        return await _form(request, console, "This key is not valid, or it has been revoked.", 401)
    seconds = max(1, math.ceil(refused.retry_after))
    error = (
        f"Too many failed sign-ins from this address or with this key. Try again in {seconds} s."
    )
    return await _form(request, console, error, 429, {"Retry-After": str(seconds)})


def _session_for(caller: Caller, console: Console) -> Session:
    if caller.account_id is None:  # the operator: platform keys only ingest, so never get here
        admin = fingerprint(console.admin_token)
        return signed_in_as(key_id=None, admin=admin, account_id=DEFAULT_ACCOUNT)
    return signed_in_as(key_id=caller.key_id, admin=None, account_id=caller.account_id)


async def _form(
    request: Request,
    console: Console,
    error: str | None,
    status: int,
    headers: dict[str, str] | None = None,
) -> Response:
    session = await console.sessions.read(request)
    if session is None or session.signed_in:
        session = anonymous()
    response = console.page(
        request, None, "sign_in.html", status=status, csrf=session.csrf, error=error
    )
    response.headers.update(headers or {})
    console.sessions.write(response, request, session)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, console: ConsoleDep) -> Response:
    """End the session on the server (a copy of its cookie no longer signs in, in any
    process on the store), and drop the cookie."""
    if (session := await console.sessions.read(request)) is not None:
        await console.sessions.end(session)
    response = redirect(request, url_to(request, "sign_in_page"))
    console.sessions.clear(response, request)
    return response


@router.post("/account")
async def switch_account(
    request: Request, console: ConsoleDep, viewer: Annotated[Viewer, Depends(require_admin)]
) -> Response:
    """The operator looks at another account (``AccountNotFound`` if there is none)."""
    account_id = (await read_form(request)).get("account", "")
    account = await console.service.store.get_account(account_id)
    response = redirect(request, url_to(request, "list_apps"))
    console.sessions.write(response, request, viewer.session.switched_to(account.id))
    return response
