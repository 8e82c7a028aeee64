"""``ccpush accounts``, ``ccpush keys`` (an account's) and ``ccpush platform-keys``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ccpush.models import KeyScope
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
    ACCOUNT_COLUMNS,
    KEY_COLUMNS,
    account_fields,
    key_fields,
    table,
)

accounts = typer.Typer(help="Customer accounts (the operator's).", no_args_is_help=True)
keys = typer.Typer(help="An account's API keys.", no_args_is_help=True)
platform_keys = typer.Typer(
    help="The call center's ingest keys, for every app (the operator's).", no_args_is_help=True
)

AccountId = Annotated[str, typer.Argument(help="The account's id (acc_...)")]
KeyId = Annotated[str, typer.Argument(help="The key's id")]
Name = Annotated[str, typer.Argument(help="A name people recognise")]
Scope = Annotated[
    KeyScope, typer.Option(help="manage: the account's apps, records and keys; ingest: records")
]

SHOWN_ONCE = "The secret is shown this once: keep it now."


@command(accounts, "list")
def list_accounts(url: ApiUrl = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """Every account."""
    found = connect(url, token).get_all(path("accounts"))
    emit(found, as_json, lambda page: table(page["items"], ACCOUNT_COLUMNS, empty="no accounts"))


@command(accounts, "create")
def create_account(
    name: Name,
    if_missing: IfMissing = False,
    url: ApiUrl = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Create an account."""
    api = connect(url, token)
    if if_missing:
        existing = find_named(api.get_all(path("accounts"))["items"], name, "account")
        if existing is not None:
            note(f"an account named {name!r} exists: nothing created")
            emit(existing, as_json, account_fields)
            return
    emit(api.post(path("accounts"), {"name": name}), as_json, account_fields)


@command(accounts, "show")
def show_account(
    account: AccountId, url: ApiUrl = DEFAULT_URL, token: Token = None, as_json: AsJson = False
) -> None:
    """An account."""
    emit(connect(url, token).get(path("accounts", account)), as_json, account_fields)


@command(keys, "list")
def list_keys(
    account: AccountId, url: ApiUrl = DEFAULT_URL, token: Token = None, as_json: AsJson = False
) -> None:
    """The account's keys, revoked ones included (never their secrets)."""
    found = connect(url, token).get_all(path("accounts", account, "keys"))
    emit(found, as_json, lambda page: table(page["items"], KEY_COLUMNS, empty="no keys"))


@command(keys, "create")
def create_key(
    account: AccountId,
    name: Name,
    scope: Scope = KeyScope.MANAGE,
    url: ApiUrl = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Create a key for the account; its secret is shown this once."""
    body = {"name": name, "scope": scope.value}
    _created_key(connect(url, token).post(path("accounts", account, "keys"), body), as_json)


@command(keys, "revoke")
def revoke_key(
    account: AccountId,
    key: KeyId,
    url: ApiUrl = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Revoke a key: it is refused from now on."""
    emit(connect(url, token).delete(path("accounts", account, "keys", key)), as_json, key_fields)


@command(platform_keys, "list")
def list_platform_keys(
    url: ApiUrl = DEFAULT_URL, token: Token = None, as_json: AsJson = False
) -> None:
    """The platform keys, revoked ones included (never their secrets)."""
    found = connect(url, token).get_all(path("platform-keys"))
    emit(found, as_json, lambda page: table(page["items"], KEY_COLUMNS, empty="no platform keys"))


@command(platform_keys, "create")
def create_platform_key(
    name: Name,
    if_missing: IfMissing = False,
    url: ApiUrl = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Create a platform key; its secret is shown this once (with --if-missing, a key of
    this name not revoked is printed instead, without its secret)."""
    api = connect(url, token)
    if if_missing:
        found = api.get_all(path("platform-keys"))["items"]
        existing = find_named(found, name, "platform key", {"revokedAt": None})
        if existing is not None:
            note(f"a platform key named {name!r} exists: nothing created, its secret not shown")
            emit(existing, as_json, key_fields)
            return
    _created_key(api.post(path("platform-keys"), {"name": name}), as_json)


@command(platform_keys, "revoke")
def revoke_platform_key(
    key: KeyId, url: ApiUrl = DEFAULT_URL, token: Token = None, as_json: AsJson = False
) -> None:
    """Revoke a platform key: it is refused from now on."""
    emit(connect(url, token).delete(path("platform-keys", key)), as_json, key_fields)


def _created_key(key: Any, as_json: bool) -> None:
    emit(key, as_json, key_fields)
    if not as_json:
        note(SHOWN_ONCE)
