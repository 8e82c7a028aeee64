"""``ccpush listen``: a receiver on your machine, to test an integration against.

Point an app's push address at it (``http://127.0.0.1:9000/cdr``; any path) and watch the
pushes arrive, one table line each: when it came, its sequence number, record version and
attempt, the call, whether its signature verified (with ``--secret``: ✓ or ✗; ``-`` when not
checked) and what was answered. A push that does not verify is answered 401, one that is not
a call record 400, the others ``--status`` (200), or 500 for a ``--fail-rate`` share of them
so you can watch ccpush retry.

Sequence numbers answered 2xx are tracked per path: a number arriving before an earlier one
is reported as a gap (the numbers missing), and again when the late one fills it. On
SIGINT or SIGTERM it prints a summary, with the gaps still open.

It is built on ``ccpush.receiver``, the kit a real receiver uses.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Final

import typer

from ccpush.receiver import (
    DEFAULT_TOLERANCE,
    CallType,
    GapTracker,
    Headers,
    InvalidPushError,
    Push,
    VerificationError,
    Verifier,
    parse_push,
)
from ccpush.wire import SECRET_PREFIX, WEBHOOK_TIMESTAMP

FAILED_STATUS: Final = 500
REFUSED_STATUS: Final = 401
NOT_A_PUSH_STATUS: Final = 400
CALL_TYPES: Final[dict[int, str]] = {
    CallType.GROUP_CALL_TO_AGENT: "group",
    CallType.INCOMING: "incoming",
    CallType.OUTGOING: "outgoing",
}
COLUMNS: Final = "{:<8}  {:>6} {:>3} {:>3}  {:<20} {:<9} {:>7}  {:<3} {}"
HEADER: Final = COLUMNS.format(
    "time", "seq", "ver", "att", "callSessionId", "type", "duration", "sig", "answer"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenOptions:
    host: str = "127.0.0.1"
    port: int = 9000
    secrets: tuple[str, ...] = ()
    status: int = 200
    delay: float = 0.0
    fail_rate: float = 0.0
    seed: int | None = None
    show_json: bool = False
    tolerance: float = DEFAULT_TOLERANCE.total_seconds()


def _print(line: str) -> None:
    print(line, flush=True)


class Listener:
    """What ``listen`` does with each push, HTTP aside: verify, read, answer, print, track."""

    def __init__(self, options: ListenOptions, out: Callable[[str], None] = _print) -> None:
        self.options = options
        self.out = out
        self.verifier = (
            Verifier(options.secrets, tolerance=timedelta(seconds=options.tolerance))
            if options.secrets
            else None
        )
        self.draws = random.Random(options.seed)
        self.trackers: dict[str, GapTracker] = {}
        self.answers: Counter[int] = Counter()
        self.tests = 0

    def handle(self, path: str, body: bytes, headers: Headers) -> int:
        """Print the push and its gaps; the status to answer."""
        refusal = self._refusal(body, headers)
        push, problem = _read(body, headers)
        status = self._status(refusal, push)
        self.answers[status] += 1
        self.out(_line(push, _mark(self.verifier, refusal), status))
        for note in (refusal, problem):
            if note:
                self.out(f"  {note}")
        if self.options.show_json:
            self.out(_pretty(body))
        if push is not None and 200 <= status < 300:
            self._track(path, push)
        return status

    def _refusal(self, body: bytes, headers: Headers) -> str | None:
        if self.verifier is None:
            return None
        try:
            self.verifier.verify(body, headers)
        except VerificationError as exc:
            return f"✗ {exc}"
        return None

    def _status(self, refusal: str | None, push: Push | None) -> int:
        if refusal is not None:
            return REFUSED_STATUS
        if push is None:
            return NOT_A_PUSH_STATUS
        failed = self.draws.random() < self.options.fail_rate
        return FAILED_STATUS if failed else self.options.status

    def _track(self, path: str, push: Push) -> None:
        if push.info.sequence is None:
            self.tests += 1
            return
        tracker = self.trackers.setdefault(path, GapTracker(received_through=None))
        arrival = tracker.add(push.info.sequence)
        where = self._where(path)
        if arrival.opened is not None:
            self.out(f"gap{where}: missing {arrival.opened}")
        if arrival.filled is not None:
            still = ", ".join(map(str, tracker.missing()))
            late = f"{arrival.sequence} arrived late"
            closed = f"gap closed{where}: {late}, nothing missing"
            self.out(f"gap{where}: {late}, still missing {still}" if still else closed)

    def _where(self, path: str) -> str:
        return f" on {path}" if len(self.trackers) > 1 else ""

    def summary(self) -> list[str]:
        """What was received, and the gaps still open."""
        total = sum(self.answers.values())
        answers = ", ".join(f"{n} with {status}" for status, n in sorted(self.answers.items()))
        lines = [f"summary: {total} pushes ({self.tests} test); answered {answers or 'nothing'}"]
        for path, tracker in self.trackers.items():
            missing = ", ".join(map(str, tracker.missing()))
            state = f"missing {missing}" if missing else "none"
            lines.append(f"gaps{self._where(path)}: {state} (highest sequence {tracker.highest})")
        return lines


def _read(body: bytes, headers: Headers) -> tuple[Push | None, str | None]:
    try:
        return parse_push(body, headers), None
    except InvalidPushError as exc:
        return None, f"not a call record push: {exc}"


def _mark(verifier: Verifier | None, refusal: str | None) -> str:
    if verifier is None:
        return "-"
    return "✗" if refusal else "✓"


def _line(push: Push | None, mark: str, status: int) -> str:
    when = time.strftime("%H:%M:%S")
    if push is None:
        return COLUMNS.format(when, "?", "-", "-", "-", "-", "-", mark, status)
    info, record = push.info, push.record
    sequence = "test" if info.is_test else str(info.sequence)
    code = int(record.call_type)
    call_type = CALL_TYPES.get(code, f"type {code}")
    return COLUMNS.format(
        when,
        sequence,
        info.version,
        info.attempt,
        record.call_session_id,
        call_type,
        f"{record.call_duration}s",
        mark,
        status,
    )


def _pretty(body: bytes) -> str:
    try:
        text = json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        text = body.decode(errors="replace")
    return "\n".join("    " + line for line in text.splitlines())


async def serve(listener: Listener) -> None:
    """Listen until SIGINT or SIGTERM, then print the summary."""
    from aiohttp import web

    options = listener.options

    async def receive(request: web.Request) -> web.Response:
        status = listener.handle(request.path, await request.read(), request.headers)
        if options.delay:
            await asyncio.sleep(options.delay)
        return web.Response(status=status, text="ok" if status < 400 else "refused")

    app = web.Application()
    app.router.add_post("/{path:.*}", receive)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, options.host, options.port).start()
        host, port = runner.addresses[0][:2]
        listener.out(f"listening on http://{host}:{port} (any path); {_settings(options)}")
        listener.out(HEADER)
        await _until_signalled()
    finally:
        await runner.cleanup()
    for line in listener.summary():
        listener.out(line)


def _settings(options: ListenOptions) -> str:
    checking = (
        f"verifying with {len(options.secrets)} secret(s)" if options.secrets else "not verifying"
    )
    seed = "" if options.seed is None else f", seed {options.seed}"
    failing = f", {options.fail_rate:g} failed with 500{seed}" if options.fail_rate else ""
    delay = f" after {options.delay:g} s" if options.delay else ""
    return f"{checking}; answering {options.status}{delay}{failing}"


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def listen(
    host: Annotated[
        str, typer.Option(envvar="CCPUSH_LISTEN_HOST", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(envvar="CCPUSH_LISTEN_PORT", min=0, max=65535, help="0: any free port."),
    ] = 9000,
    secret: Annotated[
        list[str] | None,
        typer.Option(
            envvar="CCPUSH_LISTEN_SECRET",
            help=f"The app's {SECRET_PREFIX} signing secret, to verify pushes (repeat it during"
            " a rotation).",
        ),
    ] = None,
    status: Annotated[
        int,
        typer.Option(envvar="CCPUSH_LISTEN_STATUS", min=100, max=599, help="Status to answer."),
    ] = 200,
    delay: Annotated[
        float,
        typer.Option(envvar="CCPUSH_LISTEN_DELAY", min=0, help="Seconds to wait before answering."),
    ] = 0.0,
    fail_rate: Annotated[
        float,
        typer.Option(
            envvar="CCPUSH_LISTEN_FAIL_RATE",
            min=0,
            max=1,
            help="Share of verified pushes answered 500 instead: the n-th one fails when the "
            "n-th draw of random.Random(seed) is below it.",
        ),
    ] = 0.0,
    seed: Annotated[
        int | None, typer.Option(envvar="CCPUSH_LISTEN_SEED", help="Makes --fail-rate repeatable.")
    ] = None,
    show_json: Annotated[
        bool, typer.Option("--json", envvar="CCPUSH_LISTEN_JSON", help="Print each record's JSON.")
    ] = False,
    tolerance: Annotated[
        float,
        typer.Option(
            envvar="CCPUSH_LISTEN_TOLERANCE",
            min=0,
            help=f"Seconds a push's {WEBHOOK_TIMESTAMP} may differ from this machine's clock.",
        ),
    ] = DEFAULT_TOLERANCE.total_seconds(),
) -> None:
    """Receive pushes on this machine and print each one, to test an integration."""
    options = ListenOptions(
        host=host,
        port=port,
        secrets=tuple(secret or ()),
        status=status,
        delay=delay,
        fail_rate=fail_rate,
        seed=seed,
        show_json=show_json,
        tolerance=tolerance,
    )
    try:
        listener = Listener(options)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--secret") from None
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True, errors="replace")
    try:
        asyncio.run(serve(listener))
    except OSError as exc:
        typer.echo(f"ccpush listen: cannot listen on {host}:{port}: {exc}", err=True)
        raise typer.Exit(2) from None
