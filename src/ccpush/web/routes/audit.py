"""The audit log of the account on screen: who changed what, when and from where, newest
first, filtered by time, app and action, a page at a time. The operator's and the
account's keys' (not a portal session's)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import QueryParams

from ccpush.audit import AuditAction, AuditFilter
from ccpush.web.console import ConsoleDep, ViewerDep
from ccpush.web.forms import local_value, parse_local
from ccpush.web.routes.accounts import KeysAccountDep

router = APIRouter()

PAGE_SIZE = 50


@dataclass(frozen=True, slots=True)
class AuditFilters:
    """The filters as typed, the query they make, and what is wrong with them."""

    since: str
    until: str
    app_id: str
    action: str
    query: AuditFilter
    problems: tuple[str, ...]

    def link(self, **changes: str | int | None) -> str:
        """The query string of this page with ``changes`` (None: left out)."""
        values: dict[str, str | int | None] = {
            "since": self.since,
            "until": self.until,
            "appId": self.app_id,
            "action": self.action,
            "before": self.query.before_id,
        }
        values.update(changes)
        return urlencode({key: value for key, value in values.items() if value})


def read_filters(params: QueryParams, account_id: str, zone: tzinfo) -> AuditFilters:
    since, until, app_id, action = (
        params.get(name, "").strip() for name in ("since", "until", "appId", "action")
    )
    problems: list[str] = []
    actions: frozenset[AuditAction] = frozenset()
    if action in {member.value for member in AuditAction}:
        actions = frozenset({AuditAction(action)})
    elif action:
        problems.append("Choose an action from the list.")
    before = params.get("before", "")
    query = AuditFilter(
        account_id=account_id,
        since=_time(since, "From", zone, problems),
        until=_time(until, "Before", zone, problems),
        app_id=app_id or None,
        actions=actions,
        before_id=int(before) if before.isdigit() and len(before) < 19 else None,
        limit=PAGE_SIZE,
    )
    return AuditFilters(since, until, app_id, action, query, tuple(problems))


def _time(text: str, label: str, zone: tzinfo, problems: list[str]) -> datetime | None:
    try:
        return parse_local(text, zone)
    except ValueError:
        problems.append(f"{label} is not a date and time.")
        return None


@router.get("/accounts/{account_id}/audit")
async def account_audit(
    request: Request, console: ConsoleDep, viewer: ViewerDep, account: KeysAccountDep
) -> Response:
    """The account's audit log, newest first."""
    service = console.service
    filters = read_filters(request.query_params, account.id, service.zone)
    entries = [] if filters.problems else await service.store.list_audit(filters.query)
    apps = sorted(await service.store.list_apps(account.id), key=lambda app: app.name)
    return console.page(
        request,
        viewer,
        "audit.html",
        status=422 if filters.problems else 200,
        section="audit" if account.id == viewer.account.id else "accounts",
        owner=account,
        filters=filters,
        entries=entries,
        more=len(entries) == PAGE_SIZE,
        apps={app.id: app.name for app in apps},
        actions=list(AuditAction),
        time_example=local_value(service.clock.now(), service.zone),
    )
