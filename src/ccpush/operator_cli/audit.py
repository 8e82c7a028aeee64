"""``ccpush audit``: the audit log, an account's (``--account``) or every entry (the
operator's), newest first, filtered like the API's ``GET .../audit``."""

from __future__ import annotations

import json
from typing import Annotated
from urllib.parse import urlencode

import typer

from ccpush.operator_cli.client import DEFAULT_URL, connect, path
from ccpush.operator_cli.common import ApiUrl, AsJson, Token, emit
from ccpush.operator_cli.output import Column, Row, column, table

TIME_HELP = "ISO 8601 with an offset, or yyyy-MM-dd HH:mm:ss in the record time zone"
Account = Annotated[
    str | None,
    typer.Option("--account", help="This account's entries (else every entry: the operator's)"),
]
App = Annotated[str | None, typer.Option("--app", help="This app's entries")]
Action = Annotated[
    str | None, typer.Option("--action", help="Comma-separated actions, e.g. app.renamed")
]
From = Annotated[
    str | None, typer.Option("--from", help=f"At or after: {TIME_HELP}", show_default=False)
]
To = Annotated[str | None, typer.Option("--to", help="Before this time", show_default=False)]
Limit = Annotated[int, typer.Option("--limit", min=1, max=1000, help="Entries at most")]

AUDIT_COLUMNS = (
    column("AT", "at"),
    column("ACTION", "action"),
    column("APP", "appId"),
    Column("ACTOR", lambda row: _actor(row)),
    column("FROM", "source"),
    Column("CHANGE", lambda row: _change(row)),
)


def _actor(entry: Row) -> str:
    name = entry.get("actorName")
    return f"{name} ({entry['actor']})" if name else str(entry["actor"])


def _change(entry: Row) -> str:
    before, after = entry.get("before") or {}, entry.get("after") or {}
    parts = []
    for name in dict.fromkeys([*before, *after]):
        new = json.dumps(after.get(name), ensure_ascii=False)
        parts.append(
            f"{name}: {json.dumps(before[name], ensure_ascii=False)} → {new}"
            if name in before
            else f"{name}: {new}"
        )
    return "; ".join(parts)


def audit(
    account: Account = None,
    app: App = None,
    action: Action = None,
    since: From = None,
    until: To = None,
    limit: Limit = 100,
    url: ApiUrl = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """The audit log, newest first: an account's, or (the operator) every entry."""
    where = path("accounts", account, "audit") if account else path("audit")
    given = {"appId": app, "action": action, "from": since, "to": until, "limit": limit}
    query = urlencode({name: value for name, value in given.items() if value is not None})
    answer = connect(url, token).get(f"{where}?{query}")
    emit(answer, as_json, lambda page: table(page["items"], AUDIT_COLUMNS, empty="no entries"))
