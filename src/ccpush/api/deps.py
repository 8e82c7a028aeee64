"""Dependencies of the routes, as named ``Annotated`` types."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from ccpush.api.errors import ApiError
from ccpush.service import Service


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def require_admin(request: Request) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    expected: str = request.app.state.admin_token
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        raise ApiError(
            401,
            "unauthorized",
            "a valid bearer token is required (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )


ServiceDep = Annotated[Service, Depends(get_service)]
Admin = Depends(require_admin)
