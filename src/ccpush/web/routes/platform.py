"""The operator's overview of every account: records delivered and failed, attempts, the
backlog, and the apps failing or lagging most."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ccpush.web.activity import platform_overview, throttled_hosts
from ccpush.web.console import ConsoleDep, Viewer, require_admin

router = APIRouter()


@router.get("/platform")
async def platform(
    request: Request, console: ConsoleDep, viewer: Annotated[Viewer, Depends(require_admin)]
) -> Response:
    """The last 24 hours and the last hour across accounts, and what waits now."""
    store, now = console.service.store, console.service.clock.now()
    overview = platform_overview(
        viewer.accounts,
        await store.list_apps(),
        day=await store.app_activity(since=now - timedelta(days=1)),
        hour=await store.app_activity(since=now - timedelta(hours=1)),
        now=now,
    )
    return console.page(
        request,
        viewer,
        "platform.html",
        section="platform",
        overview=overview,
        now=now,
        throttled=throttled_hosts(console.service.dispatcher.host_limits, time.monotonic()),
    )
