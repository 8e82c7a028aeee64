"""An app's overview: records delivered and failed, and push attempts by outcome, over the
last 24 hours and 7 days, drawn as charts; and the records waiting now."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ccpush.models import WAITING
from ccpush.web.charts import Labels, draw, series, total, window
from ccpush.web.console import AppDep, ConsoleDep, ViewerDep

router = APIRouter()

HOUR = timedelta(hours=1)
DAY_LABELS = Labels(period="%H:%M", tick="%H:%M", tick_hours=3)
WEEK_LABELS = Labels(period="%a %d %b %H:%M", tick="%a %d", tick_hours=24)


@router.get("/apps/{app_id}/overview")
async def overview(
    request: Request, console: ConsoleDep, viewer: ViewerDep, app: AppDep
) -> Response:
    """Numbers first, then how they moved: attempts by outcome per hour and per 6 hours."""
    service, zone = console.service, console.service.zone
    now = service.clock.now()
    day = window(now, zone, span=timedelta(days=1), period=HOUR)
    week = window(now, zone, span=timedelta(days=7), period=6 * HOUR)
    hourly = await service.store.attempt_stats(app.id, since=week.since, bucket=HOUR)
    by_hour, by_six_hours = series(day, hourly), series(week, hourly)
    counts = await service.store.count_by_state(app.id)
    return console.page(
        request,
        viewer,
        "overview.html",
        app=app,
        tab="overview",
        day=total(by_hour),
        week=total(by_six_hours),
        counts=counts,
        backlog=sum(counts[state] for state in WAITING),
        charts=[
            draw(
                "chart-day", "Push attempts per hour, last 24 hours", day, by_hour, zone, DAY_LABELS
            ),
            draw(
                "chart-week",
                "Push attempts per 6 hours, last 7 days",
                week,
                by_six_hours,
                zone,
                WEEK_LABELS,
            ),
        ],
    )
