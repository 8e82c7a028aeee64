"""Calling the API (and the console beside it) in-process as the operator or as a key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from ccpush.app import create_app
from ccpush.service import Service

ADMIN = "test-admin-token-0123456789abcdef"


class Api:
    """One API app, and a client per token."""

    def __init__(self, service: Service) -> None:
        self.app = create_app(service, admin_token=ADMIN)

    @asynccontextmanager
    async def client(self, token: str = ADMIN) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(self.app),
            base_url="http://ccpush.test",
            headers={"Authorization": f"Bearer {token}"},
        ) as client:
            yield client


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None
