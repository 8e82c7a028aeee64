"""An account's operational notifications: where they go (an HTTPS URL signed with the
account's own secret, an e-mail address), the secret, and their deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter
from pydantic import AfterValidator, Field

from ccpush.actions import target_problem
from ccpush.api.auth import Caller, Manager
from ccpush.api.deps import ServiceDep
from ccpush.api.errors import invalid
from ccpush.api.idempotency import idempotent_post
from ccpush.api.params import PAGE_SIZE, Cursor, Limit, PathId, encode_cursor, id_cursor
from ccpush.api.schemas import Page, PushUrl, Schema
from ccpush.errors import AccountNotFound
from ccpush.notifications.mail import check_email
from ccpush.notifications.records import NoticeDelivery, NotificationTarget
from ccpush.notifications.targets import rotate_secret, set_target
from ccpush.record import Problem
from ccpush.service import Service

router = APIRouter(prefix="/v1", tags=["notifications"])


def _https(value: str) -> str:
    if not value.lower().startswith("https://"):
        raise ValueError("must start with https://")
    return value


Email = Annotated[str, AfterValidator(check_email)]


class NotificationsIn(Schema):
    url: Annotated[PushUrl, AfterValidator(_https)] | None = Field(
        default=None, description="HTTPS address told of the account's events; null: none"
    )
    email: Email | None = Field(default=None, description="E-mail address told; null: none")


class NotificationsOut(Schema):
    url: str | None
    email: str | None
    secret: str | None = Field(
        default=None,
        description="whsec_...: verifies the notifications' signatures; shown only when made",
    )
    updated_at: datetime | None

    @classmethod
    def of(cls, target: NotificationTarget | None, *, shown: bool = False) -> NotificationsOut:
        if target is None:
            return cls(url=None, email=None, updated_at=None)
        secret = target.secret if shown else None
        return cls(url=target.url, email=target.email, secret=secret, updated_at=target.updated_at)


class NoticeDeliveryOut(Schema):
    id: int
    notification_id: str
    type: str
    channel: str
    target: str
    platform: bool = Field(description="The operator's platform-wide destination")
    state: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, delivery: NoticeDelivery) -> NoticeDeliveryOut:
        return cls(
            id=delivery.id,
            notification_id=delivery.notification_id,
            type=delivery.type.value,
            channel=delivery.channel.value,
            target=delivery.target,
            platform=delivery.platform,
            state=delivery.state.value,
            attempts=delivery.attempts,
            last_error=delivery.last_error,
            next_attempt_at=delivery.next_attempt_at,
            created_at=delivery.created_at,
            updated_at=delivery.updated_at,
        )


class NoticeDeliveryPage(Page[NoticeDeliveryOut]):
    """Notification deliveries, newest first."""


async def _own_account(caller: Caller, account_id: str, service: Service) -> None:
    """Another account's objects do not exist, as far as a key can tell."""
    if caller.account_id is not None and caller.account_id != account_id:
        raise AccountNotFound()
    await service.store.get_account(account_id)


@router.get("/accounts/{account_id}/notifications")
async def get_notifications(
    account_id: PathId, caller: Manager, service: ServiceDep
) -> NotificationsOut:
    """Where the account's notifications go (the secret is shown only when made)."""
    await _own_account(caller, account_id, service)
    return NotificationsOut.of(await service.store.notification_target(account_id))


@router.put("/accounts/{account_id}/notifications")
async def put_notifications(
    account_id: PathId, body: NotificationsIn, caller: Manager, service: ServiceDep
) -> NotificationsOut:
    """Set where the account's notifications go. The first time, the answer holds the
    secret that signs them: the only time it is shown."""
    await _own_account(caller, account_id, service)
    if body.url is not None:
        problem = await target_problem(service, body.url)
        if problem is not None:
            raise invalid([Problem(field="url", reason=problem)])
    target, made = await set_target(
        service.store, service.clock, account_id, url=body.url, email=body.email
    )
    return NotificationsOut.of(target, shown=made)


@idempotent_post(router, "/accounts/{account_id}/notifications/secret/rotate")
async def rotate_notification_secret(
    account_id: PathId, caller: Manager, service: ServiceDep
) -> NotificationsOut:
    """A new secret for the account's notifications, shown this once; the old one stops
    signing at once."""
    await _own_account(caller, account_id, service)
    target = await rotate_secret(service.store, service.clock, account_id)
    return NotificationsOut.of(target, shown=True)


@router.get("/accounts/{account_id}/notifications/deliveries")
async def notification_deliveries(
    account_id: PathId,
    caller: Manager,
    service: ServiceDep,
    limit: Limit = PAGE_SIZE,
    cursor: Cursor = None,
) -> NoticeDeliveryPage:
    """The deliveries of the account's notifications, newest first (the operator sees
    those to its platform-wide destinations too)."""
    await _own_account(caller, account_id, service)
    found = await service.store.list_notice_deliveries(
        account_id, platform=caller.is_admin, limit=limit, before_id=id_cursor(cursor)
    )
    last = found[-1].id if len(found) == limit else None
    return NoticeDeliveryPage(
        items=[NoticeDeliveryOut.of(item) for item in found],
        next_cursor=None if last is None else encode_cursor(last),
    )
