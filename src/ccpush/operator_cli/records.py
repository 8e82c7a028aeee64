"""``ccpush records`` (a record's deliveries, resend) and ``ccpush replay``."""

from __future__ import annotations

from typing import Annotated

import typer

from ccpush.operator_cli.client import DEFAULT_URL, USAGE, CliError, connect, path
from ccpush.operator_cli.common import ApiUrl, AsJson, Token, command, emit, note
from ccpush.operator_cli.output import deliveries_text, delivery_text, replay_fields

records = typer.Typer(
    help="A call record's deliveries, and pushing it again.", no_args_is_help=True
)
replay = typer.Typer(help="Push a range of records, or what failed, again.", no_args_is_help=True)

AppId = Annotated[str, typer.Argument(help="The app's id (app_...)")]
SessionId = Annotated[str, typer.Argument(help="The record's callSessionId")]
ReplayId = Annotated[str, typer.Argument(help="The replay's id")]
TIME_HELP = "ISO 8601 with an offset, or yyyy-MM-dd HH:mm:ss in the record time zone"
From = Annotated[
    str | None,
    typer.Option("--from", help=f"Calls started at or after: {TIME_HELP}", show_default=False),
]
To = Annotated[str | None, typer.Option("--to", help="Calls started before", show_default=False)]
FailedSince = Annotated[
    str | None,
    typer.Option(
        "--failed-since",
        help="Instead of --from/--to: records whose latest delivery failed since then",
        show_default=False,
    ),
]


@command(records, "deliveries")
def deliveries(
    app: AppId,
    session: SessionId,
    url: ApiUrl = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """The record's deliveries, newest first, each with its attempts."""
    answer = connect(url, token).get_all(path("apps", app, "call-records", session, "deliveries"))
    emit(answer, as_json, deliveries_text)


@command(records, "resend")
def resend(
    app: AppId,
    session: SessionId,
    url: ApiUrl = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Push the record again now, as a new delivery."""
    delivery = connect(url, token).post(path("apps", app, "call-records", session, "resend"))
    emit(delivery, as_json, delivery_text)


@command(replay, "start")
def start(
    app: AppId,
    start_at: From = None,
    end_at: To = None,
    failed_since: FailedSince = None,
    url: ApiUrl = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Start a replay: --from and --to, or --failed-since. The same replay asked again while
    it runs is shown instead of started twice."""
    if (failed_since is None) == (start_at is None and end_at is None):
        raise CliError("give --from and --to, or --failed-since", code=USAGE)
    body = {"from": start_at, "to": end_at, "failedSince": failed_since}
    answer = connect(url, token).call("POST", path("apps", app, "replays"), body)
    if answer.status == 200 and not as_json:
        note("the same replay was already running: nothing started")
    emit(answer.body, as_json, replay_fields)


@command(replay, "show")
def show(
    app: AppId,
    replay_id: ReplayId,
    url: ApiUrl = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """A replay's progress: records covered, enqueued, and its deliveries by state."""
    emit(connect(url, token).get(path("apps", app, "replays", replay_id)), as_json, replay_fields)
