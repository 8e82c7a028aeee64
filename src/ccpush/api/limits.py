"""Limits on what one client may send: body sizes, request rates, failed sign-ins.

Rates are counted in each process; with several ``ccpush serve`` processes behind a load
balancer, each allows the configured rate.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

Now = Callable[[], float]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per name: ``rate`` a second, bursts of ``burst``."""

    def __init__(self, rate: float, burst: float, *, now: Now = time.monotonic, size: int = 10_000):
        self.rate = rate
        self.burst = burst
        self.now = now
        self.size = size
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, name: str) -> float | None:
        """None if ``name`` may go on; else the seconds until it may."""
        if self.rate <= 0:
            return None
        now = self.now()
        bucket = self._buckets.pop(name, None) or _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        self._buckets[name] = bucket
        if len(self._buckets) > self.size:
            self._buckets.popitem(last=False)
        if bucket.tokens < 1:
            return (1 - bucket.tokens) / self.rate
        bucket.tokens -= 1
        return None

    def peek(self, name: str) -> float | None:
        """Like ``take`` without using a token: whether ``name`` is out of tokens now."""
        bucket = self._buckets.get(name)
        if self.rate <= 0 or bucket is None:
            return None
        tokens = min(self.burst, bucket.tokens + (self.now() - bucket.updated) * self.rate)
        return None if tokens >= 1 else (1 - tokens) / self.rate


class SignInFailures:
    """Failed sign-ins, counted only once a token has been checked and found invalid: a valid
    token is never refused for failures, whoever else failed from its address.

    Each failure counts against the client's address and against the presented credential
    (its SHA-256), so a bad key sent from many addresses is slowed too. Past either limit the
    answer is 429 instead of 401; it is only ever given to an invalid token.

    What a flood of invalid tokens may cost the store is bounded without refusing a valid
    one. A credential past its own limit is refused from memory, without a lookup: it
    failed, and keys are generated (never chosen), so it cannot have become valid. From an
    address past its limit, keys are looked up one at a time (``queues``): a flood of
    fresh invalid keys waits on itself instead of filling the store; keys this process has
    seen valid skip that queue, and a valid key it has not seen waits its turn and gets in.
    """

    def __init__(self, per_minute: int, *, now: Now = time.monotonic, remembered: int = 10_000):
        self.by_address = RateLimiter(per_minute / 60, per_minute, now=now)
        self.by_credential = RateLimiter(per_minute / 60, per_minute, now=now)
        self.remembered = remembered
        self._valid: OrderedDict[str, None] = OrderedDict()
        self._suspect_lookups = asyncio.Semaphore(1)

    def known_bad(self, credential: str) -> bool:
        """Whether ``credential`` failed past its limit: invalid, without asking the store."""
        return self.by_credential.peek(credential) is not None

    def queues(self, address: str, credential: str) -> bool:
        """Whether looking ``credential`` up waits for the one-at-a-time slot: it comes from
        an address past its limit and has not been seen valid."""
        return self.by_address.peek(address) is not None and credential not in self._valid

    def lookup_slot(self, address: str, credential: str) -> AbstractAsyncContextManager[Any]:
        """What to hold while the store looks ``credential`` up (see ``queues``)."""
        return self._suspect_lookups if self.queues(address, credential) else nullcontext()

    def failed(self, address: str, credential: str | None) -> float | None:
        """Count an invalid token (``credential`` None: none was sent). None: answer 401;
        else answer 429 with this many seconds to wait."""
        waits = [self.by_address.take(address)]
        if credential is not None:
            self._valid.pop(credential, None)
            waits.append(self.by_credential.take(credential))
        return max((wait for wait in waits if wait is not None), default=None)

    def succeeded(self, credential: str) -> None:
        """Remember a valid credential: its lookups never wait behind a flood."""
        self._valid[credential] = None
        self._valid.move_to_end(credential)
        if len(self._valid) > self.remembered:
            self._valid.popitem(last=False)


def failure_limiter(per_minute: int, *, now: Now = time.monotonic) -> SignInFailures:
    """Failed sign-ins: ``per_minute`` in a burst, refilled over a minute; 0: no limit."""
    return SignInFailures(per_minute, now=now)


class BodyLimit:
    """ASGI middleware: refuse (413) a request body over its limit before the app reads it."""

    def __init__(self, app: ASGIApp, *, limit_for: Callable[[Scope], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(send, limit)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], then=receive), send)


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


async def _too_large(send: Send, limit: int) -> None:
    error = {"code": "body_too_large", "message": f"the request body is larger than {limit} bytes"}
    body = json.dumps({"error": {**error, "problems": []}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})
