"""The API's request bodies are JSON, read strictly (``ccpush.strict_json``), before any
route sees them: a body that is not strict JSON answers 400 ``invalid_json`` naming the
problem.

A body must come as ``application/json`` (any ``charset`` parameter: the bytes must be
UTF-8 all the same) or with no content type at all; anything else is a 415. A body then
goes through ``load_json``, so that every route refuses alike (400 ``invalid_json``) what
plain ``json.loads`` would let through (a key given twice, ``NaN``, bytes that are not
UTF-8...). Ingestion reads its body with ``load_json`` itself, so its body is not read
twice here (``parses`` says which requests are read here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ccpush.api.errors import ApiError
from ccpush.strict_json import JsonRefused, loads_bytes

JSON_MEDIA_TYPE: Final = "application/json"
BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
UNSUPPORTED = ApiError(
    415,
    "unsupported_media_type",
    f"the request body must be JSON, sent with Content-Type: {JSON_MEDIA_TYPE}",
)


class StrictJson:
    """ASGI middleware: the rules above, for the requests ``applies`` says are the API's."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        applies: Callable[[Scope], bool],
        parses: Callable[[Scope], bool],
    ) -> None:
        self.app = app
        self.applies = applies
        self.parses = parses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _has_body(scope) or not self.applies(scope):
            await self.app(scope, receive, send)
            return
        messages, body = await _read(receive)
        if messages[-1]["type"] != "http.request":  # the client went away: nothing to check
            await self.app(scope, _replay(messages, receive), send)
            return
        refusal = self._refusal(scope, body)
        if refusal is not None:
            await refusal.response()(scope, receive, send)
            return
        if body and media_type(scope) is None:  # what FastAPI needs to read it as JSON
            headers = [*scope["headers"], (b"content-type", JSON_MEDIA_TYPE.encode())]
            scope = {**scope, "headers": headers}
        await self.app(scope, _replay(messages, receive), send)

    def _refusal(self, scope: Scope, body: bytes) -> ApiError | None:
        if not body:
            return None  # nothing to read: a route that needs a body says it is missing
        if media_type(scope) not in (None, JSON_MEDIA_TYPE):
            return UNSUPPORTED
        if self.parses(scope):
            try:
                load_json(body)
            except ApiError as exc:
                return exc
        return None


def media_type(scope: Scope) -> str | None:
    """The request's media type, lowercase, without parameters; None if it has none."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            media = value.decode("latin-1").partition(";")[0].strip().lower()
            return media or None
    return None


def _has_body(scope: Scope) -> bool:
    return scope["type"] == "http" and scope["method"] in BODY_METHODS


async def _read(receive: Receive) -> tuple[list[Message], bytes]:
    """The messages of the request body, and the body; stops at any other message (the
    client went away)."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return messages, b"".join(chunks)


def _replay(messages: list[Message], then: Receive) -> Receive:
    async def receive() -> Message:
        return messages.pop(0) if messages else await then()

    return receive


def load_json(body: bytes) -> Any:
    """The body's JSON value, or ``ApiError(400)`` saying what is wrong with it."""
    try:
        return loads_bytes(body, "the request body")
    except JsonRefused as exc:
        raise ApiError(400, "invalid_json", str(exc)) from None
