"""The audit log: an account's entries (the operator's or the account's manage key), and
every entry (the operator's), newest first, filtered by time, app and action."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from ccpush.api.auth import Manager, Operator
from ccpush.api.deps import ServiceDep
from ccpush.api.errors import QUERY, invalid
from ccpush.api.params import PAGE_SIZE, Cursor, Limit, PathId, encode_cursor, id_cursor, parse_time
from ccpush.api.schemas import ObjectId, Page, Schema, TimeText
from ccpush.audit import AuditAction, AuditEntry, AuditFilter
from ccpush.errors import AccountNotFound
from ccpush.record import Problem
from ccpush.service import Service

router = APIRouter(prefix="/v1", tags=["audit"])


class AuditOut(Schema):
    id: int
    at: datetime
    action: AuditAction
    actor: str
    actor_name: str | None
    source: str | None
    account_id: str | None
    app_id: str | None
    target: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditOut:
        return cls(
            id=entry.id or 0,
            at=entry.at,
            action=entry.action,
            actor=entry.actor,
            actor_name=entry.actor_name,
            source=entry.source,
            account_id=entry.account_id,
            app_id=entry.app_id,
            target=entry.target,
            before=dict(entry.before) if entry.before is not None else None,
            after=dict(entry.after) if entry.after is not None else None,
        )


class AuditPage(Page[AuditOut]):
    """Audit log entries, newest first."""


Since = Annotated[TimeText | None, Query(alias="from", description="At or after this time")]
Until = Annotated[TimeText | None, Query(alias="to", description="Before this time")]
AppFilter = Annotated[ObjectId | None, Query(alias="appId", description="Entries of this app")]
ActionFilter = Annotated[
    str | None, Query(max_length=500, description="Comma-separated actions, e.g. app.renamed")
]


@router.get("/accounts/{account_id}/audit")
async def account_audit(
    account_id: PathId,
    caller: Manager,
    service: ServiceDep,
    since: Since = None,
    until: Until = None,
    app_id: AppFilter = None,
    action: ActionFilter = None,
    limit: Limit = PAGE_SIZE,
    cursor: Cursor = None,
) -> AuditPage:
    """Who changed what in the account, when and from where, newest first: apps, addresses,
    pausing, signing, keys, resends, replays, sign-ins. Secrets are never in it."""
    if caller.account_id is not None and caller.account_id != account_id:
        raise AccountNotFound()
    await service.store.get_account(account_id)
    query = _query(service, account_id, since, until, app_id, action, limit, cursor)
    return await audit_page(service, query)


@router.get("/audit")
async def platform_audit(
    _: Operator,
    service: ServiceDep,
    since: Since = None,
    until: Until = None,
    app_id: AppFilter = None,
    action: ActionFilter = None,
    limit: Limit = PAGE_SIZE,
    cursor: Cursor = None,
) -> AuditPage:
    """Every entry, of every account and of none (failed sign-ins, platform keys)."""
    query = _query(service, None, since, until, app_id, action, limit, cursor)
    return await audit_page(service, query)


def _query(
    service: Service,
    account_id: str | None,
    since: str | None,
    until: str | None,
    app_id: str | None,
    action: str | None,
    limit: int,
    cursor: str | None,
) -> AuditFilter:
    return AuditFilter(
        account_id=account_id,
        since=parse_time(since, "from", service.zone),
        until=parse_time(until, "to", service.zone),
        app_id=app_id,
        actions=parse_actions(action),
        before_id=id_cursor(cursor),
        limit=limit,
    )


def parse_actions(text: str | None) -> frozenset[AuditAction]:
    """``app.renamed,key.created``: the actions asked for; 422 naming ``action`` else."""
    names = [name.strip() for name in (text or "").split(",") if name.strip()]
    try:
        return frozenset(AuditAction(name) for name in names)
    except ValueError:
        allowed = ", ".join(action.value for action in AuditAction)
        raise invalid([Problem(field="action", reason=f"must be among {allowed}")], QUERY) from None


async def audit_page(service: Service, query: AuditFilter) -> AuditPage:
    entries = await service.store.list_audit(query)
    last = entries[-1].id if len(entries) == query.limit else None
    return AuditPage(
        items=[AuditOut.of(entry) for entry in entries],
        next_cursor=None if last is None else encode_cursor(last),
    )
