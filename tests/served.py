"""Serving an ASGI app over real HTTP on loopback, from a thread with its own event loop.

For code that needs a real address rather than an in-process client: schemathesis, urllib
(``ccpush.receiver.fetch_missing``), or a receiver that ccpush pushes to. The server is the
one ``ccpush serve`` runs (``ccpush.http_server``), within the limits of the settings given.

    with ServerThread(served_api(settings)) as server:
        urllib.request.urlopen(server.url + "/healthz")
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import uvicorn

from ccpush.app import create_app
from ccpush.http_server import HttpServer, server_config
from ccpush.service import Service
from ccpush.settings import Settings
from tests.api_client import ADMIN
from tests.fakedns import FakeDNS

AppFactory = Callable[[], AbstractAsyncContextManager[Any]]
"""Builds the ASGI app inside the server's event loop, and tears it down after."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Server(HttpServer):
    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self.ready = ready
        self.port = 0

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.servers:
            self.port = self.servers[0].sockets[0].getsockname()[1]
        self.ready.set()


class ServerThread:
    """``app_factory``'s app served on 127.0.0.1 (a free port) while in a ``with``, within the
    limits of ``settings`` (default: the defaults), logging warnings only."""

    def __init__(self, app_factory: AppFactory, settings: Settings | None = None) -> None:
        self.app_factory = app_factory
        self.settings = (settings or Settings()).model_copy(
            update={"host": "127.0.0.1", "port": 0, "log_level": "WARNING"}
        )
        self.ready = threading.Event()
        self.server: _Server | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def port(self) -> int:
        assert self.server is not None, "the server is not running"
        assert self.server.port, "the server is not listening"
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc
        finally:
            self.ready.set()

    async def _main(self) -> None:
        async with self.app_factory() as app:
            self.server = _Server(server_config(app, self.settings), self.ready)
            await self.server.serve()

    def __enter__(self) -> ServerThread:
        self.thread.start()
        assert self.ready.wait(30), "the server did not start"
        if self.error is not None or self.server is None or not self.server.port:
            raise RuntimeError("the server did not start") from self.error
        return self

    def __exit__(self, *_: object) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(30)


def served_api(
    settings: Settings,
    *,
    dispatch: bool = True,
    seed: Callable[[Service], Awaitable[None]] | None = None,
) -> AppFactory:
    """ccpush's API on a Service of its own (resolving no name); ``dispatch=False`` serves the
    API only, for a test that pushes with its own Service on the same store."""

    @asynccontextmanager
    async def factory() -> AsyncIterator[Any]:
        service = Service(settings, resolver=FakeDNS({}))
        await service.start(dispatch=dispatch)
        try:
            if seed is not None:
                await seed(service)
            yield create_app(service, admin_token=ADMIN)
        finally:
            await service.stop()

    return factory
