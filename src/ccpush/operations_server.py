"""``/healthz``, ``/readyz`` and ``/metrics`` on a port of their own: ``ccpush worker``'s
(which serves no API), and ``serve``'s too when ``CCPUSH_METRICS_PORT`` is set.

The routes are the API's (``ccpush.api.routes.operations``), answering for the process's
``Service`` once it has started: until then (the store being opened and its schema brought
up to date) and once it is stopping, ``/healthz`` answers 200 and the others 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

from fastapi import FastAPI

from ccpush.api.deps import get_service
from ccpush.api.errors import ApiError, install_error_handlers
from ccpush.api.routes import operations
from ccpush.http_server import HttpServer, make_server
from ccpush.service import Service
from ccpush.settings import WORKER_METRICS_PORT, Settings

Address = tuple[str, int]


def worker_address(settings: Settings) -> Address:
    """Where a worker answers the probes: ``metrics_host``, on ``metrics_port`` if set, else
    on ``WORKER_METRICS_PORT``."""
    port = settings.metrics_port
    return settings.metrics_host, WORKER_METRICS_PORT if port is None else port


def serve_address(settings: Settings) -> Address | None:
    """Where ``serve`` answers the probes besides its API port: nowhere unless
    ``metrics_port`` is set."""
    port = settings.metrics_port
    return None if port is None else (settings.metrics_host, port)


def listen(address: Address) -> socket.socket:
    """A socket listening on ``address`` (OSError if it cannot: the port is in use...)."""
    sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


class OperationsServer:
    """The probes' HTTP server on ``sock``: ``running()`` serves, ``answering_for(service)``
    lets ``/readyz`` and ``/metrics`` answer for a started service."""

    def __init__(
        self, sock: socket.socket, settings: Settings, *, log_level: str | None = None
    ) -> None:
        self.sock = sock
        self._service: Service | None = None
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
        app.include_router(operations.router)
        app.dependency_overrides[get_service] = self._current_service
        install_error_handlers(app)
        self._server: HttpServer = make_server(app, settings, log_level=log_level)

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def _current_service(self) -> Service:
        if self._service is None:
            raise ApiError(503, "not_running", "the service is starting or stopping")
        return self._service

    @contextlib.contextmanager
    def answering_for(self, service: Service) -> Iterator[None]:
        self._service = service
        try:
            yield
        finally:
            self._service = None

    @contextlib.asynccontextmanager
    async def serving(self, service: Service) -> AsyncIterator[None]:
        """Serve, answering for ``service`` (already started), while in the ``async with``."""
        async with self.running():
            with self.answering_for(service):
                yield

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve while in the ``async with``; the socket is closed after."""
        task = asyncio.create_task(self._server.serve([self.sock]), name="ccpush-operations")
        try:
            yield
        finally:
            self._server.should_exit = True
            await task
            self.sock.close()
