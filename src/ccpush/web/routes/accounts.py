"""Accounts (the operator's: list, create) and API keys: an account's, seen by the operator
or by the account's own manage key, and the platform's (the operator's). A new key's
secret is shown once, on the page that answers its creation; the store keeps only its hash."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ccpush.api.auth import display_prefix, hash_secret, new_key_secret
from ccpush.api.params import PathId
from ccpush.audit import AuditEntry
from ccpush.errors import AccountNotFound
from ccpush.models import Account, ApiKey, KeyScope
from ccpush.service import Service
from ccpush.web.auditing import ConsoleAudit
from ccpush.web.console import (
    Console,
    ConsoleDep,
    Viewer,
    ViewerDep,
    require_admin,
    require_key_holder,
)
from ccpush.web.forms import read_form
from ccpush.web.pages import redirect, url_to
from ccpush.web.routes.apps import name_problem

router = APIRouter()

OperatorDep = Annotated[Viewer, Depends(require_admin)]


@dataclass(frozen=True, slots=True)
class AccountRow:
    account: Account
    apps: int
    keys: int
    """Keys not revoked."""


@router.get("/accounts")
async def list_accounts(request: Request, console: ConsoleDep, viewer: OperatorDep) -> Response:
    """Every account, with its apps and keys, and the form that adds one."""
    return await _accounts_page(request, console, viewer, name="", error=None)


async def _accounts_page(
    request: Request, console: Console, viewer: Viewer, *, name: str, error: str | None
) -> Response:
    store = console.service.store
    apps = await store.list_apps()
    rows = []
    for account in viewer.accounts:
        keys = [key for key in await store.list_keys(account.id) if key.revoked_at is None]
        owned = sum(app.account_id == account.id for app in apps)
        rows.append(AccountRow(account, owned, len(keys)))
    return console.page(
        request,
        viewer,
        "accounts.html",
        status=422 if error else 200,
        section="accounts",
        rows=rows,
        name=name,
        error=error,
    )


@router.post("/accounts")
async def create_account(
    request: Request, console: ConsoleDep, viewer: OperatorDep, audit: ConsoleAudit
) -> Response:
    """Add an account; then its keys' page, to make its first key."""
    name = (await read_form(request)).get("name", "").strip()
    if problem := name_problem(name):
        return await _accounts_page(request, console, viewer, name=name, error=problem)
    service = console.service
    account = await service.store.create_account(name=name, now=service.clock.now(), audit=audit)
    url = url_to(request, "account_keys", account_id=account.id)
    return redirect(request, url + "?notice=account-created")


async def keys_account(
    account_id: PathId, console: ConsoleDep, viewer: Annotated[Viewer, Depends(require_key_holder)]
) -> Account:
    """The account of the path: any for the operator, a key's own (``AccountNotFound`` else,
    and for a portal session)."""
    if viewer.scope is not None and viewer.scope != account_id:
        raise AccountNotFound()
    return await console.service.store.get_account(account_id)


KeysAccountDep = Annotated[Account, Depends(keys_account)]


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made, with its secret: shown on this page only."""

    key: ApiKey
    secret: str


@router.get("/accounts/{account_id}/keys")
async def account_keys(
    request: Request, console: ConsoleDep, viewer: ViewerDep, account: KeysAccountDep
) -> Response:
    """The account's keys, revoked ones included, and the form that makes one."""
    return await _keys_page(request, console, viewer, account)


async def _keys_page(
    request: Request,
    console: Console,
    viewer: Viewer,
    account: Account | None,
    *,
    created: NewKey | None = None,
    name: str = "",
    error: str | None = None,
) -> Response:
    keys = await console.service.store.list_keys(account.id if account else None)
    return console.page(
        request,
        viewer,
        "keys.html",
        status=422 if error else 200,
        section=_keys_section(viewer, account),
        owner=account,
        keys=sorted(keys, key=lambda key: (key.revoked_at is not None, key.created_at)),
        scopes=list(KeyScope) if account else [KeyScope.INGEST],
        created=created,
        name=name,
        error=error,
    )


def _keys_section(viewer: Viewer, account: Account | None) -> str:
    """Where the keys' page is in the navigation: the account on screen's, another
    account's (the operator's list of accounts), or the platform's."""
    if account is None:
        return "platform-keys"
    return "keys" if account.id == viewer.account.id else "accounts"


@router.post("/accounts/{account_id}/keys")
async def create_account_key(
    request: Request,
    console: ConsoleDep,
    viewer: ViewerDep,
    account: KeysAccountDep,
    audit: ConsoleAudit,
) -> Response:
    """Make a key of the account; show its secret, this once."""
    return await _create_key(request, console, viewer, account, audit)


@router.post("/accounts/{account_id}/keys/{key_id}/revoke")
async def revoke_account_key(
    request: Request,
    console: ConsoleDep,
    account: KeysAccountDep,
    key_id: PathId,
    audit: ConsoleAudit,
) -> Response:
    """Revoke a key of the account: from now on it is refused, by the API and here."""
    service = console.service
    await service.store.revoke_key(account.id, key_id, now=service.clock.now(), audit=audit)
    url = url_to(request, "account_keys", account_id=account.id)
    return redirect(request, url + "?notice=key-revoked")


@router.get("/platform-keys")
async def platform_keys(request: Request, console: ConsoleDep, viewer: OperatorDep) -> Response:
    """The platform's keys: they only send call records, to any app."""
    return await _keys_page(request, console, viewer, None)


@router.post("/platform-keys")
async def create_platform_key(
    request: Request, console: ConsoleDep, viewer: OperatorDep, audit: ConsoleAudit
) -> Response:
    """Make a platform key (it may only send records); show its secret, this once."""
    return await _create_key(request, console, viewer, None, audit)


@router.post("/platform-keys/{key_id}/revoke")
async def revoke_platform_key(
    request: Request, console: ConsoleDep, _: OperatorDep, key_id: PathId, audit: ConsoleAudit
) -> Response:
    service = console.service
    await service.store.revoke_key(None, key_id, now=service.clock.now(), audit=audit)
    return redirect(request, url_to(request, "platform_keys") + "?notice=key-revoked")


async def _create_key(
    request: Request,
    console: Console,
    viewer: Viewer,
    account: Account | None,
    audit: AuditEntry | None = None,
) -> Response:
    """A key of ``account`` (None: the platform's) named and scoped as the form says."""
    form = await read_form(request)
    name = form.get("name", "").strip()
    scope = form.get("scope", KeyScope.MANAGE.value) if account else KeyScope.INGEST.value
    problem = name_problem(name)
    if scope not in {member.value for member in KeyScope}:
        problem = problem or "Choose what the key may do."
    if problem:
        return await _keys_page(request, console, viewer, account, name=name, error=problem)
    created = await new_key(console.service, account, name, KeyScope(scope), audit=audit)
    return await _keys_page(request, console, viewer, account, created=created)


async def new_key(
    service: Service,
    account: Account | None,
    name: str,
    scope: KeyScope,
    *,
    audit: AuditEntry | None = None,
) -> NewKey:
    """Make a key, keeping only the hash of its secret."""
    secret = new_key_secret()
    key = await service.store.create_key(
        account_id=account.id if account else None,
        name=name,
        scope=scope,
        secret_hash=hash_secret(secret),
        prefix=display_prefix(secret),
        now=service.clock.now(),
        audit=audit,
    )
    return NewKey(key, secret)
