"""An app's own push headers and credentials, end to end on both backends: set through the
API and the console, sent on every push and test push to a real receiver on loopback,
refused when invalid, and never shown, logged or kept in plain text."""

from __future__ import annotations

import base64
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from ccpush.service import Service
from ccpush.store import Store
from ccpush.store.postgres import PostgresStore
from ccpush.store.sqlite import SqliteStore
from tests.api_client import ADMIN, Api, ok
from tests.conftest import minimal_record
from tests.helpers import make_service
from tests.receiver import Receiver
from tests.test_console_http import Console
from tests.test_operator_cli import Cli, served_cli

HEADER_VALUE = "hdr-secret-7f3a91"
PASSWORD = "pw-secret-c41d07"
TOKEN = "tok-secret-99e0b2"


def client_pair() -> tuple[str, str]:
    issued = trustme.CA().issue_cert("ccpush-client.example")
    return issued.cert_chain_pems[0].bytes().decode(), issued.private_key_pem.bytes().decode()


async def new_app(admin: httpx.AsyncClient, url: str, **extra: Any) -> dict[str, Any]:
    body = {"name": "crm", "pushUrl": url, **extra}
    return dict(await ok(await admin.post("/v1/apps", json=body), 201))


async def push_one(admin: httpx.AsyncClient, service: Service, app_id: str, sid: str) -> None:
    await ok(await admin.post(f"/v1/apps/{app_id}/call-records", json=minimal_record(sid)), 202)
    await service.dispatcher.run_until_idle()


async def test_headers_and_credentials_arrive_exactly(
    admin: httpx.AsyncClient, service: Service, receiver: Receiver
) -> None:
    app = await new_app(
        admin,
        receiver.url,
        pushHeaders={"X-Api-Key": HEADER_VALUE, "X-Tenant": "acme"},
        pushAuth={"type": "basic", "username": "alice", "password": PASSWORD},
    )
    await push_one(admin, service, app["id"], "c1")
    basic = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    (first,) = receiver.pushes
    assert first.headers["X-Api-Key"] == HEADER_VALUE
    assert first.headers["X-Tenant"] == "acme"
    assert first.headers.getall("Authorization") == [basic]
    assert first.headers["webhook-signature"].startswith("v1,")  # still signed
    assert first.headers["Content-Type"].startswith("application/json")

    patch = {"pushAuth": {"type": "bearer", "token": TOKEN}}
    await ok(await admin.patch(f"/v1/apps/{app['id']}", json=patch))
    await push_one(admin, service, app["id"], "c2")
    assert receiver.pushes[1].headers.getall("Authorization") == [f"Bearer {TOKEN}"]
    assert receiver.pushes[1].headers["X-Api-Key"] == HEADER_VALUE  # kept: not in the patch

    cleared: dict[str, Any] = {"pushAuth": None, "pushHeaders": {"Authorization": "Token abc"}}
    await ok(await admin.patch(f"/v1/apps/{app['id']}", json=cleared))
    await push_one(admin, service, app["id"], "c3")
    third = receiver.pushes[2]
    assert third.headers.getall("Authorization") == ["Token abc"]
    assert "X-Api-Key" not in third.headers

    await ok(await admin.patch(f"/v1/apps/{app['id']}", json={"pushHeaders": None}))
    await push_one(admin, service, app["id"], "c4")
    assert "Authorization" not in receiver.pushes[3].headers


async def test_reads_show_names_and_kinds_never_values(
    admin: httpx.AsyncClient, receiver: Receiver
) -> None:
    cert, key = client_pair()
    app = await new_app(
        admin,
        receiver.url,
        pushHeaders={"X-Api-Key": HEADER_VALUE},
        pushAuth={"type": "basic", "username": "alice", "password": PASSWORD},
        clientCertificate={"certPem": cert, "keyPem": key},
    )
    read = await ok(await admin.get(f"/v1/apps/{app['id']}"))
    assert read["pushHeaders"] == {"X-Api-Key": "********"}
    assert read["pushAuth"] == {"type": "basic", "username": "alice"}
    assert set(read["clientCertificate"]) == {"subject", "notAfter"}
    assert app == read
    listed = (await ok(await admin.get("/v1/apps")))["items"]
    assert [item for item in listed if item["id"] == app["id"]] == [read]
    await ok(
        await admin.patch(
            f"/v1/apps/{app['id']}", json={"pushAuth": {"type": "bearer", "token": TOKEN}}
        )
    )
    read = await ok(await admin.get(f"/v1/apps/{app['id']}"))
    assert read["pushAuth"] == {"type": "bearer"}
    await ok(await admin.patch(f"/v1/apps/{app['id']}", json={"clientCertificate": None}))
    assert (await ok(await admin.get(f"/v1/apps/{app['id']}")))["clientCertificate"] is None


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"pushHeaders": {"Content-Type": "text/plain"}}, "pushHeaders.Content-Type", "reserved"),
        ({"pushHeaders": {"webhook-id": "x"}}, "pushHeaders.webhook-id", "reserved"),
        ({"pushHeaders": {"CCPush-Test": "x"}}, "pushHeaders.CCPush-Test", "reserved"),
        ({"pushHeaders": {"Bad Name": "x"}}, "pushHeaders.Bad Name", "not a header name"),
        ({"pushHeaders": {"X-Key": "a\r\nInjected: 1"}}, "pushHeaders.X-Key", "no CR, LF"),
        (
            {
                "pushHeaders": {"Authorization": "x"},
                "pushAuth": {"type": "bearer", "token": "t"},
            },
            "pushHeaders.Authorization",
            "pushAuth",
        ),
        (
            {"pushAuth": {"type": "basic", "username": "", "password": "p"}},
            "pushAuth.username",
            "empty",
        ),
        (
            {"clientCertificate": {"certPem": "x", "keyPem": "y"}},
            "clientCertificate.certPem",
            "PEM",
        ),
        ({"pushUrl": "https://user:pass@crm.example.com/cdr"}, "pushUrl", "pushAuth"),
        ({"pushUrl": "https://token@crm.example.com/cdr"}, "pushUrl", "pushAuth"),
    ],
)
async def test_what_is_refused_names_its_field_and_nothing_is_kept(
    admin: httpx.AsyncClient, body: dict[str, Any], field: str, says: str
) -> None:
    app = await new_app(admin, "https://crm.example.com/cdr", pushHeaders={"X-Keep": "1"})
    refused = await admin.patch(f"/v1/apps/{app['id']}", json=body)
    assert refused.status_code == 422, refused.text
    problems = {p["field"]: p["reason"] for p in refused.json()["error"]["problems"]}
    assert says in problems[field], problems
    assert await ok(await admin.get(f"/v1/apps/{app['id']}")) == app
    created = await admin.post("/v1/apps", json={"name": "n", **body})
    assert created.status_code == 422
    names = [a["name"] for a in (await ok(await admin.get("/v1/apps")))["items"]]
    assert names == ["crm"]


async def test_the_test_push_uses_them_and_says_which_applied(
    admin: httpx.AsyncClient, receiver: Receiver
) -> None:
    app = await new_app(
        admin,
        receiver.url,
        pushHeaders={"X-Api-Key": HEADER_VALUE, "X-Tenant": "acme"},
        pushAuth={"type": "bearer", "token": TOKEN},
    )
    answer = await ok(await admin.post(f"/v1/apps/{app['id']}/test-push"))
    assert answer["delivered"] is True
    assert answer["applied"] == {
        "headerNames": ["X-Api-Key", "X-Tenant"],
        "auth": "bearer",
        "clientCertificate": False,
        "proxy": False,
    }
    (test,) = receiver.pushes
    assert test.headers["ccpush-test"] == "true"
    assert test.headers["X-Api-Key"] == HEADER_VALUE
    assert test.headers["Authorization"] == f"Bearer {TOKEN}"
    plain = await new_app(admin, receiver.url)
    answer = await ok(await admin.post(f"/v1/apps/{plain['id']}/test-push"))
    assert answer["applied"]["headerNames"] == []
    assert answer["applied"]["auth"] is None
    assert answer["applied"]["clientCertificate"] is False
    cert, key = client_pair()
    patch = {"clientCertificate": {"certPem": cert, "keyPem": key}}
    await ok(await admin.patch(f"/v1/apps/{plain['id']}", json=patch))
    answer = await ok(await admin.post(f"/v1/apps/{plain['id']}/test-push"))
    assert answer["delivered"] is True
    assert answer["applied"]["clientCertificate"] is True


async def test_the_console_shows_names_and_sets_them(service: Service, receiver: Receiver) -> None:
    api = Api(service)
    async with (
        api.client() as admin,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(api.app), base_url="http://ccpush.test"
        ) as browser,
    ):
        app = await new_app(admin, receiver.url)
        console = Console(browser)
        await console.sign_in(ADMIN)
        await console.get(f"/apps/{app['id']}")
        saved = await console.post(
            f"/apps/{app['id']}/push-headers", {"headers": f"X-Api-Key: {HEADER_VALUE}\nX-Two: 2"}
        )
        assert saved.status_code == 303, saved.text
        await console.get(f"/apps/{app['id']}")
        form = {"type": "basic", "username": "alice", "password": PASSWORD, "token": ""}
        assert (await console.post(f"/apps/{app['id']}/push-auth", form)).status_code == 303
        page = await console.get(f"/apps/{app['id']}")
        assert "X-Api-Key" in page
        assert "X-Two" in page
        assert "alice" in page
        assert HEADER_VALUE not in page
        assert PASSWORD not in page
        refused = await console.post(f"/apps/{app['id']}/push-headers", {"headers": "Host: x"})
        assert refused.status_code == 422
        assert "pushHeaders.Host is reserved" in refused.text
        refused = await console.post(
            f"/apps/{app['id']}/address", {"push_url": "https://u:p@crm.example.com/"}
        )
        assert refused.status_code == 422
        assert "pushAuth" in refused.text
        answer = await ok(await admin.post(f"/v1/apps/{app['id']}/test-push"))
        assert answer["applied"]["headerNames"] == ["X-Api-Key", "X-Two"]
        (test,) = receiver.pushes
        assert test.headers["X-Api-Key"] == HEADER_VALUE
        assert test.headers["Authorization"].startswith("Basic ")


async def test_no_secret_in_logs_attempts_reads_console_or_the_database(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cert, key = client_pair()
    key_body = key.splitlines()[1]
    api = Api(service)
    async with (
        api.client() as admin,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(api.app), base_url="http://ccpush.test"
        ) as browser,
    ):
        app = await new_app(
            admin,
            f"http://127.0.0.1:{closed_port()}/cdr",  # refused: every attempt fails
            pushHeaders={"X-Api-Key": HEADER_VALUE},
            pushAuth={"type": "basic", "username": "alice", "password": PASSWORD},
            clientCertificate={"certPem": cert, "keyPem": key},
        )
        signing = (await ok(await admin.get(f"/v1/apps/{app['id']}/signing-secret")))["secret"]
        rotated = await admin.post(f"/v1/apps/{app['id']}/signing-secret/rotate")
        previous = signing
        signing = (await ok(rotated))["secret"]
        await push_one(admin, service, app["id"], "s1")
        await ok(await admin.post(f"/v1/apps/{app['id']}/test-push"))
        secrets = [HEADER_VALUE, PASSWORD, key_body, signing, previous]
        shown = [
            await ok(await admin.get(f"/v1/apps/{app['id']}")),
            await ok(await admin.get("/v1/apps")),
            await ok(await admin.get(f"/v1/apps/{app['id']}/deliveries")),
            (await admin.get("/metrics")).text,
        ]
        console = Console(browser)
        await console.sign_in(ADMIN)
        shown.append(await console.get(f"/apps/{app['id']}"))
        shown.append(await console.get(f"/apps/{app['id']}/deliveries"))
    deliveries = shown[2]["items"]
    assert deliveries[0]["attemptLog"][0]["error"]  # the attempt failed and says why
    dump = "\n".join(await raw_dump(service.store))
    assert "alice" in str(shown[0])  # what reads are allowed to show is there
    for secret in secrets:
        assert secret not in caplog.text
        assert secret not in dump
        for page in shown:
            assert secret not in str(page)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def raw_dump(store: Store) -> list[str]:
    """Every text the database keeps: SQLite's dump; PostgreSQL's text columns of every table
    of the store's schema."""
    if isinstance(store, SqliteStore):
        return await store._run(lambda: list(store._db.iterdump()))
    assert isinstance(store, PostgresStore)
    columns = await store.pool.fetch(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = $1 AND data_type IN ('text', 'character varying', 'jsonb', 'json')",
        store.schema,
    )
    values = []
    for table, column in columns:
        rows = await store.pool.fetch(
            f'SELECT "{column}"::text AS v FROM "{store.schema}"."{table}"'
        )
        values += [row["v"] for row in rows if row["v"] is not None]
    assert values  # the schema was found and read
    return values


async def test_reqwest_sends_them_too(tmp_path: Path, db_url: str, receiver: Receiver) -> None:
    service = make_service(tmp_path, db_url, http_client="reqwest")
    await service.start(dispatch=False)
    try:
        async with Api(service).client() as admin:
            app = await new_app(
                admin,
                receiver.url,
                pushHeaders={"X-Api-Key": HEADER_VALUE},
                pushAuth={"type": "bearer", "token": TOKEN},
            )
            await push_one(admin, service, app["id"], "r1")
            answer = await ok(await admin.post(f"/v1/apps/{app['id']}/test-push"))
    finally:
        await service.stop()
    assert answer["applied"]["auth"] == "bearer"
    for push in receiver.pushes:
        assert push.headers["X-Api-Key"] == HEADER_VALUE
        assert push.headers.getall("Authorization") == [f"Bearer {TOKEN}"]
    assert len(receiver.pushes) == 2


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    yield from served_cli(tmp_path, f"sqlite:///{tmp_path / 'ccpush.db'}")


async def test_the_operator_cli_sets_them_from_the_environment(cli: Cli, tmp_path: Path) -> None:
    app = (await cli("apps", "create", "CRM", "--json")).json
    headers = await cli(
        "apps", "set-headers", app["id"], "--header", "X-Api-Key: $CRM_KEY",
        "--header", "X-Tenant: acme", CRM_KEY=HEADER_VALUE,
    )  # fmt: skip
    assert headers.code == 0, headers.err
    assert "push headers   X-Api-Key, X-Tenant" in headers.lines
    basic = await cli(
        "apps", "set-auth", app["id"], "basic", "--username", "alice",
        CCPUSH_PUSH_SECRET=PASSWORD,
    )  # fmt: skip
    assert "push auth      basic (alice)" in basic.lines
    bearer = await cli(
        "apps", "set-auth", app["id"], "bearer", "--json", CCPUSH_PUSH_SECRET=TOKEN
    )  # fmt: skip
    assert bearer.json["pushAuth"] == {"type": "bearer"}
    cert, key = client_pair()
    (tmp_path / "client.pem").write_text(cert)
    (tmp_path / "client.key").write_text(key)
    certified = await cli(
        "apps", "set-client-cert", app["id"], "--cert", str(tmp_path / "client.pem"),
        "--key", str(tmp_path / "client.key"), "--json",
    )  # fmt: skip
    assert "O=trustme" in certified.json["clientCertificate"]["subject"]
    runs = (headers, basic, bearer, certified)
    for secret in (HEADER_VALUE, PASSWORD, TOKEN, key.splitlines()[1]):
        assert all(secret not in run.out + run.err for run in runs)

    unset = await cli("apps", "set-auth", app["id"], "bearer")
    assert unset.code != 0
    assert "CCPUSH_PUSH_SECRET" in unset.err
    missing = await cli("apps", "set-headers", app["id"], "--header", "X-Api-Key: $NOT_SET_HERE")
    assert missing.code != 0
    assert "NOT_SET_HERE" in missing.err
    reserved = await cli("apps", "set-headers", app["id"], "--header", "Host: evil")
    assert reserved.code == 1
    assert "pushHeaders.Host" in reserved.err
    cleared = [
        await cli("apps", "set-headers", app["id"], "--clear"),
        await cli("apps", "set-auth", app["id"], "none"),
        await cli("apps", "set-client-cert", app["id"], "--clear", "--json"),
    ]
    assert all(run.code == 0 for run in cleared)
    last = cleared[-1].json
    assert (last["pushHeaders"], last["pushAuth"], last["clientCertificate"]) == ({}, None, None)
