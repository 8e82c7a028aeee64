"""A real HTTP receiver on loopback that records every push and answers as a test tells it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict


@dataclass
class Push:
    method: str
    path: str
    headers: CIMultiDict[str]
    """As HTTP reads them: names in any case (reqwest sends ``Webhook-Id``, aiohttp as given)."""
    body: bytes
    peer: tuple[str, int]

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def session_id(self) -> str:
        return str(self.json["callSessionId"])


@dataclass
class Reply:
    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering (to test timeouts; never used to wait in a test)."""


Responder = Callable[[Push, int], Reply]
"""Decides the reply to a push, given how many times this record was pushed before."""


def always(status: int) -> Responder:
    return lambda push, seen: Reply(status=status)


def fail_first(times: int, status: int = 503) -> Responder:
    return lambda push, seen: Reply(status=status if seen < times else 200)


class Receiver:
    def __init__(self, responder: Responder | None = None) -> None:
        self.responder = responder or always(200)
        self.pushes: list[Push] = []
        self.seen: Counter[str] = Counter()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cdr"

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else ("", 0)
        push = Push(
            method=request.method,
            path=request.path,
            headers=CIMultiDict(request.headers),
            body=await request.read(),
            peer=tuple(peer[:2]),
        )
        key = _key(push)
        reply = self.responder(push, self.seen[key])
        async with self._changed:
            self.pushes.append(push)
            self.seen[key] += 1
            self._changed.notify_all()
        if reply.delay:
            # A slow receiver: answer after the delay, or never if it is stopped first.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=reply.delay)
        return web.Response(status=reply.status, text=reply.body, headers=reply.headers)

    async def wait_for(self, condition: Callable[[Receiver], bool], timeout: float = 10) -> None:
        """Wait until ``condition(self)`` holds; fail the test after ``timeout`` seconds."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: condition(self))

    def sessions(self) -> set[str]:
        return {push.session_id for push in self.pushes}


def _key(push: Push) -> str:
    try:
        return push.session_id
    except (ValueError, KeyError, TypeError):
        return "(not a record)"
