"""Malformed requests, on every route and both backends: each is a 4xx naming the problem
(never a 5xx, never a 503 to retry), and nothing of it is stored."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from ccpush.api.errors import ApiError, install_error_handlers
from ccpush.api.params import (
    INT64_MAX,
    encode_cursor,
    id_cursor,
    parse_time,
    sequence_cursor,
    time_cursor,
)
from ccpush.api.schemas import check_printable, check_push_url
from ccpush.clock import ManualClock
from ccpush.errors import StoreError, StoreRefusedValue
from ccpush.models import DeliveryState
from ccpush.service import Service
from tests.api_client import Api, ok
from tests.conftest import BACKENDS, drop_schema, minimal_record, store_url
from tests.helpers import make_service

NUL, DEL = "%00", "%7F"
LONG_ID = "x" * 129
DEEP = b'{"name": ' + b"[" * 40 + b"]" * 40 + b"}"
"""Nested deeper than any body of the API: refused by the model, naming the field."""
ABYSS = b'{"name": ' + b"[" * 5000 + b"]" * 5000 + b"}"
"""Nested deeper than the JSON reader goes: not JSON the API reads."""
GIANT = b"9" * 5000
"""An integer of more digits than Python reads."""
TEXT = {"Content-Type": "text/plain"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}
BODY, QUERY, PATH = "request body", "query parameters", "path parameters"
HEADERS = "headers"


def cursor_of(raw: str) -> str:
    """A cursor holding any JSON text, as a client might forge one."""
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@dataclass(frozen=True)
class Bad:
    """One malformed request and the answer it must get."""

    method: str
    path: str
    status: int
    code: str
    field: str | None
    """The first problem's field; None: an error without problems."""
    where: str | None = None
    """Where the message says the problems are (``BODY``, ``QUERY``, ``PATH``)."""
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


def body(method: str, path: str, data: Any, problem: str) -> Bad:
    return Bad(method, path, 422, "invalid_request", problem, BODY, json=data)


def raw(method: str, path: str, content: bytes, headers: dict[str, str] | None = None) -> Bad:
    """A body that is not strict JSON: 400 ``invalid_json``."""
    return Bad(method, path, 400, "invalid_json", None, content=content, headers=headers or JSON)


def typed(method: str, path: str, headers: dict[str, str]) -> Bad:
    """A JSON body sent as another media type: 415."""
    return Bad(method, path, 415, "unsupported_media_type", None, content=b"{}", headers=headers)


def query(path: str, params: dict[str, Any], problem: str) -> Bad:
    return Bad("GET", path, 422, "invalid_request", problem, QUERY, params=params)


def idempotent(path: str, data: Any, key: str) -> Bad:
    """A POST with an Idempotency-Key that is not one."""
    return Bad(
        "POST",
        path,
        422,
        "invalid_request",
        "Idempotency-Key",
        HEADERS,
        json=data,
        headers={"Idempotency-Key": key},
    )


def in_path(method: str, path: str, problem: str, data: Any = None) -> Bad:
    return Bad(method, path, 422, "invalid_request", problem, PATH, json=data)


APPS = "/v1/apps"
APP = "/v1/apps/{app}"
ACCOUNT_KEYS = "/v1/accounts/{account}/keys"
RECORDS = "/v1/apps/{app}/call-records"
LOG = "/v1/apps/{app}/deliveries"
REPLAYS = "/v1/apps/{app}/replays"
RANGE = {"from": "2023-01-01 00:00:00", "to": "2024-01-01 00:00:00"}

ROWS: dict[str, Bad] = {
    # accounts
    "account-name-nul": body("POST", "/v1/accounts", {"name": "a\x00b"}, "name"),
    "account-name-del": body("POST", "/v1/accounts", {"name": "a\x7fb"}, "name"),
    "account-name-newline": body("POST", "/v1/accounts", {"name": "a\nb"}, "name"),
    "account-name-empty": body("POST", "/v1/accounts", {"name": ""}, "name"),
    "account-name-201": body("POST", "/v1/accounts", {"name": "n" * 201}, "name"),
    "account-name-number": body("POST", "/v1/accounts", {"name": 7}, "name"),
    "account-name-surrogate": Bad(
        "POST",
        "/v1/accounts",
        422,
        "invalid_request",
        "name",
        BODY,
        content=b'{"name": "a\\ud800"}',
        headers=JSON,
    ),
    "account-extra-field": body("POST", "/v1/accounts", {"name": "a", "admin": True}, "admin"),
    "account-body-array": body("POST", "/v1/accounts", [], "(body)"),
    "account-no-body": Bad("POST", "/v1/accounts", 422, "invalid_request", "(body)", BODY),
    "account-huge-int": body("POST", "/v1/accounts", {"name": 2**64}, "name"),
    "account-giant-int": raw("POST", "/v1/accounts", b'{"name": ' + GIANT + b"}"),
    "account-duplicate-key": raw("POST", "/v1/accounts", b'{"name": "a", "name": "b"}'),
    "account-nan": raw("POST", "/v1/accounts", b'{"name": NaN}'),
    "account-infinity": raw("POST", "/v1/accounts", b'{"name": -Infinity}'),
    "account-deep": Bad(
        "POST", "/v1/accounts", 422, "invalid_request", "name", BODY, content=DEEP, headers=JSON
    ),
    "account-abyss": raw("POST", "/v1/accounts", ABYSS),
    "account-not-utf8": raw("POST", "/v1/accounts", b'{"name": "\xff\xfe"}'),
    "account-not-utf8-charset": raw(
        "POST",
        "/v1/accounts",
        b'{"name": "\xe9"}',
        {"Content-Type": "application/json; charset=latin-1"},
    ),
    "account-text-plain": typed("POST", "/v1/accounts", TEXT),
    "account-form": typed("POST", "/v1/accounts", FORM),
    "account-get-nul": in_path("GET", "/v1/accounts/a" + NUL, "account_id"),
    "account-get-long": in_path("GET", "/v1/accounts/" + LONG_ID, "account_id"),
    # keys of an account
    "key-name-nul": body("POST", ACCOUNT_KEYS, {"name": "k\x00"}, "name"),
    "key-name-tab": body("POST", ACCOUNT_KEYS, {"name": "k\tk"}, "name"),
    "key-scope-unknown": body("POST", ACCOUNT_KEYS, {"name": "k", "scope": "root"}, "scope"),
    "key-create-bad-account": in_path(
        "POST", "/v1/accounts/a" + DEL + "/keys", "account_id", {"name": "k"}
    ),
    "key-list-bad-account": in_path("GET", "/v1/accounts/" + LONG_ID + "/keys", "account_id"),
    "key-revoke-nul": in_path("DELETE", ACCOUNT_KEYS + "/k" + NUL, "key_id"),
    "key-revoke-long": in_path("DELETE", ACCOUNT_KEYS + "/" + LONG_ID, "key_id"),
    "key-text-plain": typed("POST", ACCOUNT_KEYS, TEXT),
    "key-abyss": raw("POST", ACCOUNT_KEYS, ABYSS),
    # platform keys
    "platform-key-name-201": body("POST", "/v1/platform-keys", {"name": "p" * 201}, "name"),
    "platform-key-name-cr": body("POST", "/v1/platform-keys", {"name": "p\rp"}, "name"),
    "platform-key-duplicate-key": raw(
        "POST", "/v1/platform-keys", b'{"name": "p", "scope": "ingest", "scope": "manage"}'
    ),
    "platform-key-xml": typed("POST", "/v1/platform-keys", {"Content-Type": "application/xml"}),
    "platform-key-revoke-nul": in_path("DELETE", "/v1/platform-keys/k" + NUL, "key_id"),
    # apps: create
    "app-url-label-64": body(
        "POST", APPS, {"name": "a", "pushUrl": f"https://{'a' * 64}.example.com/"}, "pushUrl"
    ),
    "app-url-unicode-label-64": body(
        "POST", APPS, {"name": "a", "pushUrl": f"https://{'é' * 64}.example.com/"}, "pushUrl"
    ),
    "app-url-host-254": body(
        "POST",
        APPS,
        {"name": "a", "pushUrl": "https://" + ("a" * 50 + ".") * 5 + "com/"},
        "pushUrl",
    ),
    "app-url-nul": body(
        "POST", APPS, {"name": "a", "pushUrl": "https://example.com/\x00"}, "pushUrl"
    ),
    "app-url-host-nul": body(
        "POST", APPS, {"name": "a", "pushUrl": "https://exa\x00mple.com/"}, "pushUrl"
    ),
    "app-url-space": body(
        "POST", APPS, {"name": "a", "pushUrl": "https://example.com/a b"}, "pushUrl"
    ),
    "app-url-ftp": body("POST", APPS, {"name": "a", "pushUrl": "ftp://example.com/"}, "pushUrl"),
    "app-url-no-host": body("POST", APPS, {"name": "a", "pushUrl": "https:///cdr"}, "pushUrl"),
    "app-url-port": body(
        "POST", APPS, {"name": "a", "pushUrl": "https://example.com:99999/"}, "pushUrl"
    ),
    "app-url-fragment": body(
        "POST", APPS, {"name": "a", "pushUrl": "https://example.com/#x"}, "pushUrl"
    ),
    "app-url-2049": body(
        "POST", APPS, {"name": "a", "pushUrl": "https://example.com/" + "p" * 2029}, "pushUrl"
    ),
    "app-url-bad-punycode": body(
        "POST", APPS, {"name": "a", "pushUrl": "https://xn--a.com/"}, "pushUrl"
    ),
    "app-url-open-bracket": body("POST", APPS, {"name": "a", "pushUrl": "http://[::1/"}, "pushUrl"),
    "app-url-empty-label": body(
        "POST", APPS, {"name": "a", "pushUrl": "https://a..example.com/"}, "pushUrl"
    ),
    "app-url-percent-host": body(
        "POST", APPS, {"name": "a", "pushUrl": "https://%41.com/"}, "pushUrl"
    ),
    "app-url-number": body("POST", APPS, {"name": "a", "pushUrl": 80}, "pushUrl"),
    "app-name-nul": body("POST", APPS, {"name": "\x00"}, "name"),
    "app-account-nul": body("POST", APPS, {"name": "a", "accountId": "acc\x00"}, "accountId"),
    "app-account-long": body("POST", APPS, {"name": "a", "accountId": LONG_ID}, "accountId"),
    "app-huge-int": body("POST", APPS, {"name": "a", "paused": 2**64}, "paused"),
    "app-giant-int": raw("POST", APPS, b'{"name": "a", "paused": ' + GIANT + b"}"),
    "app-abyss": raw("POST", APPS, ABYSS),
    "app-not-utf8": raw("POST", APPS, b'{"name": "\xc3"}'),
    "app-text-plain": typed("POST", APPS, TEXT),
    "app-text-json": typed("POST", APPS, {"Content-Type": "text/json"}),
    # apps: change
    "patch-name-null": body("PATCH", APP, {"name": None}, "name"),
    "patch-paused-null": body("PATCH", APP, {"paused": None}, "paused"),
    "patch-paused-word": body("PATCH", APP, {"paused": "yes"}, "paused"),
    "patch-url-label-64": body("PATCH", APP, {"pushUrl": f"http://{'b' * 64}.com/"}, "pushUrl"),
    "patch-url-control": body("PATCH", APP, {"pushUrl": "https://example.com/\x1b"}, "pushUrl"),
    "patch-name-del": body("PATCH", APP, {"name": "x\x7f"}, "name"),
    "patch-extra-field": body("PATCH", APP, {"owner": "me"}, "owner"),
    "patch-bad-id": in_path("PATCH", "/v1/apps/a" + NUL, "app_id", {"name": "x"}),
    "patch-duplicate-key": raw("PATCH", APP, b'{"paused": true, "paused": false}'),
    "patch-text-plain": typed("PATCH", APP, TEXT),
    # apps: one app
    "app-get-long": in_path("GET", "/v1/apps/" + LONG_ID, "app_id"),
    "app-delete-nul": in_path("DELETE", "/v1/apps/a" + NUL, "app_id"),
    "app-pause-nul": in_path("POST", "/v1/apps/a" + NUL + "/pause", "app_id"),
    "app-resume-del": in_path("POST", "/v1/apps/a" + DEL + "/resume", "app_id"),
    "app-test-push-nul": in_path("POST", "/v1/apps/a" + NUL + "/test-push", "app_id"),
    "app-test-push-long": in_path("POST", "/v1/apps/" + LONG_ID + "/test-push", "app_id"),
    "app-rotate-nul": in_path("POST", "/v1/apps/a" + NUL + "/signing-secret/rotate", "app_id"),
    "app-secret-long": in_path("GET", "/v1/apps/" + LONG_ID + "/signing-secret", "app_id"),
    # ingestion: the body as JSON
    "ingest-not-utf8": raw("POST", RECORDS, b'{"callSessionId": "\xff"}'),
    "ingest-abyss": raw("POST", RECORDS, b"[" * 5000 + b"]" * 5000),
    "ingest-duplicate-key": raw(
        "POST", RECORDS, json.dumps(minimal_record("dup"))[:-1].encode() + b', "callType": 3}'
    ),
    "ingest-huge-int": body("POST", RECORDS, minimal_record("big", callType=2**64), "callType"),
    "ingest-giant-int": raw(
        "POST", RECORDS, json.dumps(minimal_record("big"))[:-1].encode() + b', "x": ' + GIANT + b"}"
    ),
    "ingest-text-plain": typed("POST", RECORDS, TEXT),
    "ingest-form": typed("POST", RECORDS, FORM),
    # records by time and by sequence
    "records-from-sequence-2**63": query(RECORDS, {"fromSequence": 2**63}, "fromSequence"),
    "records-from-sequence-0": query(RECORDS, {"fromSequence": 0}, "fromSequence"),
    "records-from-sequence-word": query(RECORDS, {"fromSequence": "one"}, "fromSequence"),
    "records-from-sequence-4000-digits": query(
        RECORDS, {"fromSequence": "9" * 4000}, "fromSequence"
    ),
    "records-to-sequence-10**30": query(RECORDS, {"toSequence": 10**30}, "toSequence"),
    "records-to-before-from": query(RECORDS, {"fromSequence": 5, "toSequence": 4}, "toSequence"),
    "records-sequence-and-time": query(
        RECORDS, {"fromSequence": 1, "from": "2023-01-01 00:00:00"}, "fromSequence"
    ),
    "records-from-year-1": query(RECORDS, {"from": "0001-01-01 00:00:00"}, "from"),
    "records-from-overflow": query(RECORDS, {"from": "9999-12-31T23:59:59-14:00"}, "from"),
    "records-from-1969": query(RECORDS, {"from": "1969-12-31T23:59:59+00:00"}, "from"),
    "records-to-word": query(RECORDS, {"to": "yesterday"}, "to"),
    "records-from-nul": query(RECORDS, {"from": "2023-01-01\x00"}, "from"),
    "records-from-65": query(RECORDS, {"from": "2023-01-01 00:00:00" + " " * 46}, "from"),
    "records-limit-0": query(RECORDS, {"limit": 0}, "limit"),
    "records-limit-2**64": query(RECORDS, {"limit": 2**64}, "limit"),
    "records-cursor-garbage": query(RECORDS, {"cursor": "garbage!"}, "cursor"),
    "records-cursor-nan": query(RECORDS, {"cursor": cursor_of("[NaN, 1]")}, "cursor"),
    "records-cursor-far-time": query(RECORDS, {"cursor": cursor_of("[1e300, 1]")}, "cursor"),
    "records-cursor-id-2**63": query(RECORDS, {"cursor": encode_cursor([0, 2**63])}, "cursor"),
    "records-cursor-bool": query(RECORDS, {"cursor": encode_cursor([True, 1])}, "cursor"),
    "records-cursor-sequence-2**63": query(
        RECORDS, {"fromSequence": 1, "cursor": encode_cursor(2**63)}, "cursor"
    ),
    "records-cursor-sequence-negative": query(
        RECORDS, {"fromSequence": 1, "cursor": encode_cursor(-1)}, "cursor"
    ),
    "records-cursor-sequence-true": query(
        RECORDS, {"fromSequence": 1, "cursor": encode_cursor(True)}, "cursor"
    ),
    "records-cursor-201": query(RECORDS, {"cursor": "A" * 201}, "cursor"),
    "records-cursor-unicode": query(RECORDS, {"cursor": "é"}, "cursor"),
    "records-cursor-deep": query(RECORDS, {"cursor": cursor_of("[" * 60 + "]" * 60)}, "cursor"),
    "records-bad-app": in_path("GET", "/v1/apps/a" + NUL + "/call-records", "app_id"),
    # deliveries of a record, resend
    "deliveries-of-nul": in_path("GET", RECORDS + "/s" + NUL + "/deliveries", "call_session_id"),
    "deliveries-of-long": in_path(
        "GET", RECORDS + "/" + LONG_ID + "/deliveries", "call_session_id"
    ),
    "resend-nul": in_path("POST", RECORDS + "/s" + NUL + "/resend", "call_session_id"),
    "resend-long": in_path("POST", RECORDS + "/" + LONG_ID + "/resend", "call_session_id"),
    "resend-bad-app": in_path("POST", "/v1/apps/" + LONG_ID + "/call-records/s1/resend", "app_id"),
    # the delivery log
    "log-session-nul": query(LOG, {"callSessionId": "s\x00"}, "callSessionId"),
    "log-session-long": query(LOG, {"callSessionId": LONG_ID}, "callSessionId"),
    "log-since-year-0": query(LOG, {"since": "0001-01-01T00:00:00+01:00"}, "since"),
    "log-until-word": query(LOG, {"until": "soon"}, "until"),
    "log-state-unknown": query(LOG, {"state": "pending,lost"}, "state"),
    "log-state-201": query(LOG, {"state": "p" * 201}, "state"),
    "log-cursor-2**63": query(LOG, {"cursor": encode_cursor(2**63)}, "cursor"),
    "log-cursor-0": query(LOG, {"cursor": encode_cursor(0)}, "cursor"),
    "log-cursor-list": query(LOG, {"cursor": encode_cursor([1, 2])}, "cursor"),
    "log-limit-1001": query(LOG, {"limit": 1001}, "limit"),
    # pages of every list
    "apps-limit-0": query(APPS, {"limit": 0}, "limit"),
    "apps-limit-1001": query(APPS, {"limit": 1001}, "limit"),
    "apps-cursor-garbage": query(APPS, {"cursor": "garbage!"}, "cursor"),
    "apps-cursor-number-id": query(APPS, {"cursor": encode_cursor([0, 1])}, "cursor"),
    "apps-cursor-far-time": query(APPS, {"cursor": encode_cursor([2**63, "app_x"])}, "cursor"),
    "accounts-limit-1001": query("/v1/accounts", {"limit": 1001}, "limit"),
    "accounts-cursor-one": query("/v1/accounts", {"cursor": encode_cursor([1])}, "cursor"),
    "account-keys-limit-0": query(ACCOUNT_KEYS, {"limit": 0}, "limit"),
    "platform-keys-cursor-text": query("/v1/platform-keys", {"cursor": "A" * 201}, "cursor"),
    "deliveries-of-limit-1001": query(RECORDS + "/s1/deliveries", {"limit": 1001}, "limit"),
    "deliveries-of-cursor-0": query(
        RECORDS + "/s1/deliveries", {"cursor": encode_cursor(0)}, "cursor"
    ),
    # idempotency keys
    "app-idempotency-key-256": idempotent(APPS, {"name": "x"}, "k" * 256),
    "app-idempotency-key-empty": idempotent(APPS, {"name": "x"}, ""),
    "replay-idempotency-key-256": idempotent(REPLAYS, RANGE, "k" * 256),
    "key-idempotency-key-spaces": idempotent(ACCOUNT_KEYS, {"name": "x"}, " " * 300),
    # replays
    "replay-from-year-1": body(
        "POST", REPLAYS, {"from": "0001-01-01 00:00:00", "to": "2020-01-01 00:00:00"}, "from"
    ),
    "replay-to-year-9999": body(
        "POST", REPLAYS, {"from": "2020-01-01 00:00:00", "to": "9999-12-31 23:59:59"}, "to"
    ),
    "replay-failed-since-1969": body(
        "POST", REPLAYS, {"failedSince": "1969-07-20 20:17:00"}, "failedSince"
    ),
    "replay-from-nul": body("POST", REPLAYS, {**RANGE, "from": "2023-01-01\x00"}, "from"),
    "replay-from-65": body("POST", REPLAYS, {**RANGE, "from": "2" * 65}, "from"),
    "replay-from-number": body("POST", REPLAYS, {**RANGE, "from": 20230101}, "from"),
    "replay-offset-24h": body("POST", REPLAYS, {**RANGE, "to": "2024-01-01T00:00:00+24:00"}, "to"),
    "replay-extra-field": body("POST", REPLAYS, {**RANGE, "all": True}, "all"),
    "replay-huge-int": body("POST", REPLAYS, {**RANGE, "from": 2**63}, "from"),
    "replay-giant-int": raw("POST", REPLAYS, b'{"from": ' + GIANT + b"}"),
    "replay-duplicate-key": raw(
        "POST",
        REPLAYS,
        b'{"from": "2023-01-01 00:00:00", "to": "2024-01-01 00:00:00", "from": "2020"}',
    ),
    "replay-deep": body("POST", REPLAYS, {**RANGE, "to": [[[[[["2024"]]]]]]}, "to"),
    "replay-abyss": raw("POST", REPLAYS, b'{"from": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    "replay-text-plain": typed("POST", REPLAYS, TEXT),
    "replay-bad-app": in_path("POST", "/v1/apps/a" + NUL + "/replays", "app_id", RANGE),
    "replay-get-nul": in_path("GET", REPLAYS + "/r" + NUL, "replay_id"),
    "replay-get-long": in_path("GET", REPLAYS + "/" + LONG_ID, "replay_id"),
}


@dataclass
class World:
    app: str
    account: str
    key: str


async def make_world(admin: httpx.AsyncClient) -> World:
    """An account with a key, a platform key, and an app with two records."""
    account = await ok(await admin.post("/v1/accounts", json={"name": "Acme"}), 201)
    key = await ok(await admin.post(f"/v1/accounts/{account['id']}/keys", json={"name": "k"}), 201)
    await ok(await admin.post("/v1/platform-keys", json={"name": "pbx"}), 201)
    app = await ok(
        await admin.post("/v1/apps", json={"name": "A", "pushUrl": "https://example.com/cdr"}),
        201,
    )
    records = [minimal_record("s1"), minimal_record("s2")]
    await ok(await admin.post(f"/v1/apps/{app['id']}/call-records", json=records), 202)
    return World(app=app["id"], account=account["id"], key=key["id"])


@pytest.fixture
async def world(admin: httpx.AsyncClient) -> World:
    return await make_world(admin)


@dataclass
class Shared:
    service: Service
    admin: httpx.AsyncClient
    world: World


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Shared]:
    """One service per backend for the whole table: no row may change it, and each row
    checks that it did not."""
    tmp_path = tmp_path_factory.mktemp("malformed")
    url, schema = await store_url(request.param, tmp_path)
    service = make_service(tmp_path, url, ManualClock(datetime(2026, 3, 1, 8, tzinfo=UTC)))
    await service.start(dispatch=False)
    try:
        async with Api(service).client() as admin:
            yield Shared(service, admin, await make_world(admin))
    finally:
        await service.stop()
        await drop_schema(schema)


async def stored(service: Service, world: World) -> dict[str, Any]:
    """Everything a malformed request might have changed."""
    store = service.store
    apps = await store.list_apps()
    keys = await store.list_keys(world.account) + await store.list_keys(None)
    return {
        "accounts": sorted((a.id, a.name) for a in await store.list_accounts()),
        "keys": sorted((k.id, k.name, k.scope, k.revoked_at) for k in keys),
        "apps": sorted((a.id, a.name, a.push_url, a.paused, a.signing) for a in apps),
        "secrets": [(await store.signing_keys(a.id)).current for a in apps],
        "records": len(await store.records_by_sequence(world.app, 1, INT64_MAX, 1000)),
        "deliveries": await store.count_by_state(),
    }


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("row", list(ROWS.values()), ids=list(ROWS))
async def test_a_malformed_request_is_a_4xx_naming_the_problem_and_stores_nothing(
    shared: Shared, row: Bad
) -> None:
    service, world = shared.service, shared.world
    before = await stored(service, world)
    path = row.path.format(app=world.app, account=world.account, key=world.key)
    response = await shared.admin.request(
        row.method,
        path,
        params=row.params,
        headers=row.headers,
        **({"content": row.content} if row.content is not None else {"json": row.json}),
    )
    assert response.status_code == row.status, response.text
    error = response.json()["error"]
    assert error["code"] == row.code, error
    problems = error["problems"]
    if row.field is None:
        assert problems == []
    else:
        assert problems[0]["field"] == row.field, problems
        assert problems[0]["reason"]
    if row.where is not None:
        assert error["message"].endswith(f"in the {row.where}"), error["message"]
    assert "Retry-After" not in response.headers
    assert await stored(service, world) == before
    now = service.clock.now()
    assert await service.store.claim_replay(now=now, lease_until=now, owner="t") is None


def test_the_table_covers_enough_requests() -> None:
    assert len(ROWS) >= 80


@pytest.mark.parametrize(
    "headers",
    [{}, {"Content-Type": "application/json; charset=utf-8"}, {"Content-Type": "Application/JSON"}],
    ids=["none", "charset", "case"],
)
async def test_json_is_taken_with_or_without_its_content_type(
    admin: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for path, data, status in [
        ("/v1/apps", b'{"name": "plain"}', 201),
        ("/v1/accounts", b'{"name": "plain"}', 201),
    ]:
        response = await admin.post(path, content=data, headers=headers)
        assert response.status_code == status, response.text
    app = (await admin.get("/v1/apps")).json()["items"][0]["id"]
    record = json.dumps(minimal_record("bare")).encode()
    response = await admin.post(f"/v1/apps/{app}/call-records", content=record, headers=headers)
    assert response.status_code == 202, response.text


async def test_a_post_without_a_body_needs_no_content_type(
    admin: httpx.AsyncClient, world: World
) -> None:
    response = await admin.post(f"/v1/apps/{world.app}/pause", headers=FORM)
    assert (await ok(response))["paused"] is True


async def test_the_ingestion_route_checks_its_own_path(
    admin: httpx.AsyncClient, world: World
) -> None:
    # It reads its path without FastAPI's parameters (the hot route): the same rule applies.
    for app_id in (f"a{NUL}", LONG_ID):
        response = await admin.post(f"/v1/apps/{app_id}/call-records", json=minimal_record("n1"))
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert (error["code"], error["problems"][0]["field"]) == ("invalid_request", "app_id")
        assert "path parameters" in error["message"]
        assert "Retry-After" not in response.headers


async def test_a_replay_at_the_edges_of_the_years_runs(
    admin: httpx.AsyncClient, service: Service, world: World
) -> None:
    edges = {"from": "1970-01-01T00:00:00Z", "to": "2100-12-31T23:59:59Z"}
    job = await ok(await admin.post(f"/v1/apps/{world.app}/replays", json=edges), 202)
    assert await service.replays.run_until_idle() == 1
    done = await ok(await admin.get(f"/v1/apps/{world.app}/replays/{job['id']}"))
    assert (done["state"], done["total"]) == ("done", 2)


async def test_the_largest_sequence_numbers_are_read_not_refused(
    admin: httpx.AsyncClient, world: World
) -> None:
    url = f"/v1/apps/{world.app}/call-records"
    for params in (
        {"fromSequence": INT64_MAX},
        {"fromSequence": 1, "toSequence": INT64_MAX},
        {"fromSequence": 1, "cursor": encode_cursor(INT64_MAX - 1)},
    ):
        page = await ok(await admin.get(url, params=params))
        assert page["nextCursor"] is None
    log = await ok(
        await admin.get(
            f"/v1/apps/{world.app}/deliveries", params={"cursor": encode_cursor(INT64_MAX)}
        )
    )
    assert len(log["items"]) == 2


ZONE = timezone(timedelta(hours=8))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-11-17 13:42:30", datetime(2023, 11, 17, 5, 42, 30, tzinfo=UTC)),
        ("2023-11-17T13:42:30+00:00", datetime(2023, 11, 17, 13, 42, 30, tzinfo=UTC)),
        ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=UTC)),
        ("2100-12-31T23:59:59.999999Z", datetime(2100, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("1970-01-01 07:59:59", None),  # 1969 in UTC
        ("2101-01-01T00:00:00Z", None),
        ("0001-01-01 00:00:00", None),  # before year 1 in UTC
        ("9999-12-31T23:59:59-14:00", None),  # after year 9999 in UTC
        ("2023-02-30 00:00:00", None),
        ("2023-11-17 13:42:30\x00", None),
        ("yesterday", None),
    ],
)
def test_times_are_read_in_utc_within_plausible_years(text: str, expected: datetime | None) -> None:
    if expected is not None:
        assert parse_time(text, "from", ZONE) == expected
        return
    with pytest.raises(ApiError) as caught:
        parse_time(text, "from", ZONE)
    assert caught.value.status == 422
    assert caught.value.body.error.problems[0].field == "from"


@pytest.mark.parametrize(
    ("raw_json", "sequence", "delivery"),
    [
        ("0", 0, None),
        ("1", 1, 1),
        (str(INT64_MAX - 1), INT64_MAX - 1, INT64_MAX - 1),
        (str(INT64_MAX), None, INT64_MAX),
        (str(INT64_MAX + 1), None, None),
        ("-1", None, None),
        ("true", None, None),
        ("1.0", None, None),
        ('"1"', None, None),
        ("[1]", None, None),
        ("null", None, None),
    ],
)
def test_number_cursors_are_64_bit(
    raw_json: str, sequence: int | None, delivery: int | None
) -> None:
    for read, expected in ((sequence_cursor, sequence), (id_cursor, delivery)):
        if expected is not None:
            assert read(cursor_of(raw_json)) == expected
        else:
            with pytest.raises(ApiError):
                read(cursor_of(raw_json))


@pytest.mark.parametrize(
    ("raw_json", "expected"),
    [
        ("[0, 1]", (datetime(1970, 1, 1, tzinfo=UTC), 1)),
        ("[1700000000.5, 7]", (datetime.fromtimestamp(1700000000.5, UTC), 7)),
        ("[-86400, 7]", (datetime(1969, 12, 31, tzinfo=UTC), 7)),
        ("[1e300, 1]", None),
        ("[NaN, 1]", None),
        ("[Infinity, 1]", None),
        ("[0, 0]", None),
        ("[0, 9223372036854775808]", None),
        ("[0, 1, 2]", None),
        ('["0", 1]', None),
        ("[false, 1]", None),
        ("{}", None),
    ],
)
def test_time_cursors_hold_a_time_and_an_id(
    raw_json: str, expected: tuple[datetime, int] | None
) -> None:
    if expected is not None:
        assert time_cursor(cursor_of(raw_json)) == expected
    else:
        with pytest.raises(ApiError):
            time_cursor(cursor_of(raw_json))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("Acme Call Center", None),
        ("Émile & Zoë — 客服", None),
        ("a\x00b", "control character (U+0000 at position 1)"),
        ("\x1f", "control character (U+001F at position 0)"),
        ("ab\x7f", "control character (U+007F at position 2)"),
        ("tab\there", "control character (U+0009 at position 3)"),
        ("a\ud800", "lone surrogate (U+D800 at position 1)"),
        ("a\udfff", "lone surrogate (U+DFFF at position 1)"),
    ],
)
def test_text_refuses_control_characters_and_lone_surrogates(
    value: str, reason: str | None
) -> None:
    if reason is None:
        assert check_printable(value) == value
    else:
        with pytest.raises(ValueError, match=re.escape(reason)):
            check_printable(value)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://example.com/cdr?x=1", None),
        ("http://[::1]:8080/cdr", None),
        ("https://straße.example/cdr", None),
        (f"https://{'a' * 63}.example/", None),
        ("https://" + ("a" * 62 + ".") * 4 + "a/", None),  # 253 characters
        ("https://" + ("a" * 62 + ".") * 4 + "ab/", "longer than 253"),
        (f"https://{'a' * 64}.example/", "label of 64 characters (at most 63)"),
        (f"https://{'é' * 64}.example/", "cannot be written in ASCII"),
        ("https://xn--a.example/", "not valid IDNA"),
        ("https://a..example/", "empty label"),
        ("https://a_b!.example/", "a character no host name may hold"),
        ("https://example.com/\x00", "control character"),
        ("https://example.com/ x", "spaces"),
        ("https://example.com/\u3000", "spaces"),
        ("mailto:a@example.com", "http:// or https://"),
        ("https://example.com:0x50/", "invalid port"),
        ("http://[::1/", "not a valid URL"),
    ],
)
def test_push_addresses_are_checked_in_full(url: str, reason: str | None) -> None:
    if reason is None:
        assert check_push_url(url) == url
    else:
        with pytest.raises(ValueError, match=re.escape(reason)):
            check_push_url(url)


async def test_a_state_filter_stays_valid(admin: httpx.AsyncClient, world: World) -> None:
    page = await ok(
        await admin.get(f"/v1/apps/{world.app}/deliveries", params={"state": "pending"})
    )
    assert {d["state"] for d in page["items"]} == {DeliveryState.PENDING.value}


@pytest.mark.parametrize(
    ("raised", "status", "code"),
    [
        (StoreRefusedValue("DataError: invalid byte sequence"), 422, "invalid_value"),
        (StoreError("ConnectionRefusedError: the database is down"), 503, "store_unavailable"),
    ],
)
async def test_the_api_tells_a_refused_value_from_an_outage(
    raised: StoreError, status: int, code: str
) -> None:
    # Validation keeps refused values from the store; this is the net behind it.
    api = FastAPI()
    install_error_handlers(api)

    @api.get("/store")
    async def store() -> None:
        raise raised

    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://ccpush.test") as client:
        response = await client.get("/store")
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert ("Retry-After" in response.headers) is (status == 503)
