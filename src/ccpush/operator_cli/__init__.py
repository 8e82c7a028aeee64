"""The operator's everyday commands, over the HTTP API of a ccpush, near or remote:
``--url`` (``CCPUSH_URL``), a token from ``--token`` (``CCPUSH_TOKEN``) or, on ccpush's own
machine, its admin token. Tables for people, ``--json`` for scripts; an error of the API is
printed in a line or two, with exit code 1 (2 for a command given wrongly)."""

from __future__ import annotations

import typer

from ccpush.operator_cli.accounts import accounts, keys, platform_keys
from ccpush.operator_cli.apps import apps
from ccpush.operator_cli.audit import audit
from ccpush.operator_cli.common import command
from ccpush.operator_cli.records import records, replay
from ccpush.operator_cli.status import status


def add_operator_commands(app: typer.Typer) -> None:
    """Add the operator's commands to the ``ccpush`` command."""
    app.add_typer(accounts, name="accounts")
    app.add_typer(keys, name="keys")
    app.add_typer(platform_keys, name="platform-keys")
    app.add_typer(apps, name="apps")
    app.add_typer(records, name="records")
    app.add_typer(replay, name="replay")
    command(app, "status")(status)
    command(app, "audit")(audit)
