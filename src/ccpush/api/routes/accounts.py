"""Accounts (the operator's) and API keys (an account's own, and the platform's)."""

from __future__ import annotations

from fastapi import APIRouter, status

from ccpush.api.auditing import Audit
from ccpush.api.auth import Caller, Manager, Operator, display_prefix, hash_secret, new_key_secret
from ccpush.api.deps import ServiceDep
from ccpush.api.idempotency import idempotent_post
from ccpush.api.params import PAGE_SIZE, Cursor, Limit, PathId, page_after
from ccpush.api.schemas import (
    AccountCreate,
    AccountOut,
    AccountPage,
    KeyCreate,
    KeyCreated,
    KeyOut,
    KeyPage,
)
from ccpush.audit import AuditEntry
from ccpush.errors import AccountNotFound
from ccpush.models import ApiKey
from ccpush.service import Service

router = APIRouter(prefix="/v1")


@idempotent_post(router, "/accounts", status_code=status.HTTP_201_CREATED, tags=["accounts"])
async def create_account(
    body: AccountCreate, _: Operator, service: ServiceDep, audit: Audit
) -> AccountOut:
    """Create a customer account (operator only)."""
    return AccountOut.of(
        await service.store.create_account(name=body.name, now=service.clock.now(), audit=audit)
    )


@router.get("/accounts", tags=["accounts"])
async def list_accounts(
    _: Operator, service: ServiceDep, limit: Limit = PAGE_SIZE, cursor: Cursor = None
) -> AccountPage:
    """Every account, oldest first."""
    page, next_cursor = page_after(await service.store.list_accounts(), cursor, limit)
    return AccountPage(items=[AccountOut.of(account) for account in page], next_cursor=next_cursor)


@router.get("/accounts/{account_id}", tags=["accounts"])
async def get_account(account_id: PathId, caller: Manager, service: ServiceDep) -> AccountOut:
    _check_own(caller, account_id)
    return AccountOut.of(await service.store.get_account(account_id))


@idempotent_post(
    router, "/accounts/{account_id}/keys", status_code=status.HTTP_201_CREATED, tags=["keys"]
)
async def create_key(
    account_id: PathId, body: KeyCreate, caller: Manager, service: ServiceDep, audit: Audit
) -> KeyCreated:
    """Create an API key for the account. The answer holds the secret: the only time it is shown."""
    _check_own(caller, account_id)
    return await _create_key(service, account_id, body, audit)


@router.get("/accounts/{account_id}/keys", tags=["keys"])
async def list_keys(
    account_id: PathId,
    caller: Manager,
    service: ServiceDep,
    limit: Limit = PAGE_SIZE,
    cursor: Cursor = None,
) -> KeyPage:
    """The account's keys, oldest first, revoked ones included, without their secrets."""
    _check_own(caller, account_id)
    await service.store.get_account(account_id)
    return _key_page(await service.store.list_keys(account_id), cursor, limit)


@router.delete("/accounts/{account_id}/keys/{key_id}", tags=["keys"])
async def revoke_key(
    account_id: PathId, key_id: PathId, caller: Manager, service: ServiceDep, audit: Audit
) -> KeyOut:
    """Revoke a key: from now on it is refused (401)."""
    _check_own(caller, account_id)
    now = service.clock.now()
    return KeyOut.of(await service.store.revoke_key(account_id, key_id, now=now, audit=audit))


@idempotent_post(router, "/platform-keys", status_code=status.HTTP_201_CREATED, tags=["keys"])
async def create_platform_key(
    body: KeyCreate, _: Operator, service: ServiceDep, audit: Audit
) -> KeyCreated:
    """A key for the call center: it may only send call records, to any app."""
    return await _create_key(service, None, body.model_copy(update={"scope": "ingest"}), audit)


@router.get("/platform-keys", tags=["keys"])
async def list_platform_keys(
    _: Operator, service: ServiceDep, limit: Limit = PAGE_SIZE, cursor: Cursor = None
) -> KeyPage:
    """The platform keys, oldest first, revoked ones included, without their secrets."""
    return _key_page(await service.store.list_keys(None), cursor, limit)


@router.delete("/platform-keys/{key_id}", tags=["keys"])
async def revoke_platform_key(
    key_id: PathId, _: Operator, service: ServiceDep, audit: Audit
) -> KeyOut:
    now = service.clock.now()
    return KeyOut.of(await service.store.revoke_key(None, key_id, now=now, audit=audit))


def _key_page(keys: list[ApiKey], cursor: str | None, limit: int) -> KeyPage:
    page, next_cursor = page_after(keys, cursor, limit)
    return KeyPage(items=[KeyOut.of(key) for key in page], next_cursor=next_cursor)


def _check_own(caller: Caller, account_id: str) -> None:
    """Another account's objects do not exist, as far as a key can tell."""
    if caller.account_id is not None and caller.account_id != account_id:
        raise AccountNotFound()


async def _create_key(
    service: Service, account_id: str | None, body: KeyCreate, audit: AuditEntry
) -> KeyCreated:
    secret = new_key_secret()
    key = await service.store.create_key(
        account_id=account_id,
        name=body.name,
        scope=body.scope,
        secret_hash=hash_secret(secret),
        prefix=display_prefix(secret),
        now=service.clock.now(),
        audit=audit,
    )
    return KeyCreated(**KeyOut.of(key).model_dump(), secret=secret)
