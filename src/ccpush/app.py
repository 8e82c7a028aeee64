"""The application ``ccpush serve`` serves: the API, and the web console mounted beside it.

It sits above ``ccpush.api`` and ``ccpush.web``: the console uses the API's callers and
limiters, so ``ccpush.web`` imports from ``ccpush.api``, never the other way round.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from ccpush.api import create_api
from ccpush.api.deps import state_of
from ccpush.service import Service
from ccpush.web import create_console

CONSOLE_PATH = "/console"


def create_app(service: Service, *, admin_token: str) -> FastAPI:
    """The API with the console at ``/console``, sharing its state (service, admin token,
    limiters); the caller starts and stops ``service`` around it."""
    app = create_api(service, admin_token=admin_token)
    app.mount(CONSOLE_PATH, create_console(state_of(app)), name="console")
    app.add_api_route("/", _to_console, include_in_schema=False)
    return app


async def _to_console() -> RedirectResponse:
    return RedirectResponse(CONSOLE_PATH + "/")
