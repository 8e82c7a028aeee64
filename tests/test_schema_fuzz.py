"""schemathesis against the served /openapi.json: every operation, with valid and invalid keys.

Nothing may answer 5xx, and every answer must match what the schema says. The server only
pushes to loopback (``only_allowed_targets``) and resolves no name, so generated push
addresses never reach beyond this machine.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from ccpush.api import create_api
from ccpush.api.auth import hash_secret, new_key_secret
from ccpush.models import KeyScope
from ccpush.service import Service
from tests.api_client import ADMIN
from tests.helpers import make_settings
from tests.served import ServerThread, served_api

pytestmark = pytest.mark.slow
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


class FuzzTarget:
    """What the fuzzed server holds: an account with a key of every scope, and an app."""

    def __init__(self, tmp_path: Path) -> None:
        self.settings = make_settings(
            tmp_path,
            f"sqlite:///{tmp_path / 'fuzz.db'}",
            only_allowed_targets=True,
            key_rate_limit=0,
            auth_failure_limit=0,
        )
        self.tokens: dict[str, str] = {"admin": ADMIN, "invalid": "ccpk_not-a-key"}
        self.port = 0

    async def seed(self, service: Service) -> None:
        now = service.clock.now()
        account = await service.store.create_account(name="fuzz", now=now)
        for scope in KeyScope:
            secret = new_key_secret()
            await service.store.create_key(
                account_id=account.id,
                name=scope.value,
                scope=scope,
                secret_hash=hash_secret(secret),
                prefix=secret[:11],
                now=now,
            )
            self.tokens[scope.value] = secret
        await service.store.create_app(name="seed", push_url=None, now=now, account_id=account.id)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    target = FuzzTarget(tmp_path_factory.mktemp("fuzz"))
    with ServerThread(served_api(target.settings, seed=target.seed)) as server:
        target.port = server.port
        yield target


def _served_schema() -> dict[str, Any]:
    """The schema ``/openapi.json`` serves (built without starting anything)."""
    settings = make_settings(Path("/nonexistent"), "sqlite:///:memory:")
    return create_api(Service(settings), admin_token=ADMIN).openapi()


schema = schemathesis.openapi.from_dict(_served_schema())


def test_the_schema_is_the_one_served(served: FuzzTarget) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/openapi.json") as answer:
        assert json.load(answer) == _served_schema()


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_5xx_and_every_answer_matches_the_schema(
    case: schemathesis.Case, served: FuzzTarget
) -> None:
    for who in ("invalid", "ingest", "manage", "admin"):
        token = served.tokens[who]
        case.call_and_validate(
            base_url=f"http://127.0.0.1:{served.port}",
            headers={"Authorization": f"Bearer {token}"},
            checks=CHECKS,
        )
