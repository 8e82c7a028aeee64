"""The operator's commands (``ccpush accounts``, ``apps``, ``records``, ``status``...): the
rules they print and find by, then the real ``ccpush`` command against a served ccpush."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ccpush.operator_cli.client import CliError, error_lines, path
from ccpush.operator_cli.common import find_named
from ccpush.operator_cli.output import app_state, fields, table, width
from ccpush.operator_cli.output import column as col
from ccpush.operator_cli.status import read_metrics, summary
from tests.api_client import ADMIN
from tests.conftest import minimal_record
from tests.helpers import eventually, make_settings
from tests.receiver import Receiver, Reply
from tests.served import ServerThread, free_port, served_api

CCPUSH = str(Path(sys.executable).with_name("ccpush"))

# The rules, without a server


@pytest.mark.parametrize(
    ("text", "columns"),
    [("", 0), ("Acme", 4), ("支持线", 6), ("Café", 4), ("Cafe\u0301", 4), ("ｶﾀｶﾅ", 4)],
)
def test_the_width_of_text_is_the_columns_a_terminal_gives_it(text: str, columns: int) -> None:
    assert width(text) == columns


def test_a_table_aligns_its_columns_for_wide_characters_and_shows_absent_values() -> None:
    rows = [
        {"id": "app_1", "name": "支持线", "pushUrl": None, "paused": True},
        {"id": "app_22", "name": "Billing", "pushUrl": "https://a.example/cdr", "paused": False},
    ]
    columns = (col("ID", "id"), col("NAME", "name"), col("PUSH", "pushUrl"), col("P", "paused"))
    assert table(rows, columns, empty="no apps").splitlines() == [
        "ID      NAME     PUSH                   P",
        "app_1   支持线   -                      yes",
        "app_22  Billing  https://a.example/cdr  no",
    ]
    assert table([], columns, empty="no apps") == "no apps"


def test_fields_keep_a_value_of_several_lines_in_its_column() -> None:
    assert fields([("status", 500), ("answer", "line one\nline two")]).splitlines() == [
        "status  500",
        "answer  line one",
        "        line two",
    ]


APPS = [
    {"id": "app_1", "name": "Support", "accountId": "acc_a", "revokedAt": None},
    {"id": "app_2", "name": "Support", "accountId": "acc_b", "revokedAt": None},
    {"id": "app_3", "name": "Billing", "accountId": "acc_a", "revokedAt": "2026-01-01"},
]


@pytest.mark.parametrize(
    ("name", "where", "found"),
    [
        ("Billing", None, "app_3"),
        ("Nobody", None, None),
        ("Support", {"accountId": "acc_b"}, "app_2"),
        ("Support", {"accountId": "acc_c"}, None),
        ("Billing", {"revokedAt": None}, None),
        ("support", None, None),  # names are matched exactly
    ],
)
def test_if_missing_finds_the_one_object_of_a_name(
    name: str, where: dict[str, object] | None, found: str | None
) -> None:
    match = find_named(APPS, name, "app", where)
    assert (match["id"] if match else None) == found


def test_if_missing_refuses_to_guess_between_objects_of_one_name() -> None:
    with pytest.raises(CliError) as raised:
        find_named(APPS, "Support", "app")
    assert raised.value.lines == ("2 apps are named 'Support' (app_1, app_2): name one by its id",)


@pytest.mark.parametrize(
    ("app", "state"),
    [
        ({"paused": True, "pushUrl": "https://a/", "failingSince": "x"}, "paused"),
        ({"paused": False, "pushUrl": None, "failingSince": None}, "no address"),
        ({"paused": False, "pushUrl": "https://a/", "failingSince": "x"}, "failing"),
        ({"paused": False, "pushUrl": "https://a/", "failingSince": None}, "pushing"),
    ],
)
def test_an_app_state_in_one_word(app: dict[str, Any], state: str) -> None:
    assert app_state(app) == state


@pytest.mark.parametrize(
    ("status", "body", "lines"),
    [
        (
            422,
            {
                "error": {
                    "code": "invalid_request",
                    "message": "2 problems in the request body",
                    "problems": [
                        {"field": "pushUrl", "reason": "must start with http:// or https://"},
                        {"field": "name", "reason": "is required"},
                    ],
                }
            },
            [
                "2 problems in the request body (422 invalid_request)",
                "pushUrl: must start with http:// or https://; name: is required",
            ],
        ),
        (
            404,
            {"error": {"code": "not_found", "message": "No app has this id.", "problems": []}},
            ["No app has this id. (404 not_found)"],
        ),
        (502, "<html>Bad Gateway</html>", ["the API answered 502 Bad Gateway"]),
        (503, None, ["the API answered 503 Bad Gateway"]),
    ],
)
def test_an_api_error_is_told_in_a_line_or_two(status: int, body: Any, lines: list[str]) -> None:
    assert error_lines(status, "Bad Gateway", body) == lines


def test_ids_are_escaped_into_one_path_segment() -> None:
    assert path("apps", "a/b", "call-records", "x y?") == "/v1/apps/a%2Fb/call-records/x%20y%3F"


METRICS = """\
# TYPE ccpush_deliveries gauge
ccpush_deliveries{state="pending"} 3.0
ccpush_deliveries{state="delivered"} 12.0
ccpush_deliveries{state="failed"} 1.0
ccpush_deliveries{state="nonsense"} 7.0
# TYPE ccpush_oldest_due_age_seconds gauge
ccpush_oldest_due_age_seconds 42.5
"""


def test_status_sums_up_apps_deliveries_and_failing_apps() -> None:
    by_state, oldest = read_metrics(METRICS)
    assert by_state == {"held": 0, "pending": 3, "sending": 0, "delivered": 12, "failed": 1}
    assert oldest == 42.5
    apps = [
        {"id": "a", "paused": False, "pushing": True, "pushUrl": "u", "failingSince": None},
        {"id": "b", "paused": False, "pushing": True, "pushUrl": "u", "failingSince": "t"},
        {"id": "c", "paused": True, "pushing": False, "pushUrl": "u", "pausedReason": "failing"},
        {"id": "d", "paused": True, "pushing": False, "pushUrl": None, "failingSince": None},
        {"id": "e", "paused": False, "pushing": False, "pushUrl": None, "failingSince": None},
    ]
    status = summary(apps, by_state, oldest)
    assert status["apps"] == {"total": 5, "pushing": 2, "paused": 2, "withoutPushUrl": 1}
    assert status["backlog"] == 3
    assert [app["id"] for app in status["failingApps"]] == ["b", "c"]


# The command against a served ccpush


@dataclass(frozen=True, slots=True)
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)

    @property
    def lines(self) -> list[str]:
        assert self.code == 0, self.err
        return self.out.splitlines()


@dataclass(frozen=True, slots=True)
class Cli:
    env: dict[str, str]

    async def __call__(self, *args: str, **env: str) -> Run:
        process = await asyncio.create_subprocess_exec(
            CCPUSH,
            *args,
            env={**self.env, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode is not None
        return Run(process.returncode, out.decode(), err.decode())


def cli_env(home: Path, **settings: str) -> dict[str, str]:
    """The environment of a user with no ccpush of their own (its home is ``home``)."""
    kept = {name: value for name, value in os.environ.items() if not name.startswith("CCPUSH_")}
    return {**kept, "HOME": str(home), "XDG_DATA_HOME": str(home / "data"), **settings}


def served_cli(tmp_path: Path, db_url: str) -> Iterator[Cli]:
    """The command, its ``CCPUSH_URL`` and ``CCPUSH_TOKEN`` those of a ccpush served on the
    store at ``db_url``."""
    settings = make_settings(tmp_path, db_url)
    with ServerThread(served_api(settings), settings) as server:
        yield Cli(cli_env(tmp_path, CCPUSH_URL=server.url, CCPUSH_TOKEN=ADMIN))


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    """``served_cli`` on SQLite, for what the store does not change."""
    yield from served_cli(tmp_path, f"sqlite:///{tmp_path / 'ccpush.db'}")


@pytest.fixture
def cli_on_each_store(tmp_path: Path, db_url: str) -> Iterator[Cli]:
    yield from served_cli(tmp_path, db_url)


def row_of(lines: list[str], first: str) -> list[str]:
    """The cells of the table line that starts with ``first`` (cells are apart by two
    spaces or more)."""
    return next(re.split(r" {2,}", line) for line in lines if line.startswith(first + " "))


@pytest.mark.slow
async def test_an_operator_sets_up_a_customer(cli_on_each_store: Cli) -> None:
    cli = cli_on_each_store
    account = (await cli("accounts", "create", "Acme", "--json")).json
    again = await cli("accounts", "create", "Acme", "--if-missing", "--json")
    assert again.json == account
    assert again.err == "an account named 'Acme' exists: nothing created\n"
    listed = (await cli("accounts", "list")).lines
    assert listed[0].split() == ["ID", "NAME", "CREATED"]
    assert row_of(listed, account["id"])[1] == "Acme"

    key = (await cli("keys", "create", account["id"], "Acme ops", "--json")).json
    assert (key["scope"], key["accountId"]) == ("manage", account["id"])
    assert (await cli("apps", "list", CCPUSH_TOKEN=key["secret"])).out == "no apps\n"
    platform = (await cli("platform-keys", "create", "call center", "--json")).json
    found = await cli("platform-keys", "create", "call center", "--if-missing", "--json")
    assert found.json == {name: value for name, value in platform.items() if name != "secret"}

    url = f"http://127.0.0.1:{free_port()}/cdr"
    create = ("apps", "create", "Support", "--push-url", url, "--account", account["id"])
    app = (await cli(*create, "--json")).json
    assert (await cli(*create, "--if-missing", "--json")).json == app
    shown = (await cli("apps", "show", app["id"], CCPUSH_TOKEN=key["secret"])).lines
    assert "state          pushing" in shown
    assert f"push url       {url}" in shown
    cleared = (await cli("apps", "clear-url", app["id"], "--json")).json
    assert cleared["pushUrl"] is None
    assert (await cli("apps", "pause", app["id"], "--json")).json["paused"] is True
    assert (await cli("apps", "set-url", app["id"], url, "--json")).json["pushUrl"] == url
    assert (await cli("apps", "resume", app["id"], "--json")).json["pushing"] is True
    listed = (await cli("apps", "list", "--account", account["id"])).lines
    assert row_of(listed, app["id"])[1:] == ["Support", account["id"], "pushing", url]

    revoked = (await cli("keys", "revoke", account["id"], key["id"], "--json")).json
    assert revoked["revokedAt"] is not None
    refused = await cli("apps", "list", CCPUSH_TOKEN=key["secret"])
    assert (refused.code, refused.err.count("\n")) == (1, 1)
    assert refused.err.startswith("ccpush: ")
    assert refused.err.endswith("(401 unauthorized)\n")
    keys = (await cli("platform-keys", "revoke", platform["id"], "--json")).json
    assert keys["revokedAt"] is not None


async def _ingest(base_url: str, app_id: str, record: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with (
        aiohttp.ClientSession(base_url, headers=headers) as client,
        client.post(f"/v1/apps/{app_id}/call-records", json=record) as answer,
    ):
        assert answer.status == 202, await answer.text()


@pytest.mark.slow
async def test_a_record_deliveries_resend_and_replay(cli: Cli, receiver: Receiver) -> None:
    app = (await cli("apps", "create", "Support", "--push-url", receiver.url, "--json")).json
    await _ingest(cli.env["CCPUSH_URL"], app["id"], minimal_record("s-1"))
    await receiver.wait_for(lambda r: r.seen["s-1"] == 1)

    async def delivered() -> bool:
        shown = await cli("records", "deliveries", app["id"], "s-1", "--json")
        return bool(shown.json["items"][0]["state"] == "delivered")

    await eventually(delivered, timeout=30)
    lines = (await cli("records", "deliveries", app["id"], "s-1")).lines
    assert re.fullmatch(r"delivery \d+: delivered, version 1, sequence 1, created \S+", lines[0])
    assert lines[1].split() == ["#", "STARTED", "TOOK", "STATUS", "ERROR"]
    first_attempt = lines[2].split()
    assert (first_attempt[0], first_attempt[-2:]) == ("1", ["200", "-"])

    again = (await cli("records", "resend", app["id"], "s-1", "--json")).json
    assert again["callSessionId"] == "s-1"
    await receiver.wait_for(lambda r: r.seen["s-1"] == 2)

    window = ("--from", "2023-11-17 00:00:00", "--to", "2023-11-18 00:00:00")
    replay = (await cli("replay", "start", app["id"], *window, "--json")).json
    assert (replay["kind"], replay["total"]) == ("range", 1)
    await receiver.wait_for(lambda r: r.seen["s-1"] == 3)

    async def finished() -> bool:
        shown = await cli("replay", "show", app["id"], replay["id"], "--json")
        return bool(shown.json["state"] == "done")

    await eventually(finished, timeout=30)
    shown = (await cli("replay", "show", app["id"], replay["id"])).lines
    assert "records     1" in shown
    neither = await cli("replay", "start", app["id"])
    assert (neither.code, neither.err) == (2, "ccpush: give --from and --to, or --failed-since\n")


@pytest.mark.slow
async def test_test_push_and_status_show_what_fails(cli: Cli, receiver: Receiver) -> None:
    receiver.responder = lambda push, seen: Reply(
        status=500 if push.path == "/broken" else 200, body="no thanks"
    )
    broken_url = receiver.url.replace("/cdr", "/broken")
    good = (await cli("apps", "create", "Good", "--push-url", receiver.url, "--json")).json
    broken = (await cli("apps", "create", "Broken", "--push-url", broken_url, "--json")).json

    works = await cli("apps", "test-push", good["id"])
    assert works.code == 0, works.err
    assert "delivered  yes" in works.out.splitlines()
    fails = await cli("apps", "test-push", broken["id"])
    assert fails.code == 1
    told = set(fails.out.splitlines())
    assert {"delivered  no", "status     500", "answer     no thanks"} <= told

    await _ingest(cli.env["CCPUSH_URL"], broken["id"], minimal_record("lost-1"))

    async def failing() -> bool:
        return bool((await cli("apps", "show", broken["id"], "--json")).json["failingSince"])

    await eventually(failing, timeout=30)
    status = (await cli("status", "--json")).json
    assert [app["id"] for app in status["failingApps"]] == [broken["id"]]
    assert status["apps"] == {"total": 2, "pushing": 2, "paused": 0, "withoutPushUrl": 0}
    assert status["deliveries"]["pending"] == 1  # its retry, due in 30 minutes
    text = (await cli("status")).lines
    assert text[:4] == [
        "apps          2: 2 pushing, 0 paused, 0 without a push address",
        "backlog       1 (the oldest due has waited 0 s)",
        "deliveries    held 0, pending 1, sending 0, delivered 0, failed 0",
        "failing apps  1",
    ]
    header = ["ID", "NAME", "ACCOUNT", "STATE", "FAILING SINCE", "PAUSED BECAUSE"]
    assert re.split(" {2,}", text[5]) == header
    failing_row = row_of(text, broken["id"])
    assert failing_row[1:4] == ["Broken", "acc_default", "failing"]
    assert failing_row[4:] == [status["failingApps"][0]["failingSince"], "-"]

    rotated = (await cli("apps", "rotate-secret", good["id"], "--json")).json
    assert rotated["secret"].startswith("whsec_")
    assert rotated["previousSecret"].startswith("whsec_")


@pytest.mark.slow
async def test_errors_are_told_in_a_line_or_two_with_an_exit_code(cli: Cli) -> None:
    invalid = await cli("apps", "create", "X", "--push-url", "ftp://x.example/")
    assert (invalid.code, invalid.out) == (1, "")
    assert invalid.err.splitlines() == [
        "ccpush: 1 problem in the request body (422 invalid_request)",
        "  pushUrl: must start with http:// or https://",
    ]
    missing = await cli("apps", "show", "app_missing")
    assert missing.code == 1
    assert missing.err.startswith("ccpush: ")
    assert missing.err.endswith("(404 not_found)\n")
    unreachable = await cli("accounts", "list", CCPUSH_URL=f"http://127.0.0.1:{free_port()}")
    assert unreachable.code == 1
    assert unreachable.err.startswith("ccpush: cannot reach http://127.0.0.1:")
    assert "Connection refused" in unreachable.err
    not_http = await cli("accounts", "list", "--url", "ftp://127.0.0.1/")
    assert not_http.code == 2
    assert (await cli("apps", "show")).code == 2  # typer's usage error: the app is missing


@pytest.mark.slow
async def test_without_a_token_the_local_admin_token_is_used(cli: Cli, tmp_path: Path) -> None:
    env = {name: value for name, value in cli.env.items() if name != "CCPUSH_TOKEN"}
    data_dir = tmp_path / "local"
    local = Cli({**env, "CCPUSH_DATA_DIR": str(data_dir)})
    none = await local("accounts", "list")
    assert none.code == 2
    assert none.err == (
        "ccpush: no token: set CCPUSH_TOKEN (or --token), or run where ccpush keeps its admin"
        f" token ({data_dir / 'admin-token'} is not readable)\n"
    )
    data_dir.mkdir(mode=0o700)
    (data_dir / "admin-token").write_text(ADMIN + "\n")
    assert (await local("accounts", "list", "--json")).json["items"][0]["id"] == "acc_default"
    from_settings = await local("accounts", "list", CCPUSH_ADMIN_TOKEN="z" * 30)
    assert from_settings.code == 1  # CCPUSH_ADMIN_TOKEN comes first: the API refuses it
    assert "(401 unauthorized)" in from_settings.err


@pytest.mark.slow
async def test_a_redirect_is_reported_not_followed(tmp_path: Path) -> None:
    elsewhere = await Receiver().start()
    moved = Reply(status=307, headers={"Location": elsewhere.url})
    redirecting = await Receiver(lambda push, seen: moved).start()
    try:
        cli = Cli(cli_env(tmp_path, CCPUSH_TOKEN=ADMIN))
        run = await cli("accounts", "list", "--url", f"http://127.0.0.1:{redirecting.port}")
    finally:
        await redirecting.stop()
        await elsewhere.stop()
    assert (run.code, run.err) == (1, "ccpush: the API answered 307 Temporary Redirect\n")
    assert [push.headers["Authorization"] for push in redirecting.pushes] == [f"Bearer {ADMIN}"]
    assert not elsewhere.pushes  # the token went nowhere else
