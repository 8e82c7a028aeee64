"""Upkeep: retention of old records and audit entries, pausing apps whose address has failed
for days, and deleting expired idempotency keys and the console sessions signed out long
enough ago.

All run in bounded steps from every dispatching process; on PostgreSQL several processes
can run them at once (purges skip what another has locked; pausing twice is harmless).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from ccpush.audit import AUTOMATIC, AuditEntry
from ccpush.clock import Clock
from ccpush.models import App, ReplayJob, ReplayKind
from ccpush.replays import MAX_REPLAY_RECORDS
from ccpush.store.base import Store

log = logging.getLogger(__name__)

CONSOLE_SESSION_LIFE: Final = timedelta(hours=12)
"""How long a console session's cookie is accepted after it was written: a session signed
out longer ago than this has no cookie left that could name it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UpkeepSettings:
    retention: timedelta | None = None
    """Records (and their attempts) older than this are deleted; None: kept for ever."""
    auto_pause_after: timedelta | None = timedelta(days=3)
    """An app whose every push failed for this long is paused; None: never."""
    purge_batch: int = 1000
    interval: float = 60.0
    """Seconds between rounds."""


@dataclass(slots=True)
class UpkeepReport:
    purged: int = 0
    paused: list[str] = field(default_factory=list)
    idempotency_keys: int = 0
    """Expired idempotency keys deleted."""
    console_sessions: int = 0
    """Signed-out console sessions forgotten."""
    audit_entries: int = 0
    """Audit log entries older than the retention deleted."""
    portal_links: int = 0
    """Portal links deleted, expired longer ago than a console session lasts."""


class Upkeep:
    def __init__(self, store: Store, clock: Clock, settings: UpkeepSettings) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("upkeep round failed; trying again next round")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.interval)

    async def run_once(self) -> UpkeepReport:
        report = UpkeepReport()
        if self.settings.auto_pause_after is not None:
            report.paused = await self.pause_failing(self.settings.auto_pause_after)
        if self.settings.retention is not None:
            report.purged = await self.purge(self.settings.retention)
            report.audit_entries = await self.purge_audit(self.settings.retention)
        report.idempotency_keys = await self.purge_idempotency_keys()
        report.console_sessions = await self.forget_console_sessions()
        expired_before = self.clock.now() - CONSOLE_SESSION_LIFE
        report.portal_links = await self.store.purge_portal_links(expired_before=expired_before)
        return report

    async def forget_console_sessions(self) -> int:
        """Forget the sessions signed out before any of their cookies could still be used."""
        ended_before = self.clock.now() - CONSOLE_SESSION_LIFE
        return await self.store.purge_console_sessions(ended_before=ended_before)

    async def purge_idempotency_keys(self) -> int:
        """Delete the idempotency keys that expired, a bounded batch per transaction."""
        now, total, batch = self.clock.now(), 0, self.settings.purge_batch
        while True:
            deleted = await self.store.purge_idempotency_keys(now=now, limit=batch)
            total += deleted
            if deleted < batch:
                return total

    async def purge(self, retention: timedelta) -> int:
        """Delete what is older than ``retention``, a bounded batch per transaction."""
        cutoff, total = self.clock.now() - retention, 0
        while True:
            deleted = await self.store.purge_before(cutoff, limit=self.settings.purge_batch)
            total += deleted
            if deleted < self.settings.purge_batch:
                break
        if total:
            log.info("retention: deleted %d records received before %s", total, cutoff)
        return total

    async def purge_audit(self, retention: timedelta) -> int:
        """Delete the audit log's entries older than ``retention``, a batch at a time."""
        cutoff, total, batch = self.clock.now() - retention, 0, self.settings.purge_batch
        while True:
            deleted = await self.store.purge_audit(cutoff, limit=batch)
            total += deleted
            if deleted < batch:
                return total

    async def pause_failing(self, after: timedelta) -> list[str]:
        now = self.clock.now()
        paused = []
        for app in await self.store.apps_failing_since(now - after):
            reason = pause_reason(app)
            audit = AuditEntry(at=now, actor=AUTOMATIC)
            await self.store.update_app(
                app.id, now=now, paused=True, paused_reason=reason, audit=audit
            )
            log.warning("app %s paused: %s", app.id, reason, extra={"app_id": app.id})
            paused.append(app.id)
        return paused


def pause_reason(app: App) -> str:
    since = app.failing_since.isoformat() if app.failing_since else "?"
    return (
        f"paused by ccpush: every push to {app.push_url} failed since {since};"
        " its records are kept and are pushed again on resume"
    )


async def resume(
    store: Store,
    clock: Clock,
    app_id: str,
    account_id: str | None,
    audit: AuditEntry | None = None,
) -> tuple[App, ReplayJob | None]:
    """Resume pushing. An app ccpush paused gets its failures since the streak began
    pushed again (a replay), besides what was held while it was paused."""
    before = await store.get_app(app_id, account_id)
    now = clock.now()
    app = await store.update_app(app_id, now=now, account_id=account_id, paused=False, audit=audit)
    if before.paused_reason is None or before.failing_since is None:
        return app, None
    job, _ = await store.create_replay(
        app_id,
        kind=ReplayKind.FAILED,
        range_from=before.failing_since,
        range_to=None,
        cap=MAX_REPLAY_RECORDS,
        now=now,
    )
    return app, job
