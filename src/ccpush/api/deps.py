"""What the API's requests share (``ApiState``), and the routes' dependencies, as named
``Annotated`` types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from ccpush.api.ingest import GroupCommit
from ccpush.api.limits import RateLimiter, SignInFailures, failure_limiter
from ccpush.service import Service


@dataclass(frozen=True, slots=True)
class ApiState:
    """The service behind the API, its admin token, and the limiters and ingestion queue its
    requests share; kept once on the app (``install_state``), read with ``api_state``."""

    service: Service
    admin_token: str
    key_limiter: RateLimiter
    """Requests per second of each token or key."""
    auth_failures: SignInFailures
    """Failed sign-ins of each client address and each invalid credential."""
    group_commit: GroupCommit
    """Ingestion's records waiting for their commit."""

    @classmethod
    def build(cls, service: Service, admin_token: str) -> ApiState:
        settings = service.settings
        return cls(
            service=service,
            admin_token=admin_token,
            key_limiter=RateLimiter(settings.key_rate_limit, 2 * settings.key_rate_limit),
            auth_failures=failure_limiter(settings.auth_failure_limit),
            group_commit=GroupCommit(service.store, max_queued=settings.max_queued_records),
        )


def install_state(app: FastAPI, state: ApiState) -> None:
    """Keep ``state`` on ``app``, where ``api_state`` finds it for the app's requests."""
    app.state.ccpush = state


def state_of(app: FastAPI) -> ApiState:
    state: ApiState = app.state.ccpush
    return state


def api_state(request: Request) -> ApiState:
    """The state of the app serving ``request`` (a plain attribute read: ingestion uses it)."""
    state: ApiState = request.app.state.ccpush
    return state


def get_service(request: Request) -> Service:
    return api_state(request).service


ServiceDep = Annotated[Service, Depends(get_service)]
