"""Who is calling: the operator's admin token, an account's key, or a platform ingest key.

Keys are ``ccpk_`` followed by 43 random URL-safe characters; only their SHA-256 is stored
(a key has 256 bits of entropy, so a slow password hash would add nothing but latency).

A token is checked before any count of failed sign-ins is looked at: a valid token is
never refused because others failed from its address (a shared NAT, a proxy). That the
tokens cannot be guessed rests on their length, not on that count: keys and a generated
admin token carry 256 random bits, a configured admin token at least 24 characters.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from ccpush.api.deps import api_state
from ccpush.api.errors import ApiError
from ccpush.api.limits import SignInFailures
from ccpush.audit import UNKNOWN, AuditAction, AuditEntry
from ccpush.models import ApiKey, KeyScope
from ccpush.service import Service
from ccpush.store import Store

KEY_PREFIX = "ccpk_"


def new_key_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[: len(KEY_PREFIX) + 6]


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller and what it may reach."""

    account_id: str | None
    """The account it is confined to; None for the operator and platform keys."""
    scope: KeyScope | None
    """None for the operator (admin token)."""
    key_id: str | None = None
    key_name: str | None = None
    """The key's name, for the audit log."""

    @property
    def identity(self) -> str:
        """Who it is, for what is counted or kept per caller: its key's id, or ``admin``."""
        return self.key_id or "admin"

    @property
    def is_admin(self) -> bool:
        return self.scope is None

    @property
    def may_manage(self) -> bool:
        return self.scope is not KeyScope.INGEST


UNAUTHORIZED = ApiError(
    401,
    "unauthorized",
    "a valid bearer token is required (Authorization: Bearer <token>)",
    headers={"WWW-Authenticate": "Bearer"},
)


def _rate_limited(retry_after: float, what: str) -> ApiError:
    seconds = max(1, math.ceil(retry_after))
    return ApiError(
        429,
        "rate_limited",
        f"{what}; try again in {seconds} s",
        headers={"Retry-After": str(seconds)},
    )


@dataclass(frozen=True, slots=True)
class Refused:
    """An invalid token (or none): answer 401, or 429 past the limit of failures."""

    retry_after: float | None
    """None: 401; else the seconds a 429 asks to wait."""


async def authenticate(request: Request) -> Caller:
    """The caller of this request, or 401; 429 past the rate of its key, or, for an invalid
    token, past the failures of its address or of the token itself."""
    state = api_state(request)
    caller = await check_token(
        bearer_token(request),
        client_address(request),
        state.auth_failures,
        admin_token=state.admin_token,
        store=state.service.store,
    )
    if isinstance(caller, Refused):
        if caller.retry_after is None:  # counted, within the limit: kept in the audit log
            await record_failed_sign_in(state.service, client_address(request), via="api")
            raise UNAUTHORIZED
        what = "too many failed sign-ins from this address or with this token"
        raise _rate_limited(caller.retry_after, what)
    if (wait := state.key_limiter.take(caller.identity)) is not None:
        raise _rate_limited(wait, "too many requests with this key")
    return caller


def bearer_token(request: Request) -> str:
    """The token of ``Authorization: Bearer <token>``; empty if there is none."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def check_token(
    token: str, address: str, failures: SignInFailures, *, admin_token: str, store: Store
) -> Caller | Refused:
    """Who ``token`` is (the admin token, or an unrevoked key); else ``Refused``, the failure
    counted against ``address`` and the token."""
    if not token:
        return Refused(failures.failed(address, None))
    if hmac.compare_digest(token.encode(), admin_token.encode()):
        return Caller(account_id=None, scope=None)
    credential = hash_secret(token)
    key: ApiKey | None = None
    if token.startswith(KEY_PREFIX) and not failures.known_bad(credential):
        async with failures.lookup_slot(address, credential):
            key = await store.key_by_hash(credential)
    if key is None:
        return Refused(failures.failed(address, credential))
    failures.succeeded(credential)
    return Caller(account_id=key.account_id, scope=key.scope, key_id=key.id, key_name=key.name)


async def record_failed_sign_in(service: Service, address: str, *, via: str) -> None:
    """Keep a failed sign-in in the audit log: when, from where, through what (never the
    token). Only failures the limiter let through are kept: past it, the log is not
    written either."""
    entry = AuditEntry(at=service.clock.now(), actor=UNKNOWN, source=address)
    after = {"via": via}
    await service.store.record_audit([entry.about(AuditAction.SIGN_IN_FAILED, after=after)])


def require_manager(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
    if not caller.may_manage:
        raise ApiError(403, "forbidden", "this key may only send call records")
    return caller


def require_admin(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
    if not caller.is_admin:
        raise ApiError(403, "forbidden", "only the operator's admin token may do this")
    return caller


AnyCaller = Annotated[Caller, Depends(authenticate)]
Manager = Annotated[Caller, Depends(require_manager)]
Operator = Annotated[Caller, Depends(require_admin)]
