"""Call records as call platforms send them: ``POST /v1/sources/freeswitch`` takes the CDRs
that FreeSWITCH's ``mod_json_cdr`` POSTs (README, *FreeSWITCH*).

A source's body is its platform's format, not the API's JSON: the app factory lets its
route read it (``reads_own_body``), with ingestion's size limit.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse
from starlette.types import Scope

from ccpush.api.auth import Caller, authenticate
from ccpush.api.deps import ApiState, api_state
from ccpush.api.errors import BODY, QUERY, ApiError, invalid
from ccpush.api.ingest import ParsedBody
from ccpush.api.json_bodies import media_type
from ccpush.api.schemas import MAX_ID_LENGTH, ErrorOut, IngestOut, Schema, check_printable
from ccpush.models import NewRecord
from ccpush.record import CallRecord, Problem
from ccpush.settings import Settings
from ccpush.sources.freeswitch import (
    FORM_TYPE,
    JSON_TYPE,
    MEDIA_TYPES,
    FreeswitchMapping,
    Ignored,
    MappedCdr,
    UnmappableCdr,
    UnreadableCdr,
    map_cdr,
    read_cdr,
)

PREFIX: Final = "/v1/sources/"
FREESWITCH_PATH: Final = PREFIX + "freeswitch"
APP_QUERY: Final = "appId"
"""The query parameter naming the app of CDRs that do not name one themselves."""

UNAUTHORIZED: Final = ApiError(
    401,
    "unauthorized",
    "a valid key is required: as the password of HTTP Basic authentication (mod_json_cdr's"
    " cred=<any name>:<key>) or as a bearer token",
    headers={"WWW-Authenticate": 'Basic realm="ccpush", Bearer'},
)
UNSUPPORTED: Final = ApiError(
    415,
    "unsupported_media_type",
    "a FreeSWITCH CDR comes as " + ", ".join(MEDIA_TYPES) + " (mod_json_cdr's encode)",
)


def reads_own_body(scope: Scope) -> bool:
    """Whether a request is a source's: its body is read by its route, not as the API's
    JSON, and may be as large as an ingestion's."""
    return bool(scope["path"].startswith(PREFIX))


class IgnoredOut(Schema):
    status: str = "ignored"
    reason: str


FREESWITCH_BODY: Final[dict[str, Any]] = {
    "required": True,
    "description": "A CDR as mod_json_cdr writes it; with encode=base64, the body"
    " cdr=<base64 of it> as application/x-www-form-base64-encoded",
    "content": {
        JSON_TYPE: {"schema": {"type": "object", "description": "a mod_json_cdr CDR"}},
        FORM_TYPE: {
            "schema": {
                "type": "object",
                "properties": {"cdr": {"type": "string", "description": "the CDR's JSON"}},
                "required": ["cdr"],
            }
        },
    },
}


APP_PARAMETER: Final[dict[str, Any]] = {
    "name": APP_QUERY,
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "The app of a CDR whose channel variables name none (what mod_json_cdr"
    " appends to the URL, ?uuid=..., is not part of it)",
}


def freeswitch_router(settings: Settings) -> APIRouter:
    """The FreeSWITCH route, its mapping read once from ``settings`` (a bad mapping file
    is a ``ConfigurationError`` at start)."""
    mapping = FreeswitchMapping.from_settings(settings)
    router = APIRouter(tags=["sources"])

    @router.post(
        FREESWITCH_PATH,
        status_code=status.HTTP_202_ACCEPTED,
        response_model=IngestOut,
        openapi_extra={"requestBody": FREESWITCH_BODY, "parameters": [APP_PARAMETER]},
        responses={
            200: {"model": IgnoredOut, "description": "A leg that is not pushed (a B-leg)"},
            400: {"model": ErrorOut, "description": "The body is not a FreeSWITCH CDR"},
            401: {"model": ErrorOut, "description": "No valid key (Basic password or bearer)"},
            415: {"model": ErrorOut, "description": "Not a content type mod_json_cdr sends"},
            422: {"model": ErrorOut, "description": "The CDR cannot be a record, or names no app"},
        },
    )
    async def freeswitch_cdr(request: Request) -> Response:
        """Store the call record of a CDR that ``mod_json_cdr`` POSTs: raw JSON
        (``encode`` false), or the form ``cdr=...`` (``encode`` true or base64).

        * **202** once the record is durable (``results`` as ingestion answers them);
        * **200** ``{"status": "ignored", "reason": ...}`` for a leg that is not pushed
          (a B-leg, a mod_callcenter agent leg, a loopback's B half);
        * **422** naming each field that cannot be mapped, and why, or the missing app:
          the module keeps the CDR in its error directory.

        The key is HTTP Basic's password (``cred=<any name>:<key>``) or a bearer token.
        The app is the CDR's channel variable ``CCPUSH_FREESWITCH_APP_VARIABLE``, else
        ``?appId=`` (what FreeSWITCH appends, ``?uuid=...``, is not part of it)."""
        return await _take_cdr(request, mapping)

    return router


async def _take_cdr(request: Request, mapping: FreeswitchMapping) -> Response:
    caller = await _authenticate(request)
    state = api_state(request)
    metrics = state.service.metrics
    cdr = _read(request, await request.body())  # its size is capped by BodyLimit
    try:
        outcome = map_cdr(cdr, mapping, record_zone=state.service.zone)
        if isinstance(outcome, Ignored):
            return JSONResponse(IgnoredOut(reason=outcome.reason).model_dump())
        app_id = _app_of(outcome, request, mapping.app_variable)
    except UnmappableCdr as exc:
        metrics.count_refused(1)
        raise invalid(exc.problems) from None
    except ApiError:
        metrics.count_refused(1)
        raise
    return await _store(state, app_id, outcome.record, caller)


async def _store(state: ApiState, app_id: str, record: CallRecord, caller: Caller) -> Response:
    """Store the record as ingestion does (with the requests that arrive with it), and
    answer once it is durable."""
    service = state.service
    new = NewRecord(
        call_session_id=record.callSessionId,
        body=record.push_body(),
        call_start=record.call_start(service.zone),
    )
    results = await state.group_commit.ingest(
        app_id, [new], now=service.clock.now(), account_id=caller.account_id
    )
    service.dispatcher.wake()
    service.metrics.count_ingested(results)
    answer = ParsedBody(records=[new], refusals=[]).answer(results)
    return Response(
        answer.model_dump_json(by_alias=True),
        status_code=status.HTTP_202_ACCEPTED,
        media_type="application/json",
    )


def _read(request: Request, body: bytes) -> dict[str, Any]:
    kind = media_type(request.scope)
    if kind is not None and kind not in MEDIA_TYPES:
        raise UNSUPPORTED
    try:
        return read_cdr(body, kind)
    except UnreadableCdr as exc:
        raise ApiError(400, "invalid_cdr", str(exc)) from None


def _app_of(outcome: MappedCdr, request: Request, variable: str) -> str:
    """The app the CDR names, else the URL's ``appId`` (up to the ``?uuid=`` that
    mod_json_cdr appends to every URL, even one with a query already)."""
    if outcome.app_id is not None:
        return _checked_id(outcome.app_id, variable, BODY)
    in_url = request.query_params.get(APP_QUERY, "").partition("?")[0]
    if in_url:
        return _checked_id(in_url, APP_QUERY, QUERY)
    reason = f"is not set, and the URL has no ?{APP_QUERY}=: one of them must name the app"
    raise invalid([Problem(field=variable, reason=reason)])


def _checked_id(value: str, field: str, where: str) -> str:
    reason = None
    if len(value) > MAX_ID_LENGTH:
        reason = f"must be at most {MAX_ID_LENGTH} characters"
    else:
        try:
            check_printable(value)
        except ValueError as exc:
            reason = str(exc)
    if reason is not None:
        raise invalid([Problem(field=field, reason=reason)], where)
    return value


async def _authenticate(request: Request) -> Caller:
    """The API's authentication (its rate limits and counts of failures included) of the
    key presented as a Basic password or a bearer token."""
    try:
        return await authenticate(_with_bearer(request, presented_key(request)))
    except ApiError as exc:
        if exc.status == status.HTTP_401_UNAUTHORIZED:
            raise UNAUTHORIZED from None
        raise


def presented_key(request: Request) -> str:
    """The key of ``Authorization: Bearer <key>`` or ``Basic base64(<name>:<key>)`` (the
    name is not read: mod_json_cdr's ``cred`` needs one); empty if none."""
    scheme, _, credentials = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip()
    if scheme.lower() != "basic":
        return ""
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2]


def _with_bearer(request: Request, key: str) -> Request:
    """``request`` as if it carried ``key`` as its bearer token (for ``authenticate``)."""
    headers = [
        (name, value) for name, value in request.scope["headers"] if name != b"authorization"
    ]
    if key:
        headers.append((b"authorization", b"Bearer " + key.encode("utf-8", errors="replace")))
    return Request({**request.scope, "headers": headers})
