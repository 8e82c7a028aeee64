"""For the operator's tools: liveness, readiness and Prometheus metrics (no token needed:
expose them on an internal network only)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from ccpush.api.deps import ServiceDep

router = APIRouter(include_in_schema=False)
log = logging.getLogger(__name__)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(service: ServiceDep) -> JSONResponse:
    """The store answers, and (where this process pushes) dispatching runs and its last
    claim and write of outcomes succeeded."""
    dispatcher = "ok" if service.dispatching else "stopped"
    if dispatcher == "ok" and service.dispatcher.store_failing:
        dispatcher = "retrying"  # the store failed its last claim or write
    checks = {"store": "ok", "dispatcher": dispatcher}
    try:
        await service.store.next_due_at()
    except Exception as exc:  # any failure of the store means not ready
        log.warning("readiness: the store does not answer: %s", exc)
        checks["store"] = "unreachable"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(service: ServiceDep) -> Response:
    body = await service.metrics.render(service.store, service.clock)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
