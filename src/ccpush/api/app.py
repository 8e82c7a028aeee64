"""The API application factory and its routes."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request, status

from ccpush import __version__
from ccpush.api.deps import Admin, ServiceDep
from ccpush.api.errors import ApiError, install_error_handlers
from ccpush.api.ingest import parse_records, read_body
from ccpush.api.schemas import (
    AppCreate,
    AppOut,
    AppPatch,
    DeliveriesOut,
    DeliveryOut,
    ErrorOut,
    IngestOut,
    RecordResult,
)
from ccpush.record import CallRecord
from ccpush.service import Service
from ccpush.store.base import UNSET

ERRORS = {
    401: {"model": ErrorOut, "description": "Missing or wrong bearer token"},
    404: {"model": ErrorOut, "description": "No such app or record"},
    422: {"model": ErrorOut, "description": "Invalid input: every problem with its field"},
}

router = APIRouter(prefix="/v1", dependencies=[Admin], responses=ERRORS)  # type: ignore[arg-type]


@router.post("/apps", status_code=status.HTTP_201_CREATED, tags=["apps"])
async def create_app(body: AppCreate, service: ServiceDep) -> AppOut:
    """Create a voice application, optionally with its cc-http push address."""
    app = await service.store.create_app(
        name=body.name, push_url=body.push_url, now=service.clock.now()
    )
    return AppOut.of(app)


@router.get("/apps/{app_id}", tags=["apps"])
async def get_app(app_id: str, service: ServiceDep) -> AppOut:
    return AppOut.of(await service.store.get_app(app_id))


@router.patch("/apps/{app_id}", tags=["apps"])
async def update_app(app_id: str, body: AppPatch, service: ServiceDep) -> AppOut:
    """Change the name or the push address; ``"pushUrl": null`` clears the address."""
    given = body.model_fields_set
    if "name" in given and body.name is None:
        raise ApiError(422, "invalid_request", "name cannot be null")
    app = await service.store.update_app(
        app_id,
        now=service.clock.now(),
        name=body.name if "name" in given and body.name is not None else UNSET,
        push_url=body.push_url if "push_url" in given else UNSET,
    )
    if "push_url" in given:
        service.dispatcher.wake()
    return AppOut.of(app)


@router.post(
    "/apps/{app_id}/call-records",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["call records"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/CallRecord"},
                            {"type": "array", "items": {"$ref": "#/components/schemas/CallRecord"}},
                        ]
                    }
                }
            },
        }
    },
    responses={
        400: {"model": ErrorOut, "description": "The body is not JSON"},
        413: {"model": ErrorOut, "description": "Body or batch too large"},
    },
)
async def ingest_records(app_id: str, request: Request, service: ServiceDep) -> IngestOut:
    """Store one call record or an array of them for pushing.

    All or nothing: if any record is invalid, none is stored and the answer lists every
    problem with its field path (``[3].callType``). Answers once the records are durable.
    A record whose ``callSessionId`` the app already has is reported as a duplicate and is
    not pushed again."""
    settings = service.settings
    body = await read_body(request, settings.max_body_bytes)
    records = parse_records(body, zone=service.zone, max_records=settings.max_batch_records)
    results = await service.store.ingest(app_id, records, now=service.clock.now())
    service.dispatcher.wake()
    accepted = sum(result.accepted for result in results)
    return IngestOut(
        accepted=accepted,
        duplicates=len(results) - accepted,
        results=[RecordResult.of(result) for result in results],
    )


@router.get("/apps/{app_id}/call-records/{call_session_id}/deliveries", tags=["call records"])
async def record_deliveries(
    app_id: str, call_session_id: str, service: ServiceDep
) -> DeliveriesOut:
    """The delivery of a record: its state, and every attempt with its outcome."""
    await service.store.get_app(app_id)
    deliveries = await service.store.deliveries_of(app_id, call_session_id)
    if not deliveries:
        raise ApiError(404, "not_found", "this app has no record with this callSessionId")
    return DeliveriesOut(
        call_session_id=call_session_id,
        deliveries=[DeliveryOut.of(delivery) for delivery in deliveries],
    )


def create_api(service: Service, *, admin_token: str) -> FastAPI:
    """The ASGI app; the caller starts and stops ``service`` around it."""
    api = FastAPI(
        title="ccpush",
        version=__version__,
        description="Push call records to customers' cc-http push addresses.",
    )
    api.state.service = service
    api.state.admin_token = admin_token
    install_error_handlers(api)
    api.include_router(router)

    @api.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    _publish_record_schema(api)
    return api


def _publish_record_schema(api: FastAPI) -> None:
    """Put ``CallRecord`` in the OpenAPI components (the ingest route reads the raw body)."""
    original = api.openapi

    def openapi() -> dict[str, object]:
        if api.openapi_schema is None:
            schema = original()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["CallRecord"] = CallRecord.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
