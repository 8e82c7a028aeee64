"""The API application factory (``ccpush.app`` adds the web console beside it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.routing import Route
from starlette.types import Scope

from ccpush import __version__
from ccpush.api.deps import ApiState, install_state
from ccpush.api.errors import install_error_handlers
from ccpush.api.json_bodies import StrictJson
from ccpush.api.limits import BodyLimit
from ccpush.api.routes import (
    accounts,
    apps,
    audit,
    notifications,
    operations,
    portal_links,
    records,
    sources,
)
from ccpush.api.schemas import ErrorOut
from ccpush.record import CallRecord
from ccpush.service import Service
from ccpush.settings import Settings

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorOut,
        "description": "The body is not strict JSON (not UTF-8, a key twice in an object,"
        " NaN or Infinity, nesting too deep)",
    },
    401: {"model": ErrorOut, "description": "Missing, wrong or revoked bearer token"},
    403: {"model": ErrorOut, "description": "The key may not do this (an ingest-only key)"},
    404: {"model": ErrorOut, "description": "No such object (in the caller's account)"},
    413: {"model": ErrorOut, "description": "The body is larger than allowed"},
    415: {"model": ErrorOut, "description": "The body is not sent as application/json"},
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
Every list has the shape `{"items": [...], "nextCursor"}` (`limit` 100 by default, at most
1,000; `cursor`: the previous page's `nextCursor`). The POSTs that create or send take an
`Idempotency-Key` header: the same request sent again with the same key within 24 hours gets
the first answer again instead of being done twice.
"""


def create_api(service: Service, *, admin_token: str) -> FastAPI:
    """The API's ASGI app, its shared state kept on it (``state_of``); the caller starts
    and stops ``service`` around it."""
    settings = service.settings
    otel = settings.opentelemetry
    api = FastAPI(
        title="ccpush",
        version=__version__,
        description=DESCRIPTION,
        telemetry={"tracing": otel, "metrics": otel, "logs": otel},
    )
    install_state(api, ApiState.build(service, admin_token))
    # The last added runs first: bodies over their limit are refused before being read.
    api.add_middleware(StrictJson, applies=_in_api, parses=lambda scope: not _ingesting(scope))
    api.add_middleware(BodyLimit, limit_for=_body_limit(settings))
    install_error_handlers(api)
    # Ingestion first: a request is matched against the routes in order.
    api.router.routes.append(Route(records.INGEST_PATH, records.ingest, methods=["POST"]))
    for module in (records, accounts, apps, portal_links, audit, notifications):
        api.include_router(module.router, responses=ERRORS)
    api.include_router(sources.freeswitch_router(settings), responses=ERRORS)
    api.include_router(operations.router)

    _publish_record_schema(api)
    return api


def _body_limit(settings: Settings) -> Callable[[Scope], int]:
    def limit_for(scope: Scope) -> int:
        return settings.max_body_bytes if _ingesting(scope) else settings.max_request_bytes

    return limit_for


def _ingesting(scope: Scope) -> bool:
    takes_records = scope["path"].endswith("/call-records") or sources.reads_own_body(scope)
    return bool(scope["method"] == "POST" and takes_records)


def _in_api(scope: Scope) -> bool:
    """The JSON API's requests (the console, beside it, takes forms; a source, its
    platform's format)."""
    return bool(scope["path"].startswith("/v1/") and not sources.reads_own_body(scope))


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
