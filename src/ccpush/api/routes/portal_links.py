"""Portal links: a one-time URL that signs a browser into the console, scoped to an account
(or one of its apps), for a platform that shows the console inside its own. The link's token
is random (256 bits) and kept only as its SHA-256; opening it uses it up
(``ccpush.web.routes.portal``)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Annotated, Final

from fastapi import APIRouter, Request, status
from pydantic import Field, StrictBool
from starlette.routing import NoMatchFound

from ccpush.api.auditing import Audit
from ccpush.api.auth import Manager
from ccpush.api.deps import ServiceDep
from ccpush.api.idempotency import idempotent_post
from ccpush.api.params import PathId
from ccpush.api.schemas import ObjectId, Schema
from ccpush.errors import AccountNotFound

router = APIRouter(prefix="/v1")

LINK_PREFIX: Final = "ccpl_"
"""A portal link's token: this, then 43 URL-safe characters (256 random bits)."""
LINK_LENGTH: Final = len(LINK_PREFIX) + 43
PORTAL_PATH: Final = "/portal"
"""Where the console opens a link, the token in the query (the access log keeps no query
value)."""
MIN_LIFE, DEFAULT_LIFE, MAX_LIFE = 60, 3600, 86400
"""Seconds a link may be opened in: at least, unless told, at most."""


def new_link_token() -> str:
    return LINK_PREFIX + secrets.token_urlsafe(32)


def link_hash(token: str) -> str:
    """What the store keeps of a token: its SHA-256 (256 random bits need no slow hash)."""
    return hashlib.sha256(token.encode()).hexdigest()


def plausible_link(token: str) -> bool:
    """Whether ``token`` could be a link's token: if not, no store is asked."""
    return len(token) == LINK_LENGTH and token.startswith(LINK_PREFIX)


class PortalLinkCreate(Schema):
    app_id: ObjectId | None = Field(
        None, description="Confine the session to this app of the account; default: every app"
    )
    expires_in: Annotated[int, Field(ge=MIN_LIFE, le=MAX_LIFE, strict=True)] = Field(
        DEFAULT_LIFE, description="Seconds the link may be opened in (60 to 86,400)"
    )
    read_only: StrictBool = Field(False, description="The session may look, not change")


class PortalLinkCreated(Schema):
    id: str
    url: str = Field(description="Open it once, before expiresAt: it signs into the console")
    expires_at: datetime
    account_id: str
    app_id: str | None
    read_only: bool


@idempotent_post(
    router,
    "/accounts/{account_id}/portal-links",
    status_code=status.HTTP_201_CREATED,
    tags=["portal links"],
)
async def create_portal_link(
    account_id: PathId,
    body: PortalLinkCreate,
    caller: Manager,
    service: ServiceDep,
    request: Request,
    audit: Audit,
) -> PortalLinkCreated:
    """A link that signs a browser into the console as the account (or one of its apps, or
    read-only) with no other credential: it works once, until it expires. The answer holds
    its URL: the only time it is shown."""
    if caller.account_id is not None and caller.account_id != account_id:
        raise AccountNotFound()
    token, now = new_link_token(), service.clock.now()
    link = await service.store.create_portal_link(
        account_id=account_id,
        app_id=body.app_id,
        read_only=body.read_only,
        token_hash=link_hash(token),
        now=now,
        expires_at=now + timedelta(seconds=body.expires_in),
        audit=audit,
    )
    return PortalLinkCreated(
        id=link.id,
        url=f"{portal_url(request)}?token={token}",
        expires_at=link.expires_at,
        account_id=link.account_id,
        app_id=link.app_id,
        read_only=link.read_only,
    )


def portal_url(request: Request) -> str:
    """Where the console opens links, as this request reached the API."""
    try:
        return str(request.url_for("console", path=PORTAL_PATH))
    except NoMatchFound:  # the API served without the console beside it
        return f"{str(request.base_url).rstrip('/')}/console{PORTAL_PATH}"
