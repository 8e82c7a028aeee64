"""The API application factory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.routing import Route
from starlette.types import Scope

from ccpush import __version__
from ccpush.api.errors import install_error_handlers
from ccpush.api.ingest import GroupCommit
from ccpush.api.limits import BodyLimit, RateLimiter, failure_limiter
from ccpush.api.routes import accounts, apps, operations, records
from ccpush.api.schemas import ErrorOut
from ccpush.record import CallRecord
from ccpush.service import Service
from ccpush.settings import Settings

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The body is not JSON"},
    401: {"model": ErrorOut, "description": "Missing, wrong or revoked bearer token"},
    403: {"model": ErrorOut, "description": "The key may not do this (an ingest-only key)"},
    404: {"model": ErrorOut, "description": "No such object (in the caller's account)"},
    413: {"model": ErrorOut, "description": "The body is larger than allowed"},
    422: {"model": ErrorOut, "description": "Invalid input: every problem with its field"},
    429: {"model": ErrorOut, "description": "Too many requests (see Retry-After)"},
    503: {
        "model": ErrorOut,
        "description": "The database did not answer, or ingestion has too many records"
        " waiting for it: nothing was changed (see Retry-After)",
    },
}

DESCRIPTION = """
Push call records to customers' cc-http push addresses.

Authenticate with `Authorization: Bearer <token>`: the operator's admin token, an
account's key (`manage`: its own apps, records and keys), or an ingest-only key
(an account's, or a platform key for the call center: it may only send call records).
Every error has the shape `{"error": {"code", "message", "problems": [{"field", "reason"}]}}`.
"""


def create_api(service: Service, *, admin_token: str) -> FastAPI:
    """The ASGI app; the caller starts and stops ``service`` around it."""
    settings = service.settings
    otel = settings.opentelemetry
    api = FastAPI(
        title="ccpush",
        version=__version__,
        description=DESCRIPTION,
        telemetry={"tracing": otel, "metrics": otel, "logs": otel},
    )
    api.state.service = service
    api.state.admin_token = admin_token
    api.state.key_limiter = RateLimiter(settings.key_rate_limit, 2 * settings.key_rate_limit)
    api.state.auth_failures = failure_limiter(settings.auth_failure_limit)
    api.state.group_commit = GroupCommit(service.store, max_queued=settings.max_queued_records)
    api.add_middleware(BodyLimit, limit_for=_body_limit(settings))
    install_error_handlers(api)
    # Ingestion first: a request is matched against the routes in order.
    api.router.routes.append(Route(records.INGEST_PATH, records.ingest, methods=["POST"]))
    for module in (records, accounts, apps):
        api.include_router(module.router, responses=ERRORS)

    from ccpush.web import create_console  # the console uses the API's auth: import it late

    api.mount("/console", create_console(api), name="console")
    api.add_api_route("/", lambda: RedirectResponse("/console/"), include_in_schema=False)

    api.include_router(operations.router)

    _publish_record_schema(api)
    return api


def _body_limit(settings: Settings) -> Callable[[Scope], int]:
    def limit_for(scope: Scope) -> int:
        ingesting = scope["method"] == "POST" and scope["path"].endswith("/call-records")
        return settings.max_body_bytes if ingesting else settings.max_request_bytes

    return limit_for


def _publish_record_schema(api: FastAPI) -> None:
    """Put ``CallRecord`` in the OpenAPI components (the ingest route reads the raw body)."""
    original = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = original()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            if "CallRecord" not in components:
                components["CallRecord"] = CallRecord.model_json_schema(
                    ref_template="#/components/schemas/{model}"
                )
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
