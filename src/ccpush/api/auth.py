"""Who is calling: the operator's admin token, an account's key, or a platform ingest key.

Keys are ``ccpk_`` followed by 43 random URL-safe characters; only their SHA-256 is stored
(a key has 256 bits of entropy, so a slow password hash would add nothing but latency).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from ccpush.api.errors import ApiError
from ccpush.api.limits import RateLimiter
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


async def authenticate(request: Request) -> Caller:
    """The caller of this request, or 401; 429 past the rate of its key or of failures."""
    client = request.client.host if request.client else "unknown"
    failures: RateLimiter = request.app.state.auth_failures
    if (wait := failures.peek(client)) is not None:
        raise _rate_limited(wait, "too many failed sign-ins from this address")
    caller = await _identify(request)
    if caller is None:
        failures.take(client)
        raise UNAUTHORIZED
    limiter: RateLimiter = request.app.state.key_limiter
    if (wait := limiter.take(caller.key_id or "admin")) is not None:
        raise _rate_limited(wait, "too many requests with this key")
    return caller


async def _identify(request: Request) -> Caller | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    service: Service = request.app.state.service
    return await caller_for(token, admin_token=request.app.state.admin_token, store=service.store)


async def caller_for(token: str, *, admin_token: str, store: Store) -> Caller | None:
    """Who ``token`` is (the admin token, or an unrevoked key), or None."""
    if hmac.compare_digest(token.encode(), admin_token.encode()):
        return Caller(account_id=None, scope=None)
    if not token.startswith(KEY_PREFIX):
        return None
    key: ApiKey | None = await store.key_by_hash(hash_secret(token))
    if key is None:
        return None
    return Caller(account_id=key.account_id, scope=key.scope, key_id=key.id)


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
