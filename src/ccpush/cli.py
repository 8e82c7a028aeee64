"""The ``ccpush`` command. Every option is also an environment variable (shown in --help);
the README's settings table lists every setting.

A start that cannot succeed (a setting wrong, the port taken, the database unreachable, the
data dir unusable) stops with one line naming the setting or the resource, and exit code 1
(2 for a setting), before anything is written to the data dir or announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import signal
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from ccpush import __version__
from ccpush.capacity import with_concurrency
from ccpush.loop import run as _run
from ccpush.senders import HttpClient
from ccpush.settings import WORKER_METRICS_PORT, Settings, env_name

if TYPE_CHECKING:
    from ccpush.operations_server import Address, OperationsServer
    from ccpush.secret_box import SecretBox
    from ccpush.service import AdminToken, Service
    from ccpush.store import Store

T = TypeVar("T")

SETTINGS_TABLE = (
    "Every setting is a CCPUSH_* environment variable; the options shown are the ones that"
    " also exist on the command line (an option overrides its variable). The README's"
    " Configuration table lists every setting."
)

app = typer.Typer(
    name="ccpush",
    help="Push call records to customers' cc-http push addresses.",
    epilog=SETTINGS_TABLE,
    no_args_is_help=True,
    add_completion=False,
)


def _default(field: str) -> str:
    """A setting's default as ``--help`` shows it, read from ``Settings``."""
    value = Settings.model_fields[field].default
    return f"{value:g}" if isinstance(value, float) else str(value)


def _option(field: str, what: str) -> Any:
    """The option of a setting: its environment variable, and its default in the help (the
    option's own default is None: an option not given leaves the setting to ``Settings``)."""
    return typer.Option(envvar=env_name(field), help=what, show_default=_default(field))


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        envvar=env_name("database_url"),
        help="sqlite:///path.db or postgresql://host/db",
        show_default="SQLite in the data dir",
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(envvar=env_name("data_dir"), help="Where the SQLite file and admin token live."),
]
Host = Annotated[str | None, _option("host", "Where serve listens")]
Port = Annotated[int | None, _option("port", "The port serve listens on")]
Schedule = Annotated[str | None, _option("retry_schedule", "Delays between attempts")]
PushTimeout = Annotated[float | None, _option("push_timeout", "Seconds for one push")]
Concurrency = Annotated[
    int | None,
    typer.Option(
        envvar=env_name("concurrency"),
        help="Pushes in flight at once",
        show_default="from the open-file limit, at most 1024",
    ),
]
PushProcesses = Annotated[
    int | None,
    _option("push_processes", "Child processes that make the pushes (0: this process)"),
]
HttpClientOption = Annotated[
    HttpClient | None,
    _option("http_client", "What makes the pushes' HTTP requests: aiohttp or reqwest"),
]
LogLevel = Annotated[
    str | None, _option("log_level", "Lowest level logged: DEBUG, INFO, WARNING or ERROR")
]
LogFormat = Annotated[str | None, _option("log_format", "text, or json: one object per line")]
AllowedNetworks = Annotated[
    str | None,
    _option(
        "allowed_target_networks",
        "CIDR networks pushes may reach although not global (10.0.0.0/8, fd00::/8...)",
    ),
]
Dev = Annotated[
    bool | None,
    typer.Option(
        "--dev",
        envvar=env_name("dev"),
        help="Development mode: pushes may reach this machine (127.0.0.0/8, ::1), to test with"
        " ccpush listen; the log shows the next steps. Never in production.",
        show_default="off",
    ),
]


def _settings(**given: Any) -> Settings:
    try:
        return Settings(**{key: value for key, value in given.items() if value is not None})
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            typer.echo(f"ccpush: {_problem(error)}", err=True)
        raise typer.Exit(2) from None


def _problem(error: ErrorDetails) -> str:
    """``invalid setting CCPUSH_RETRY_SCHEDULE: 'soon' is not a duration ...``."""
    cause = error.get("ctx", {}).get("error")
    reason = str(cause) if error["type"] == "value_error" and cause else error["msg"]
    if not error["loc"]:  # settings that do not fit together
        return f"invalid settings: {reason}"
    field, *inside = (str(part) for part in error["loc"])
    return f"invalid setting {'.'.join([env_name(field), *inside])}: {reason}"


def _logging(settings: Settings) -> None:
    from ccpush.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)


class StartupFailure(Exception):
    """Why a start cannot succeed, in one line naming the setting or the resource."""


def _fail(settings: Settings, message: str, code: int = 1) -> NoReturn:
    """Report a failed start on one line of stderr (a JSON object in JSON mode), and exit."""
    if settings.log_format == "json":
        logging.getLogger("ccpush").error("%s", message)
    else:
        typer.echo(f"ccpush: {message}", err=True)
    raise typer.Exit(code)


def _run_started(settings: Settings, main: Coroutine[Any, Any, T]) -> T:
    """Run ``main``; a ``StartupFailure`` it raises ends the process in one line."""
    try:
        return _run(main)
    except StartupFailure as exc:
        _fail(settings, str(exc))


def _bound(settings: Settings) -> socket.socket:
    """The API's socket, bound before anything is written or announced: the port is ours.
    It listens once ccpush is ready (until then, connecting is refused, as it should be)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        _fail(settings, _port_failure(settings, exc))
    return sock


def _port_failure(settings: Settings, exc: OSError) -> str:
    return (
        f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
        f" (choose another {env_name('port')} or {env_name('host')}; --port, --host)"
    )


def data_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot be the data dir, found without writing anything; None if it can.

    The data dir is made (0700) where it is missing, so its nearest existing ancestor must
    be a directory this process may write in."""
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user"
    return None


def _check_data_dir(settings: Settings, *, serving: bool) -> None:
    """Fail if the data dir is needed (for the SQLite file; for ``serve``, the admin token
    and the console's secret when they are not set) and cannot be used."""
    needed = (
        settings.database_url is None
        or settings.secret_key is None
        or (serving and (settings.admin_token is None or settings.console_secret is None))
    )
    problem = data_dir_problem(Path(settings.data_dir)) if needed else None
    if problem is not None:
        raise StartupFailure(_data_dir_failure(settings, problem))


def _data_dir_failure(settings: Settings, problem: object) -> str:
    return f"the data dir {settings.data_dir} ({env_name('data_dir')}) cannot be used: {problem}"


def _database_failure(settings: Settings, problem: object) -> str:
    from ccpush.sources.config import redact

    if settings.database_url is None:  # the SQLite file in the data dir
        return _data_dir_failure(settings, problem)
    shown = redact(settings.database_url)
    return f"cannot open the database {shown} ({env_name('database_url')}): {problem}"


def _store(settings: Settings) -> Store:
    """The store of ``settings``, not opened (a database URL naming no store fails)."""
    from ccpush.errors import StoreError
    from ccpush.store import open_store

    try:
        return open_store(settings.store_url, box=_secret_box(settings))
    except StoreError as exc:
        raise StartupFailure(f"invalid setting {env_name('database_url')}: {exc}") from None


def _secret_box(settings: Settings) -> SecretBox:
    """The box sealing the store's secrets: set, kept in the data dir, or generated there."""
    from ccpush.errors import ConfigurationError
    from ccpush.service import resolve_secret_box

    try:
        return resolve_secret_box(settings, keep=False)
    except OSError as exc:
        raise StartupFailure(_data_dir_failure(settings, exc)) from None
    except ConfigurationError as exc:
        raise StartupFailure(str(exc)) from None


async def _open(store: Store, settings: Settings, *, migrate: bool = True) -> None:
    """Open ``store``; a database that cannot be reached or used ends the start in one line."""
    from ccpush.errors import StoreError

    try:
        await store.open(migrate=migrate)
    except (StoreError, OSError, ValueError) as exc:
        with contextlib.suppress(Exception):
            await store.close()
        raise StartupFailure(_database_failure(settings, exc)) from None
    _keep_secret_key(settings, store)


def _keep_secret_key(settings: Settings, store: Store) -> None:
    """Keep a generated secret key, now that the store opened (a failed start writes nothing)."""
    from ccpush.errors import ConfigurationError
    from ccpush.service import keep_secret_key

    try:
        keep_secret_key(settings, store.box)
    except (OSError, ConfigurationError) as exc:
        raise StartupFailure(_data_dir_failure(settings, exc)) from None


def _service(settings: Settings) -> Service:
    from ccpush.service import Service

    return Service(settings, store=_store(settings))


async def _start(service: Service) -> None:
    """Start ``service``, its store opened first (a failure to open it ends in one line)."""
    await _open(service.store, service.settings)
    await service.start()


def _admin_token(settings: Settings) -> AdminToken:
    """The admin token: set, kept in the data dir, or generated there (and the log says so)."""
    from ccpush.service import resolve_admin_token

    try:
        token = resolve_admin_token(settings)
    except OSError as exc:
        raise StartupFailure(_data_dir_failure(settings, exc)) from None
    except ValueError as exc:
        raise StartupFailure(f"the admin token in {settings.admin_token_path}: {exc}") from None
    if token.generated:
        logging.getLogger("ccpush").info(
            "generated an admin token, kept in %s (mode 0600)", settings.admin_token_path
        )
    return token


MetricsHost = Annotated[str | None, _option("metrics_host", "Where the metrics port listens")]
MetricsPort = Annotated[
    int | None,
    typer.Option(
        envvar=env_name("metrics_port"),
        help="A port of its own for /healthz, /readyz and /metrics",
        show_default=f"{WORKER_METRICS_PORT} for worker; serve: none, only its API port",
    ),
]


@app.command(epilog=SETTINGS_TABLE)
def serve(
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    host: Host = None,
    port: Port = None,
    retry_schedule: Schedule = None,
    push_timeout: PushTimeout = None,
    concurrency: Concurrency = None,
    push_processes: PushProcesses = None,
    http_client: HttpClientOption = None,
    allowed_target_networks: AllowedNetworks = None,
    dev: Dev = None,
    metrics_host: MetricsHost = None,
    metrics_port: MetricsPort = None,
    log_level: LogLevel = None,
    log_format: LogFormat = None,
) -> None:
    """Run the API and the dispatcher in one process."""
    settings = _settings(**locals())
    from ccpush.operations_server import serve_address

    _logging(settings)
    settings, capacity = with_concurrency(settings, serving=True)
    _raise_file_limit(settings, serving=True)
    api = _bound(settings)
    address = serve_address(settings)
    probes = None if address is None else _operations_server(settings, address)
    _run_started(settings, _serve(settings, api, probes, capacity))


async def _serve(
    settings: Settings, api: socket.socket, probes: OperationsServer | None, capacity: str
) -> None:
    from ccpush.app import create_app
    from ccpush.http_server import make_server

    _check_data_dir(settings, serving=True)
    service = _service(settings)
    await _start(service)
    try:
        token = _admin_token(settings)
        server = make_server(create_app(service, admin_token=token.value), settings)
        try:
            api.listen()  # another process may have bound the port as well, and listen first
        except OSError as exc:
            raise StartupFailure(_port_failure(settings, exc)) from None
        _announce(settings, api)
        logging.getLogger("ccpush").info("%s", capacity)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, setattr, server, "should_exit", True)
        async with probes.serving(service) if probes else contextlib.nullcontext():
            await server.serve(sockets=[api])
    finally:
        await service.stop()


def _announce(settings: Settings, api: socket.socket) -> None:
    """Say where ccpush serves; in development mode, warn, and show the next steps."""
    from ccpush.guard import LOOPBACK_NETWORKS

    log = logging.getLogger("ccpush")
    base = _url_of(api)
    log.info("serving the API at %s/v1 and the console at %s/console/", base, base)
    if not settings.dev:
        return
    log.warning(
        "development mode (--dev, %s): pushes may reach this machine's loopback addresses"
        " (%s); never use it in production",
        env_name("dev"),
        ", ".join(map(str, LOOPBACK_NETWORKS)),
    )
    log.info("next steps, in another terminal:\n%s", "\n".join(next_steps(settings, base)))


def _url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def next_steps(settings: Settings, base: str) -> list[str]:
    """Commands that take a new operator from a started ``serve --dev`` to a push arriving
    at ``ccpush listen`` (README, *Running it*, explains each)."""
    from ccpush.listen import ListenOptions

    port = ListenOptions().port
    read_token = (
        f"TOKEN=${env_name('admin_token')}"
        if settings.admin_token is not None
        else f"TOKEN=$(cat {shlex.quote(str(settings.admin_token_path))})"
    )
    bearer = '-H "Authorization: Bearer $TOKEN"'
    app = json.dumps({"name": "local test", "pushUrl": f"http://127.0.0.1:{port}/cdr"})
    return [
        f"  {read_token}",
        f"  curl -sS {bearer} -H 'Content-Type: application/json' {base}/v1/apps -d '{app}'",
        f"  curl -sS {bearer} {base}/v1/apps/<the app's id>/signing-secret",
        f"  ccpush listen --port {port} --secret <its secret, whsec_...>",
        "  (then send a record: README, Running it)",
    ]


@app.command(epilog=SETTINGS_TABLE)
def worker(
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    retry_schedule: Schedule = None,
    push_timeout: PushTimeout = None,
    concurrency: Concurrency = None,
    push_processes: PushProcesses = None,
    http_client: HttpClientOption = None,
    allowed_target_networks: AllowedNetworks = None,
    metrics_host: MetricsHost = None,
    metrics_port: MetricsPort = None,
    log_level: LogLevel = None,
    log_format: LogFormat = None,
) -> None:
    """Run only the dispatcher (start several, on PostgreSQL, to scale out), answering
    /healthz, /readyz and /metrics on the metrics port."""
    settings = _settings(**locals())
    from ccpush.operations_server import worker_address

    _logging(settings)
    # The probes' server is the worker's only one: its start, stop and scrapes are not news.
    settings, capacity = with_concurrency(settings, serving=False)
    _raise_file_limit(settings, serving=False)
    probes = _operations_server(settings, worker_address(settings), log_level="warning")
    _run_started(settings, _worker(settings, probes, capacity))


def _raise_file_limit(settings: Settings, *, serving: bool) -> None:
    """Raise this process's open-file limit to what ``settings`` need (``serving``: the
    API's connections too), or end the start in one line."""
    from ccpush.errors import ConfigurationError
    from ccpush.http_server import raise_open_file_limit

    try:
        raise_open_file_limit(settings, serving=serving)
    except ConfigurationError as exc:
        setting = "max_connections" if serving else "concurrency"
        _fail(settings, f"invalid setting {env_name(setting)}: {exc}", code=2)


def _operations_server(
    settings: Settings, address: Address, *, log_level: str | None = None
) -> OperationsServer:
    """The server of /healthz, /readyz and /metrics, listening at once (``/healthz``
    answers while the store opens); a port taken ends the start in one line."""
    from ccpush.operations_server import OperationsServer, listen

    try:
        sock = listen(address)
    except OSError as exc:
        host, port = address
        _fail(
            settings,
            f"cannot listen on {host}:{port} for /healthz, /readyz and /metrics:"
            f" {exc.strerror or exc} (choose another {env_name('metrics_port')} or"
            f" {env_name('metrics_host')}; --metrics-port, --metrics-host)",
        )
    return OperationsServer(sock, settings, log_level=log_level)


async def _worker(settings: Settings, probes: OperationsServer, capacity: str) -> None:
    _check_data_dir(settings, serving=False)
    service = _service(settings)
    loop = asyncio.get_running_loop()
    log = logging.getLogger("ccpush")
    async with probes.running():
        await _start(service)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, service.request_stop)
        log.info(
            "worker %s dispatching; /healthz, /readyz and /metrics on %s",
            service.dispatcher.owner,
            probes.url,
        )
        log.info("%s", capacity)
        try:
            with probes.answering_for(service):
                await service.wait_dispatcher()
        finally:
            await service.stop()


@app.command()
def migrate(database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Bring the database schema up to date."""
    settings = _settings(**locals())
    applied = _run_started(settings, _migrate(settings))
    typer.echo("applied: " + ", ".join(applied) if applied else "the schema is up to date")


async def _migrate(settings: Settings) -> list[str]:
    _check_data_dir(settings, serving=False)
    store = _store(settings)
    await _open(store, settings, migrate=False)
    try:
        return await store.migrate()
    finally:
        await store.close()


@app.command("rotate-secret-key")
def rotate_secret_key(
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    new_key: Annotated[
        bool,
        typer.Option(
            "--new-key",
            envvar="CCPUSH_PRINT_NEW_KEY",
            help="Only print a new key, to put first in the list.",
        ),
    ] = False,
) -> None:
    """Seal every kept secret again with the first key of CCPUSH_SECRET_KEY (put a new key
    first, run this, then drop the old one)."""
    if new_key:
        from ccpush.secret_box import new_key as make_key

        typer.echo(make_key())
        return
    settings = _settings(database_url=database_url, data_dir=data_dir)
    count = _run_started(settings, _rotate_secret_key(settings))
    typer.echo(f"re-sealed the secrets of {count} apps with the first key")


async def _rotate_secret_key(settings: Settings) -> int:
    _check_data_dir(settings, serving=False)
    store = _store(settings)
    await _open(store, settings)
    try:
        return await store.seal_secrets(rotate=True)
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

from ccpush.operator_cli import add_operator_commands  # noqa: E402 - beside its registration

add_operator_commands(app)


def main() -> None:
    app()
