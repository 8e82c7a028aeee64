"""Who is calling: the operator's admin token, an account's key, or a platform ingest key.

Keys are ``ccpk_`` followed by 43 random URL-safe characters; only their SHA-256 is stored
(a key has 256 bits of entropy, so a slow password hash would add nothing but latency).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from ccpush.api.errors import ApiError
from ccpush.models import ApiKey, KeyScope
from ccpush.service import Service

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


async def authenticate(request: Request) -> Caller:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise UNAUTHORIZED
    expected: str = request.app.state.admin_token
    if hmac.compare_digest(token.encode(), expected.encode()):
        return Caller(account_id=None, scope=None)
    if not token.startswith(KEY_PREFIX):
        raise UNAUTHORIZED
    service: Service = request.app.state.service
    key: ApiKey | None = await service.store.key_by_hash(hash_secret(token))
    if key is None:
        raise UNAUTHORIZED
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
