"""The running service: store, sender and dispatcher wired from settings, started and stopped."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from aiohttp.abc import AbstractResolver

from ccpush.clock import Clock, SystemClock
from ccpush.dispatcher import AttemptListener, Dispatcher, DispatchSettings
from ccpush.errors import ConfigurationError
from ccpush.logs import log_attempt
from ccpush.metrics import Metrics
from ccpush.notifications.mail import Mailer
from ccpush.notifications.runner import Notifier
from ccpush.replays import ReplayRunner
from ccpush.secret_box import SecretBox, SecretKeyError, new_key, parse_keys
from ccpush.senders import make_sender
from ccpush.settings import MIN_CONSOLE_SECRET_LENGTH, Settings, check_admin_token
from ccpush.sources.brokers import Intake
from ccpush.sources.running import start_sources
from ccpush.store import Store, open_store
from ccpush.upkeep import Upkeep
from ccpush.wire import zone_label

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AdminToken:
    value: str
    generated: bool
    """True when this start created it (print it once, then never again)."""


def resolve_admin_token(settings: Settings) -> AdminToken:
    """The configured token, else the one kept in the data directory, else a new one kept there."""
    if settings.admin_token is not None:
        return AdminToken(settings.admin_token.get_secret_value(), generated=False)
    token, generated = _kept_secret(settings.admin_token_path, "ccpa_")
    if not generated:
        check_admin_token(token)
    return AdminToken(token, generated=generated)


def resolve_console_secret(settings: Settings) -> str:
    """The key that signs console sessions: configured, else kept in the data directory."""
    if settings.console_secret is not None:
        return settings.console_secret.get_secret_value()
    secret = _kept_secret(Path(settings.data_dir) / "console-secret", "ccps_")[0]
    if len(secret) < MIN_CONSOLE_SECRET_LENGTH:
        raise ConfigurationError(f"{settings.data_dir}/console-secret is too short to sign with")
    return secret


def resolve_secret_box(settings: Settings, *, keep: bool = True) -> SecretBox:
    """The box sealing the store's secrets: the configured keys, else the key kept in the
    data directory, else a new one kept there. With ``keep=False`` a new key is not written
    yet: ``keep_secret_key`` writes it once the store has opened (a failed start writes
    nothing)."""
    if settings.secret_key is not None:
        return SecretBox(parse_keys(settings.secret_key.get_secret_value()))
    path = settings.secret_key_path
    key = _kept_secret(path, "", make=new_key)[0] if keep or path.exists() else new_key()
    try:
        return SecretBox(parse_keys(key))
    except SecretKeyError as exc:
        raise ConfigurationError(f"{path}: {exc}") from None


def keep_secret_key(settings: Settings, box: SecretBox) -> None:
    """Keep the generated key of ``box`` in the data directory, if none is kept there yet."""
    if settings.secret_key is None:
        kept = _kept_secret(settings.secret_key_path, "", make=lambda: box.keys[0])[0]
        if kept not in box.keys:
            raise ConfigurationError(f"{settings.secret_key_path} was made meanwhile")


def _kept_secret(
    path: Path, prefix: str, *, make: Callable[[], str] | None = None
) -> tuple[str, bool]:
    """The secret kept in ``path``, else a new one (``prefix`` and random text, or what
    ``make`` makes) kept there (mode 0600); and whether new."""
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = make() if make is not None else prefix + secrets.token_urlsafe(32)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")
    return secret, True


def make_mailer(settings: Settings) -> Mailer | None:
    """What sends notification e-mails, if an SMTP server is configured."""
    server = settings.smtp_server
    if server is None or settings.smtp_from is None:
        return None
    ca_bundle = settings.ca_bundle
    return Mailer(server, settings.smtp_from, ca_bundle)


def check_data_dir(path: Path) -> None:
    """Warn if the data directory (secrets, and by default the SQLite file) is open to other
    users: ccpush makes it 0700, but one made before, or by hand, may not be."""
    with contextlib.suppress(FileNotFoundError):
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning(
                "the data directory %s is open to other users (mode %03o): it holds ccpush's"
                " secrets; make it private with: chmod 700 %s",
                path,
                mode,
                path,
            )


def tune_gc() -> None:
    """Pushing makes many short-lived objects: collect the young generation less often, and
    keep what start-up made out of every collection (measured: ~8 % less CPU per push)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class Service:
    """What ``ccpush serve`` and ``ccpush worker`` run; tests build it with their own clock."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        store: Store | None = None,
        listeners: list[AttemptListener] | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.box = store.box if store is not None else resolve_secret_box(settings)
        """Seals and opens the secrets the store keeps (``ccpush.secret_box``)."""
        self.store = store or open_store(settings.store_url, box=self.box)
        self.zone = settings.record_timezone
        self.resolver = resolver
        """The DNS resolver the target guard wraps (None: aiohttp's threaded resolver), for
        pushes made in this process."""
        self.metrics = Metrics()
        self.sender = make_sender(settings, self.clock, resolver)
        self.dispatcher = Dispatcher(
            self.store,
            self.sender,
            self.clock,
            DispatchSettings(
                schedule=settings.retry_schedule,
                lease=settings.lease,
                concurrency=settings.concurrency,
                batch_size=settings.batch_size,
                poll_interval=settings.poll_interval,
                record_timezone=zone_label(self.zone),
                shutdown_grace=settings.shutdown_grace,
            ),
            listeners=[self.metrics.count_attempt, log_attempt, *(listeners or [])],
        )
        self.metrics.watch_hosts(self.dispatcher.host_limits)
        self.replays = ReplayRunner(
            self.store,
            self.clock,
            owner=self.dispatcher.owner,
            on_enqueued=self.dispatcher.wake,
            lease=settings.lease,
            poll_interval=settings.poll_interval,
        )
        self.upkeep = Upkeep(self.store, self.clock, settings.upkeep)
        self.notifier = Notifier(
            self.store, self.clock, self.sender, make_mailer(settings), settings.notify
        )
        """Operational notifications (``ccpush.notifications``)."""
        self.replays.on_finished = self.notifier.replay_finished
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def request_stop(self) -> None:
        """Ask the dispatcher to finish what is in flight and stop."""
        self._stop.set()

    async def start(self, *, dispatch: bool = True) -> None:
        check_data_dir(Path(self.settings.data_dir))
        await self.store.open()
        await self.sender.start()
        if dispatch:
            tune_gc()
            self._stop.clear()
            self._tasks = [
                asyncio.create_task(self.dispatcher.run(self._stop), name="ccpush-dispatcher"),
                asyncio.create_task(self.replays.run(self._stop), name="ccpush-replays"),
                asyncio.create_task(self.upkeep.run(self._stop), name="ccpush-upkeep"),
                asyncio.create_task(self.notifier.run(self._stop), name="ccpush-notify"),
                asyncio.create_task(
                    self.store.watch_due(self.dispatcher.wake, self._stop), name="ccpush-watch"
                ),
                *start_sources(
                    self.settings.sources,
                    Intake(self.store, self.clock, self.zone, self.metrics, self.dispatcher.wake),
                    self._stop,
                ),
            ]

    async def stop(self) -> None:
        self._stop.set()
        self.replays.wake()  # it waits on its own event, not only on the stop
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.sender.close()
        await self.store.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    @property
    def dispatching(self) -> bool:
        """Whether this process pushes (its dispatching tasks run and none has failed)."""
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    async def wait_dispatcher(self) -> None:
        """Return when dispatching stops (raising what stopped it, if it failed)."""
        if self._tasks:
            done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
