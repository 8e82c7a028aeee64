"""``ccpush apps``: voice applications and their cc-http push address."""

from __future__ import annotations

from typing import Annotated

import typer

from ccpush.operator_cli.client import DEFAULT_URL, connect, path
from ccpush.operator_cli.common import (
    ApiUrl,
    AsJson,
    IfMissing,
    Token,
    command,
    emit,
    find_named,
    note,
)
from ccpush.operator_cli.output import (
    APP_COLUMNS,
    app_fields,
    signing_fields,
    table,
    trial_fields,
)

apps = typer.Typer(help="Voice applications and their push address.", no_args_is_help=True)

AppId = Annotated[str, typer.Argument(help="The app's id (app_...)")]
Name = Annotated[str, typer.Argument(help="A name people recognise")]
PushUrl = Annotated[str, typer.Argument(help="http(s)://... where the app's records are pushed")]
Account = Annotated[
    str | None,
    typer.Option(
        "--account",
        help="The account's id (the admin token only; default: the default account)",
        show_default=False,
    ),
]
UrlOption = Annotated[
    str | None,
    typer.Option("--push-url", help="Where the app's records are pushed", show_default="none"),
]


@command(apps, "list")
def list_apps(
    account: Account = None,
    url: ApiUrl = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """The apps the token sees (the admin token: every app; --account: one account's)."""
    found = connect(url, token).get_all(path("apps"))
    if account is not None:
        found["items"] = [app for app in found["items"] if app["accountId"] == account]
    emit(found, as_json, lambda page: table(page["items"], APP_COLUMNS, empty="no apps"))


@command(apps, "create")
def create_app(
    name: Name,
    push_url: UrlOption = None,
    account: Account = None,
    if_missing: IfMissing = False,
    url: ApiUrl = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Create an app (with --if-missing, an app of this name the token sees, in --account
    if given, is printed as it is instead)."""
    api = connect(url, token)
    if if_missing:
        where = None if account is None else {"accountId": account}
        existing = find_named(api.get_all(path("apps"))["items"], name, "app", where)
        if existing is not None:
            note(f"an app named {name!r} exists: nothing created")
            if push_url is not None and existing["pushUrl"] != push_url:
                note(f"its push address is {existing['pushUrl']}: change it with set-url")
            emit(existing, as_json, app_fields)
            return
    body = {"name": name, "pushUrl": push_url, "accountId": account}
    emit(api.post(path("apps"), body), as_json, app_fields)


@command(apps, "show")
def show_app(
    app: AppId, url: ApiUrl = DEFAULT_URL, token: Token = None, as_json: AsJson = False
) -> None:
    """An app: its push address, state and why."""
    emit(connect(url, token).get(path("apps", app)), as_json, app_fields)


@command(apps, "set-url")
def set_url(
    app: AppId,
    push_url: PushUrl,
    url: ApiUrl = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Set or change the push address (records held for want of one are pushed)."""
    emit(connect(url, token).patch(path("apps", app), {"pushUrl": push_url}), as_json, app_fields)


@command(apps, "clear-url")
def clear_url(
    app: AppId, url: ApiUrl = DEFAULT_URL, token: Token = None, as_json: AsJson = False
) -> None:
    """Clear the push address: records are kept (held) until one is set."""
    emit(connect(url, token).patch(path("apps", app), {"pushUrl": None}), as_json, app_fields)


@command(apps, "pause")
def pause(
    app: AppId, url: ApiUrl = DEFAULT_URL, token: Token = None, as_json: AsJson = False
) -> None:
    """Stop pushing; records are kept and pushed on resume."""
    emit(connect(url, token).post(path("apps", app, "pause")), as_json, app_fields)


@command(apps, "resume")
def resume(
    app: AppId, url: ApiUrl = DEFAULT_URL, token: Token = None, as_json: AsJson = False
) -> None:
    """Push again, starting with what was held."""
    emit(connect(url, token).post(path("apps", app, "resume")), as_json, app_fields)


@command(apps, "test-push")
def send_test_push(
    app: AppId, url: ApiUrl = DEFAULT_URL, token: Token = None, as_json: AsJson = False
) -> None:
    """Push a sample record to the app's address now and show the answer (exit code 1 if
    it was not delivered)."""
    trial = connect(url, token).post(path("apps", app, "test-push"))
    emit(trial, as_json, trial_fields)
    if not trial["delivered"]:
        raise typer.Exit(1)


@command(apps, "rotate-secret")
def rotate_secret(
    app: AppId, url: ApiUrl = DEFAULT_URL, token: Token = None, as_json: AsJson = False
) -> None:
    """Make a new signing secret; pushes carry both signatures until the overlap ends."""
    keys = connect(url, token).post(path("apps", app, "signing-secret", "rotate"))
    emit(keys, as_json, signing_fields)
