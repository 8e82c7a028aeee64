"""The ``ccpush`` command. Every option is also an environment variable (shown in --help)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from ccpush import __version__
from ccpush.loop import run as _run
from ccpush.sender import HttpClient
from ccpush.settings import Settings

T = TypeVar("T")

app = typer.Typer(
    name="ccpush",
    help="Push call records to customers' cc-http push addresses.",
    no_args_is_help=True,
    add_completion=False,
)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        envvar="CCPUSH_DATABASE_URL",
        help="sqlite:///path.db or postgresql://host/db [default: SQLite in the data dir]",
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(envvar="CCPUSH_DATA_DIR", help="Where the SQLite file and admin token live."),
]
Host = Annotated[str | None, typer.Option(envvar="CCPUSH_HOST", help="[default: 127.0.0.1]")]
Port = Annotated[int | None, typer.Option(envvar="CCPUSH_PORT", help="[default: 8080]")]
RetrySchedule = Annotated[
    str | None,
    typer.Option(
        envvar="CCPUSH_RETRY_SCHEDULE", help="Delays between attempts [default: 30m,30m,30m]"
    ),
]
PushTimeout = Annotated[
    float | None,
    typer.Option(envvar="CCPUSH_PUSH_TIMEOUT", help="Seconds for one push [default: 15]"),
]
Concurrency = Annotated[
    int | None,
    typer.Option(envvar="CCPUSH_CONCURRENCY", help="Pushes in flight at once [default: 128]"),
]
PushProcesses = Annotated[
    int | None,
    typer.Option(
        envvar="CCPUSH_PUSH_PROCESSES",
        help="Child processes that make the pushes (0: this process) [default: 0]",
    ),
]
HttpClientOption = Annotated[
    HttpClient | None,
    typer.Option(
        envvar="CCPUSH_HTTP_CLIENT",
        help="What makes the pushes' HTTP requests: aiohttp or reqwest [default: aiohttp]",
    ),
]
LogLevel = Annotated[str | None, typer.Option(envvar="CCPUSH_LOG_LEVEL", help="[default: INFO]")]
LogFormat = Annotated[
    str | None,
    typer.Option(envvar="CCPUSH_LOG_FORMAT", help="text, or json: one object per line"),
]


def _settings(**given: Any) -> Settings:
    try:
        return Settings(**{key: value for key, value in given.items() if value is not None})
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            where = ".".join(str(part) for part in error["loc"]) or "settings"
            typer.echo(f"ccpush: invalid setting {where}: {error['msg']}", err=True)
        raise typer.Exit(2) from None


def _logging(settings: Settings) -> None:
    from ccpush.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)


@app.command()
def serve(
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    host: Host = None,
    port: Port = None,
    retry_schedule: RetrySchedule = None,
    push_timeout: PushTimeout = None,
    concurrency: Concurrency = None,
    push_processes: PushProcesses = None,
    http_client: HttpClientOption = None,
    log_level: LogLevel = None,
    log_format: LogFormat = None,
) -> None:
    """Run the API and the dispatcher in one process."""
    settings = _settings(**locals())
    _logging(settings)
    _run(_serve(settings))


async def _serve(settings: Settings) -> None:
    import uvicorn

    from ccpush.api import create_api
    from ccpush.service import Service, resolve_admin_token

    token = resolve_admin_token(settings)
    if token.generated:
        typer.echo(
            f"Generated an admin token (shown once, kept in {settings.data_dir}/admin-token):\n"
            f"  {token.value}",
            err=True,
        )

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn would re-raise SIGTERM after its own shutdown, killing the process
            # before the dispatcher has finished or released what it holds.
            yield

    service = Service(settings)
    api = create_api(service, admin_token=token.value)
    config = uvicorn.Config(
        api,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn logs through ccpush's handler (text or JSON)
    )
    server = Server(config)
    typer.echo(f"Console: http://{settings.host}:{settings.port}/console/", err=True)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, setattr, server, "should_exit", True)
    async with service:
        await server.serve()


@app.command()
def worker(
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    retry_schedule: RetrySchedule = None,
    push_timeout: PushTimeout = None,
    concurrency: Concurrency = None,
    push_processes: PushProcesses = None,
    http_client: HttpClientOption = None,
    log_level: LogLevel = None,
    log_format: LogFormat = None,
) -> None:
    """Run only the dispatcher (start several, on PostgreSQL, to scale out)."""
    settings = _settings(**locals())
    _logging(settings)
    _run(_worker(settings))


async def _worker(settings: Settings) -> None:
    from ccpush.service import Service

    service = Service(settings)
    loop = asyncio.get_running_loop()
    await service.start()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, service.request_stop)
    logging.getLogger("ccpush").info("worker %s dispatching", service.dispatcher.owner)
    try:
        await service.wait_dispatcher()
    finally:
        await service.stop()


@app.command()
def migrate(database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Bring the database schema up to date."""
    settings = _settings(**locals())
    applied = _run(_migrate(settings))
    typer.echo("applied: " + ", ".join(applied) if applied else "the schema is up to date")


async def _migrate(settings: Settings) -> list[str]:
    from ccpush.store import open_store

    store = open_store(settings.store_url)
    await store.open(migrate=False)
    try:
        return await store.migrate()
    finally:
        await store.close()


@app.command()
def demo(
    records: Annotated[
        int, typer.Option(envvar="CCPUSH_DEMO_RECORDS", help="Calls to simulate.")
    ] = 40,
    seconds: Annotated[
        float, typer.Option(envvar="CCPUSH_DEMO_SECONDS", help="Longest the demo runs.")
    ] = 45.0,
) -> None:
    """Watch ccpush work: a simulated call center, a flaky receiver, pushes and retries."""
    from ccpush.demo import run_demo

    code = _run(run_demo(records=records, deadline=seconds))
    raise typer.Exit(code)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


from ccpush.listen import listen  # noqa: E402 - kept beside its registration

app.command()(listen)


def main() -> None:
    app()
