"""An account's operational notifications in the console: where they go (an HTTPS URL,
an e-mail address), the secret that signs them (shown once, when made or rotated), and
their latest deliveries. A manage key's own account, or any for the operator."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ccpush.actions import target_problem
from ccpush.api.schemas import check_push_url
from ccpush.models import Account
from ccpush.notifications.mail import check_email
from ccpush.notifications.targets import rotate_secret, set_target
from ccpush.web.console import Console, ConsoleDep, Viewer, ViewerDep
from ccpush.web.forms import read_form
from ccpush.web.routes.accounts import KeysAccountDep

router = APIRouter()

SHOWN_DELIVERIES = 50


@router.get("/accounts/{account_id}/notifications")
async def account_notifications(
    request: Request, console: ConsoleDep, viewer: ViewerDep, account: KeysAccountDep
) -> Response:
    """Where the account's notifications go, and what became of the latest."""
    return await _page(request, console, viewer, account)


@router.post("/accounts/{account_id}/notifications")
async def set_account_notifications(
    request: Request, console: ConsoleDep, viewer: ViewerDep, account: KeysAccountDep
) -> Response:
    """Set the URL and the e-mail address (empty: none); the secret is shown if made now."""
    form = await read_form(request)
    url = form.get("url", "").strip() or None
    email = form.get("email", "").strip() or None
    errors = await _problems(console, url, email)
    if errors:
        return await _page(request, console, viewer, account, errors=errors, url=url, email=email)
    service = console.service
    target, made = await set_target(service.store, service.clock, account.id, url=url, email=email)
    secret = target.secret if made else None
    return await _page(request, console, viewer, account, secret=secret, saved=True)


@router.post("/accounts/{account_id}/notifications/rotate")
async def rotate_account_notification_secret(
    request: Request, console: ConsoleDep, viewer: ViewerDep, account: KeysAccountDep
) -> Response:
    """A new secret for the account's notifications, shown this once."""
    service = console.service
    target = await rotate_secret(service.store, service.clock, account.id)
    return await _page(request, console, viewer, account, secret=target.secret)


async def _problems(console: Console, url: str | None, email: str | None) -> dict[str, str]:
    errors = {}
    if url is not None:
        try:
            check_push_url(url)
            if not url.lower().startswith("https://"):
                raise ValueError("must start with https://")
        except ValueError as exc:
            errors["url"] = f"The address {exc}."
        else:
            problem = await target_problem(console.service, url)
            if problem is not None:
                errors["url"] = f"The address {problem}."
    if email is not None:
        try:
            check_email(email)
        except ValueError as exc:
            errors["email"] = f"The e-mail address {exc}."
    return errors


async def _page(
    request: Request,
    console: Console,
    viewer: Viewer,
    account: Account,
    *,
    errors: dict[str, str] | None = None,
    url: str | None = None,
    email: str | None = None,
    secret: str | None = None,
    saved: bool = False,
) -> Response:
    store = console.service.store
    target = await store.notification_target(account.id)
    deliveries = await store.list_notice_deliveries(
        account.id, platform=viewer.is_admin, limit=SHOWN_DELIVERIES
    )
    shown_url = url if errors else (target.url if target else None)
    shown_email = email if errors else (target.email if target else None)
    return console.page(
        request,
        viewer,
        "notifications.html",
        status=422 if errors else 200,
        section="notifications" if account.id == viewer.account.id else "accounts",
        owner=account,
        target=target,
        url_value=shown_url or "",
        email_value=shown_email or "",
        errors=errors or {},
        secret=secret,
        saved=saved,
        deliveries=deliveries,
    )
