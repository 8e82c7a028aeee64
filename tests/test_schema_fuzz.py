"""schemathesis against the served /openapi.json: every operation, with valid and invalid keys.

Nothing may answer 5xx, and every answer must match what the schema says. The server only
pushes to loopback (``only_allowed_targets``) and resolves no name, so generated push
addresses never reach beyond this machine.

Beside the generated cases, every operation gets the hostile values generators seldom
find, built from its schema: control characters and lengths one past the limit in every
string, integers beyond 64 bits, bodies nested deeper than any of the API's. Each is a 4xx;
a value exactly at its limit is not a 5xx.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
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
        self.ids: dict[str, str] = {}
        """Path parameters naming what the server holds (``app_id``, ``account_id``)."""
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
        app = await service.store.create_app(
            name="seed", push_url=None, now=now, account_id=account.id
        )
        self.ids.update(app_id=app.id, account_id=account.id)


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


SPEC = _served_schema()
INGEST = ("/v1/apps/{app_id}/call-records", "post")
"""Ingestion reads its own body and path: only its body's JSON is tried here."""
DEPTH = 40
"""Deeper than any body of the API nests."""
HUGE = (2**63, -(2**63) - 1, 10**40)


@dataclass(frozen=True)
class Hostile:
    """One request with one hostile (or boundary) value; the rest as the schema wants."""

    path: str
    method: str
    label: str
    refused: bool
    """Must be a 4xx; else (a value at its limit) only not a 5xx."""
    path_parameters: dict[str, str] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


def _resolved(node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    resolved: dict[str, Any] = SPEC["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return resolved


def _branch(node: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The part of a schema that is of JSON type ``kind`` (``anyOf`` of it and null)."""
    node = _resolved(node)
    if node.get("type") == kind:
        return node
    return next((alt for alt in node.get("anyOf", []) if alt.get("type") == kind), None)


def _string_values(name: str, node: dict[str, Any]) -> Iterator[tuple[str, Any, bool]]:
    string = _branch(node, "string")
    if string is None:
        return
    yield f"{name}-control", "a\x00b\x7f", True
    limit = string.get("maxLength")
    if limit is not None:
        yield f"{name}-longer", "x" * (limit + 1), True
        yield f"{name}-longest", "x" * limit, False


def _integer_values(name: str, node: dict[str, Any]) -> Iterator[tuple[str, Any, bool]]:
    integer = _branch(node, "integer")
    if integer is None:
        return
    for number in HUGE:
        yield f"{name}-{'huge' if number > 0 else 'negative'}-{len(str(number))}", number, True
    if "maximum" in integer:
        yield f"{name}-maximum", integer["maximum"], False


def _hostile(path: str, method: str, operation: dict[str, Any]) -> Iterator[Hostile]:
    parameters = operation.get("parameters", [])
    if (path, method) != INGEST:
        for parameter in parameters:
            name, place = parameter["name"], parameter["in"]
            values = [
                *_string_values(name, parameter["schema"]),
                *_integer_values(name, parameter["schema"]),
            ]
            for label, value, refused in values:
                if place == "header" and label.endswith("-control"):
                    continue  # HTTP carries no control character in a header: never sent
                where = {"path": "path_parameters", "header": "headers"}.get(place, "query")
                yield Hostile(path, method, label, refused, **{where: {name: value}})
    schema = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if schema is None:
        return
    if (path, method) == INGEST:
        yield Hostile(path, method, "body-deep", True, body=_nested(DEPTH))
        yield Hostile(path, method, "body-huge", True, body={"callType": 2**64})
        return
    for name, node in _resolved(schema["schema"]).get("properties", {}).items():
        yield Hostile(path, method, f"body-{name}-deep", True, body={name: _nested(DEPTH)})
        yield Hostile(path, method, f"body-{name}-huge", True, body={name: 2**64})
        for label, value, refused in [*_string_values(name, node), *_integer_values(name, node)]:
            yield Hostile(path, method, f"body-{label}", refused, body={name: value})


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


HOSTILE = [
    hostile
    for path, operations in SPEC["paths"].items()
    for method, operation in operations.items()
    for hostile in _hostile(path, method, operation)
]


def test_every_operation_gets_hostile_values() -> None:
    tried = {(hostile.path, hostile.method) for hostile in HOSTILE}
    every = {(path, method) for path, ops in SPEC["paths"].items() for method in ops}
    assert every == tried


@pytest.mark.parametrize(
    "hostile", HOSTILE, ids=[f"{h.method}-{h.path}-{h.label}" for h in HOSTILE]
)
def test_hostile_values_are_refused_with_a_4xx(hostile: Hostile, served: FuzzTarget) -> None:
    operation = schema[hostile.path][hostile.method.upper()]
    names = [p["name"] for p in SPEC["paths"][hostile.path][hostile.method].get("parameters", [])]
    path_parameters = {
        name: served.ids.get(name, "none") for name in names if "{" + name + "}" in hostile.path
    }
    case = operation.Case(
        path_parameters={**path_parameters, **hostile.path_parameters},
        query=hostile.query,
        **({"body": hostile.body, "media_type": "application/json"} if hostile.body else {}),
    )
    response = case.call_and_validate(
        base_url=f"http://127.0.0.1:{served.port}",
        headers={"Authorization": f"Bearer {ADMIN}", **hostile.headers},
        checks=CHECKS,
    )
    if hostile.refused:
        assert 400 <= response.status_code < 500, response.text
