"""``ccpush apps``: voice applications and their cc-http push address."""

from __future__ import annotations

import os
from pathlib import Path
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


PaceOption = Annotated[
    str | None,
    typer.Option(help="The limit, or 'none' to lift it (not given: kept)", show_default=False),
]


@command(apps, "set-pace")
def set_pace(
    app: AppId,
    rate_limit: PaceOption = None,
    max_in_flight: PaceOption = None,
    url: ApiUrl = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Set the pace the app's receiver can take: --rate-limit (pushes per second, bursts of
    one second's worth) and --max-in-flight (pushes at once), kept by every worker."""
    body = {
        name: None if value.strip().lower() == "none" else _number(value)
        for name, value in (("rateLimit", rate_limit), ("maxInFlight", max_in_flight))
        if value is not None
    }
    emit(connect(url, token).patch(path("apps", app), body), as_json, app_fields)


HeaderOption = Annotated[
    list[str] | None,
    typer.Option(
        "--header",
        help="'Name: value', sent on every push (repeat for several; replaces the app's"
        " headers). A value is read from the environment variable named after '$', e.g."
        " 'X-Api-Key: $CRM_KEY', so that it stays out of the shell's history",
        show_default=False,
    ),
]


@command(apps, "set-headers")
def set_headers(
    app: AppId,
    header: HeaderOption = None,
    clear: Annotated[bool, typer.Option("--clear", help="Send no headers of its own")] = False,
    url: ApiUrl = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Set the headers the app's receiver needs on every push (reads show names only)."""
    if clear == bool(header):
        raise typer.BadParameter("give --header (one or more) or --clear")
    headers = None if clear else dict(_header(text) for text in header or ())
    body = {"pushHeaders": headers}
    emit(connect(url, token).patch(path("apps", app), body), as_json, app_fields)


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon:
        raise typer.BadParameter(f"{text!r} is not 'Name: value'", param_hint="--header")
    value = value.strip()
    if value.startswith("$"):
        value = _from_environment(value[1:], "--header")
    return name.strip(), value


def _from_environment(variable: str, option: str) -> str:
    value = os.environ.get(variable)
    if value is None:
        raise typer.BadParameter(
            f"the environment variable {variable} is not set", param_hint=option
        )
    return value


PUSH_SECRET_VARIABLE = "CCPUSH_PUSH_SECRET"  # noqa: S105 (a variable's name)
AuthKind = Annotated[str, typer.Argument(help="basic, bearer or none")]
PushSecret = Annotated[
    str | None,
    typer.Option(
        "--secret",
        envvar=PUSH_SECRET_VARIABLE,
        help="The password (basic) or token (bearer); better given in the environment, out of"
        " the shell's history",
        show_default=False,
        show_envvar=True,
    ),
]


@command(apps, "set-auth")
def set_auth(
    app: AppId,
    kind: AuthKind,
    username: Annotated[
        str | None, typer.Option(help="basic: the user name", show_default=False)
    ] = None,
    secret: PushSecret = None,
    url: ApiUrl = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Set the credentials sent on every push: HTTP Basic (--username, the password from
    $CCPUSH_PUSH_SECRET), a bearer token (from $CCPUSH_PUSH_SECRET), or none. Reads show the
    kind and the user name, never the secret."""
    auth: dict[str, str] | None = None
    if kind not in ("basic", "bearer", "none"):
        raise typer.BadParameter(f"{kind!r}: use basic, bearer or none", param_hint="KIND")
    if kind != "none" and not secret:
        raise typer.BadParameter(f"set {PUSH_SECRET_VARIABLE} to the {kind} credentials' secret")
    if kind == "basic":
        if username is None:
            raise typer.BadParameter("basic credentials need --username")
        auth = {"type": "basic", "username": username, "password": str(secret)}
    elif kind == "bearer":
        auth = {"type": "bearer", "token": str(secret)}
    emit(connect(url, token).patch(path("apps", app), {"pushAuth": auth}), as_json, app_fields)


@command(apps, "set-client-cert")
def set_client_cert(
    app: AppId,
    cert: Annotated[
        Path | None, typer.Option(help="The certificate chain (PEM file)", show_default=False)
    ] = None,
    key: Annotated[
        Path | None, typer.Option(help="Its unencrypted private key (PEM file)", show_default=False)
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Use no client certificate")] = False,
    url: ApiUrl = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Set the client certificate the app's pushes present for mutual TLS (kept encrypted;
    reads show its subject and expiry)."""
    pair: dict[str, str] | None = None
    if clear:
        if cert is not None or key is not None:
            raise typer.BadParameter("give --cert and --key, or --clear")
    elif cert is None or key is None:
        raise typer.BadParameter("give --cert and --key, or --clear")
    else:
        pair = {"certPem": cert.read_text(), "keyPem": key.read_text()}
    body = {"clientCertificate": pair}
    emit(connect(url, token).patch(path("apps", app), body), as_json, app_fields)


def _number(text: str) -> float | int | str:
    """A number as JSON has it (the API says what is wrong with one it refuses)."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


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
