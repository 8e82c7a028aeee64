"""Every error the API answers has one shape: ``{"error": {"code", "message", "problems"}}``."""

from __future__ import annotations

import logging
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ccpush.api.schemas import ErrorBody, ErrorOut
from ccpush.errors import IngestionBusy, NotFound, ReplayTooLarge, StoreError, StoreRefusedValue
from ccpush.record import Problem

log = logging.getLogger(__name__)

STORE_RETRY_AFTER: Final = "5"
BUSY_RETRY_AFTER: Final = "1"

BODY: Final = "request body"
QUERY: Final = "query parameters"
PATH: Final = "path parameters"
PLACES: Final = {"body": BODY, "query": QUERY, "path": PATH, "header": "headers"}
"""Where a problem is, by the first part of its location in a ``RequestValidationError``."""


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        problems: list[Problem] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorOut(error=ErrorBody(code=code, message=message, problems=problems or []))
        self.headers = headers

    def response(self) -> JSONResponse:
        return JSONResponse(
            self.body.model_dump(mode="json", by_alias=True),
            status_code=self.status,
            headers=self.headers,
        )


def invalid(problems: list[Problem], where: str = BODY) -> ApiError:
    """422 listing ``problems``, all found in ``where`` (``BODY``, ``QUERY``, ``PATH``)."""
    count = len(problems)
    noun = "problem" if count == 1 else "problems"
    return ApiError(422, "invalid_request", f"{count} {noun} in the {where}", problems)


def _field(loc: tuple[Any, ...]) -> str:
    parts = list(loc[1:]) if loc and loc[0] in PLACES else list(loc)
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(body)"


def _where(locations: list[tuple[Any, ...]]) -> str:
    places = {PLACES.get(loc[0], "request") if loc else BODY for loc in locations}
    return places.pop() if len(places) == 1 else "request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return ApiError(404, "not_found", str(exc)).response()

    @app.exception_handler(ReplayTooLarge)
    async def _too_large(_: Request, exc: ReplayTooLarge) -> JSONResponse:
        return ApiError(422, "replay_too_large", str(exc)).response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems, locations = [], []
        for item in exc.errors():
            reason = str(item.get("msg", "is not valid")).removeprefix("Value error, ")
            if item.get("type") == "json_invalid":
                raise_body = ApiError(400, "invalid_json", "the request body is not valid JSON")
                return raise_body.response()
            if item.get("type") == "extra_forbidden":
                reason = "is not a known field"
            loc = tuple(item.get("loc", ()))
            locations.append(loc)
            problems.append(Problem(field=_field(loc), reason=reason))
        return invalid(problems, _where(locations)).response()

    @app.exception_handler(StoreRefusedValue)
    async def _store_refused(request: Request, exc: StoreRefusedValue) -> JSONResponse:
        # Input validation should have refused the value first: this answer is the net.
        log.warning("%s %s: the store refused a value: %r", request.method, request.url.path, exc)
        return ApiError(
            422,
            "invalid_value",
            "a value of the request could not be stored (a character, number or date the"
            " database cannot hold): nothing was changed; correct the request, as sending"
            " it again cannot succeed",
        ).response()

    @app.exception_handler(StoreError)
    async def _store_failed(request: Request, exc: StoreError) -> JSONResponse:
        # Every change is one transaction: a request that fails here changed nothing.
        log.error("%s %s: the store failed: %r", request.method, request.url.path, exc)
        return ApiError(
            503,
            "store_unavailable",
            "the database did not answer: nothing was changed; try again",
            headers={"Retry-After": STORE_RETRY_AFTER},
        ).response()

    @app.exception_handler(IngestionBusy)
    async def _busy(_: Request, exc: IngestionBusy) -> JSONResponse:
        return ApiError(
            503, "ingestion_busy", str(exc), headers={"Retry-After": BUSY_RETRY_AFTER}
        ).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return ApiError(exc.status_code, code, str(exc.detail)).response()
