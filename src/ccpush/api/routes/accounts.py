"""Accounts (the operator's) and API keys (an account's own, and the platform's)."""

from __future__ import annotations

from fastapi import APIRouter, status

from ccpush.api.auth import Caller, Manager, Operator, display_prefix, hash_secret, new_key_secret
from ccpush.api.deps import ServiceDep
from ccpush.api.schemas import AccountCreate, AccountOut, KeyCreate, KeyCreated, KeyOut
from ccpush.errors import AccountNotFound
from ccpush.service import Service

router = APIRouter(prefix="/v1")


@router.post("/accounts", status_code=status.HTTP_201_CREATED, tags=["accounts"])
async def create_account(body: AccountCreate, _: Operator, service: ServiceDep) -> AccountOut:
    """Create a customer account (operator only)."""
    return AccountOut.of(
        await service.store.create_account(name=body.name, now=service.clock.now())
    )


@router.get("/accounts", tags=["accounts"])
async def list_accounts(_: Operator, service: ServiceDep) -> list[AccountOut]:
    return [AccountOut.of(account) for account in await service.store.list_accounts()]


@router.get("/accounts/{account_id}", tags=["accounts"])
async def get_account(account_id: str, caller: Manager, service: ServiceDep) -> AccountOut:
    _check_own(caller, account_id)
    return AccountOut.of(await service.store.get_account(account_id))


@router.post("/accounts/{account_id}/keys", status_code=status.HTTP_201_CREATED, tags=["keys"])
async def create_key(
    account_id: str, body: KeyCreate, caller: Manager, service: ServiceDep
) -> KeyCreated:
    """Create an API key for the account. The answer holds the secret: the only time it is shown."""
    _check_own(caller, account_id)
    return await _create_key(service, account_id, body)


@router.get("/accounts/{account_id}/keys", tags=["keys"])
async def list_keys(account_id: str, caller: Manager, service: ServiceDep) -> list[KeyOut]:
    """The account's keys, revoked ones included, without their secrets."""
    _check_own(caller, account_id)
    await service.store.get_account(account_id)
    return [KeyOut.of(key) for key in await service.store.list_keys(account_id)]


@router.delete("/accounts/{account_id}/keys/{key_id}", tags=["keys"])
async def revoke_key(account_id: str, key_id: str, caller: Manager, service: ServiceDep) -> KeyOut:
    """Revoke a key: from now on it is refused (401)."""
    _check_own(caller, account_id)
    return KeyOut.of(await service.store.revoke_key(account_id, key_id, now=service.clock.now()))


@router.post("/platform-keys", status_code=status.HTTP_201_CREATED, tags=["keys"])
async def create_platform_key(body: KeyCreate, _: Operator, service: ServiceDep) -> KeyCreated:
    """A key for the call center: it may only send call records, to any app."""
    return await _create_key(service, None, body.model_copy(update={"scope": "ingest"}))


@router.get("/platform-keys", tags=["keys"])
async def list_platform_keys(_: Operator, service: ServiceDep) -> list[KeyOut]:
    return [KeyOut.of(key) for key in await service.store.list_keys(None)]


@router.delete("/platform-keys/{key_id}", tags=["keys"])
async def revoke_platform_key(key_id: str, _: Operator, service: ServiceDep) -> KeyOut:
    return KeyOut.of(await service.store.revoke_key(None, key_id, now=service.clock.now()))


def _check_own(caller: Caller, account_id: str) -> None:
    """Another account's objects do not exist, as far as a key can tell."""
    if caller.account_id is not None and caller.account_id != account_id:
        raise AccountNotFound()


async def _create_key(service: Service, account_id: str | None, body: KeyCreate) -> KeyCreated:
    secret = new_key_secret()
    key = await service.store.create_key(
        account_id=account_id,
        name=body.name,
        scope=body.scope,
        secret_hash=hash_secret(secret),
        prefix=display_prefix(secret),
        now=service.clock.now(),
    )
    return KeyCreated(**KeyOut.of(key).model_dump(), secret=secret)
