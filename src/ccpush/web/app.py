"""The console's application factory: an ASGI app that ``ccpush.app`` mounts at ``/console``."""

from __future__ import annotations

import math

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ccpush.api.deps import ApiState
from ccpush.errors import NotFound
from ccpush.web.console import (
    Console,
    CsrfRefused,
    ReadOnly,
    SignInRequired,
    TooManyRequests,
    Viewer,
    check_csrf,
    check_writable,
    console_of,
    current_viewer,
)
from ccpush.web.pages import redirect, url_to
from ccpush.web.routes import (
    accounts,
    apps,
    audit,
    deliveries,
    notifications,
    overview,
    platform,
    portal,
    signin,
    signing,
)


def create_console(api: ApiState) -> FastAPI:
    """The console of the API whose state is ``api``: it signs in with the API's admin token
    and keys, and counts requests and failed sign-ins with the API's limiters. Mount it at
    ``/console``."""
    console = FastAPI(
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(check_csrf), Depends(check_writable)],
    )
    console.state.console = Console(api)
    console.mount("/static", StaticFiles(packages=[("ccpush.web", "static")]), name="static")
    for module in (
        signin,
        portal,
        apps,
        signing,
        deliveries,
        overview,
        accounts,
        platform,
        audit,
        notifications,
    ):
        console.include_router(module.router)
    _install_error_pages(console)
    return console


def _install_error_pages(app: FastAPI) -> None:
    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, _: SignInRequired) -> Response:
        return redirect(request, url_to(request, "sign_in_page"))

    @app.exception_handler(CsrfRefused)
    async def _csrf(request: Request, _: CsrfRefused) -> Response:
        message = "This form has expired or did not come from this console. Reload the page."
        return await _error(request, 403, "The form was not accepted", message)

    @app.exception_handler(ReadOnly)
    async def _read_only(request: Request, _: ReadOnly) -> Response:
        message = "This view is read-only: it cannot change anything."
        return await _error(request, 403, "Not allowed", message, await _viewer_or_none(request))

    @app.exception_handler(TooManyRequests)
    async def _rate(request: Request, exc: TooManyRequests) -> Response:
        seconds = max(1, math.ceil(exc.retry_after))
        message = f"Too many requests with this key. Try again in {seconds} s."
        response = await _error(request, 429, "Slow down", message)
        response.headers["Retry-After"] = str(seconds)
        return response

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> Response:
        return await _error(request, 404, "Not found", str(exc), await _viewer_or_none(request))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, _: RequestValidationError) -> Response:
        return await _error(request, 404, "Not found", "There is no such page.")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        title = "Not found" if exc.status_code == 404 else "Not allowed"
        return await _error(request, exc.status_code, title, str(exc.detail))


async def _error(
    request: Request, status: int, title: str, message: str, viewer: Viewer | None = None
) -> Response:
    """An error page in the console's layout (without ccpush's brand in a portal session)."""
    console = console_of(request)
    session = await console.sessions.read(request)
    return console.page(
        request,
        viewer,
        "error.html",
        status=status,
        portal=session is not None and session.portal is not None,
        title=title,
        message=message,
    )


async def _viewer_or_none(request: Request) -> Viewer | None:
    """Who is signed in, to keep the navigation on a 404; None if nobody (or too fast)."""
    try:
        return await current_viewer(request, console_of(request))
    except (SignInRequired, TooManyRequests, NotFound):
        return None
