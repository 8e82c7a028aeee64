"""What every operator command shares: its options (where the API is, the token, ``--json``),
how it prints, how it fails, and how ``--if-missing`` finds an object by name."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, ParamSpec

import typer

from ccpush.operator_cli.client import TOKEN_VARIABLE, URL_VARIABLE, CliError

P = ParamSpec("P")

ApiUrl = Annotated[
    str, typer.Option("--url", envvar=URL_VARIABLE, help="The ccpush API to call", metavar="URL")
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar=TOKEN_VARIABLE,
        help="Bearer token (the admin token or an account's key)",
        show_default="CCPUSH_ADMIN_TOKEN, else the data dir's admin-token",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON, for scripts")]
IfMissing = Annotated[
    bool,
    typer.Option(
        "--if-missing",
        help="If one of this name exists, print it instead of creating another",
    ),
]


def command(
    group: typer.Typer, name: str | None = None
) -> Callable[[Callable[P, None]], Callable[P, None]]:
    """Register a command on ``group`` that reports a ``CliError`` in its lines (each
    ``ccpush: ...`` on stderr) and exits with its code, instead of a traceback."""

    def register(run: Callable[P, None]) -> Callable[P, None]:
        @functools.wraps(run)
        def reporting(*args: P.args, **kwargs: P.kwargs) -> None:
            try:
                run(*args, **kwargs)
            except CliError as error:
                first, *more = error.lines
                typer.echo(f"ccpush: {first}", err=True)
                for line in more:
                    typer.echo(f"  {line}", err=True)
                raise typer.Exit(error.code) from None

        group.command(name)(reporting)
        return reporting

    return register


def emit(data: Any, as_json: bool, human: Callable[[Any], str]) -> None:
    """``data`` as JSON (as the API answered it), or as ``human`` writes it for people."""
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2) if as_json else human(data))


def note(text: str) -> None:
    """A remark for the person at the terminal, out of the way of the output (stderr)."""
    typer.echo(text, err=True)


def find_named(
    objects: Sequence[Mapping[str, Any]],
    name: str,
    what: str,
    where: Mapping[str, object] | None = None,
) -> Mapping[str, Any] | None:
    """The one object called ``name`` (and holding ``where``'s values), None if there is
    none; CliError if there are several (which one is meant cannot be told)."""
    wanted = {"name": name, **(where or {})}
    found = [item for item in objects if all(item.get(k) == v for k, v in wanted.items())]
    if len(found) > 1:
        ids = ", ".join(str(item.get("id")) for item in found)
        raise CliError(f"{len(found)} {what}s are named {name!r} ({ids}): name one by its id")
    return found[0] if found else None
