"""``Idempotency-Key``: a request sent again with the same key gets the first one's answer.

Routes declared with ``idempotent_post`` (those that create or send something) honour the
header. The first request with a key holds it while it runs; its answer, if a success
(2xx), is kept for ``KEPT_FOR`` and given again, status and body, to the same request
with the same key. Until it answers, the same request is refused (409
``idempotency_key_in_use``, Retry-After); another request (method, path or body) with a
key in use or kept is refused too (409 ``idempotency_key_reused``). An answer that is not
a success is not kept: such a request changed nothing, and the key is free again.

Keys are the caller's own (``Caller.identity``): one caller cannot reach another's
answers. They are kept in the store, so they hold across processes sharing it; answers
are sealed for the caller's token (``ccpush.api.sealing``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Annotated, Any, Final, TypeVar

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.routing import APIRoute
from pydantic import AfterValidator

from ccpush.api.auth import AnyCaller, bearer_token
from ccpush.api.deps import api_state
from ccpush.api.errors import ApiError
from ccpush.api.schemas import ErrorOut
from ccpush.api.sealing import seal, unseal
from ccpush.errors import StoreError
from ccpush.record import Problem
from ccpush.store.base import IdempotentRequest

log = logging.getLogger(__name__)

HEADER: Final = "Idempotency-Key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
REPLAYED: Final = {REPLAYED_HEADER: "true"}
"""The header of an answer given again."""
KEPT_FOR: Final = timedelta(hours=24)
HELD_FOR: Final = timedelta(minutes=2)
"""How long a request without an answer holds its key: past it (its process died, or the
store failed as it let go), the key may be taken again."""
MAX_KEY_LENGTH: Final = 255
IN_USE_RETRY_AFTER: Final = "1"


def check_key(value: str | None) -> str | None:
    if value is not None and not (value.isascii() and value.isprintable()):
        raise ValueError("must be printable ASCII characters (a random UUID, say)")
    return value


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=HEADER,
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        description="Send the request again with the same key to get its first answer"
        " (kept 24 h) instead of doing it twice",
    ),
    AfterValidator(check_key),
]


class Verdict(Enum):
    """What a request gets when another one with its key holds or answered it."""

    ANSWER_AGAIN = "answer again"
    IN_USE = "in use"
    OTHER_REQUEST = "other request"


def verdict(held: IdempotentRequest, fingerprint: str) -> Verdict:
    if held.fingerprint != fingerprint:
        return Verdict.OTHER_REQUEST
    return Verdict.IN_USE if held.status is None else Verdict.ANSWER_AGAIN


def fingerprint_of(method: str, path: str, body: bytes) -> str:
    """What a request asks, hashed: its method, path and body (a JSON body as data:
    spacing and the order of keys do not count)."""
    digest = hashlib.sha256(f"{method} {path}\n".encode())
    digest.update(_canonical(body))
    return digest.hexdigest()


def _canonical(body: bytes) -> bytes:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return body
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Holding:
    """The key this request holds, and the token its answer is sealed for."""

    request: IdempotentRequest
    token: str = field(repr=False)


class AnsweredBefore(Exception):
    """The request was answered before: ``IdempotentRoute`` gives ``response`` again."""

    def __init__(self, response: Response) -> None:
        super().__init__("answered before")
        self.response = response


async def hold_key(request: Request, caller: AnyCaller, key: IdempotencyKey = None) -> None:
    """Take the request's key before its route runs (see the module's description)."""
    if key is None:
        return
    service = api_state(request).service
    now = service.clock.now()
    mine = await _asking(request, caller.identity, key, now)
    held = await service.store.claim_idempotency_key(mine, now=now)
    if held is None:
        request.state.idempotency = Holding(mine, bearer_token(request))
        return
    found = verdict(held, mine.fingerprint)
    if found is Verdict.IN_USE:
        raise _in_use()
    if found is Verdict.OTHER_REQUEST:
        raise _reused()
    raise AnsweredBefore(_answer_again(held, bearer_token(request)))


async def _asking(request: Request, caller: str, key: str, now: datetime) -> IdempotentRequest:
    """What ``request`` asks, to hold ``key`` of ``caller`` from ``now``."""
    return IdempotentRequest(
        caller=caller,
        key=key,
        fingerprint=fingerprint_of(request.method, request.url.path, await request.body()),
        holder=secrets.token_hex(16),
        held_until=now + HELD_FOR,
        expires_at=now + KEPT_FOR,
    )


def _answer_again(held: IdempotentRequest, token: str) -> Response:
    answer = unseal(token, held.answer or b"")
    if answer is None or held.status is None:  # sealed for another token (a new admin token)
        raise _reused()
    return Response(
        answer, status_code=held.status, media_type="application/json", headers=REPLAYED
    )


def _in_use() -> ApiError:
    return ApiError(
        409,
        "idempotency_key_in_use",
        f"a request with this {HEADER} is still running: send it again once it has answered",
        headers={"Retry-After": IN_USE_RETRY_AFTER},
    )


def _reused() -> ApiError:
    reason = (
        "was sent with another request (method, path, body or token) in the last 24 hours:"
        " a new request needs a new key"
    )
    return ApiError(
        409,
        "idempotency_key_reused",
        f"this {HEADER} belongs to another request",
        [Problem(field=HEADER, reason=reason)],
    )


class IdempotentRoute(APIRoute):
    """A route that keeps the answer of a request holding its key (``hold_key``), gives a
    kept answer again, and frees the key of a request that did not succeed."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response: Response = await handler(request)
            except AnsweredBefore as answered:
                return answered.response
            except BaseException:
                await _let_go(request)
                raise
            if 200 <= response.status_code < 300:
                await _keep(request, response)
            else:
                await _let_go(request)
            return response

        return handle


def _holding(request: Request) -> Holding | None:
    holding: Holding | None = getattr(request.state, "idempotency", None)
    return holding


async def _keep(request: Request, response: Response) -> None:
    holding = _holding(request)
    if holding is None:
        return
    store = api_state(request).service.store
    try:
        await store.answer_idempotent_request(
            holding.request,
            status=response.status_code,
            answer=seal(holding.token, bytes(response.body)),
        )
    except StoreError as exc:  # the request succeeded: answer it all the same
        key = holding.request.key
        log.warning("the answer of a request with %s %r was not kept: %s", HEADER, key, exc)


async def _let_go(request: Request) -> None:
    holding = _holding(request)
    if holding is None:
        return
    try:
        await api_state(request).service.store.release_idempotency_key(holding.request)
    except StoreError as exc:  # the key is free again once its hold ends
        log.warning("%s %r was not let go: %s", HEADER, holding.request.key, exc)


Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

IN_USE_RESPONSE: Final = (
    f"The {HEADER} is held by a request still running (idempotency_key_in_use, see"
    " Retry-After) or was sent with another request (idempotency_key_reused)"
)


def idempotent_post(router: APIRouter, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
    """``router.post(path, **options)`` for a route that honours ``Idempotency-Key``."""
    responses = dict(options.pop("responses", {}))
    conflict = responses.get(409, {}).get("description")
    responses[409] = {
        "model": ErrorOut,
        "description": IN_USE_RESPONSE + (f"; or: {conflict}" if conflict else ""),
    }

    def register(endpoint: Endpoint) -> Endpoint:
        router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            route_class_override=IdempotentRoute,
            dependencies=[Depends(hold_key), *options.pop("dependencies", [])],
            responses=responses,
            **options,
        )
        return endpoint

    return register
