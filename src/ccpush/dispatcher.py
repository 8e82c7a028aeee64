"""The dispatcher: claims due deliveries under a lease, pushes them, writes the outcomes.

    claimer:  claim ahead (a batch or so beyond the pushes in flight), fairly between apps
      └─ per app, a queue of claimed deliveries; apps take turns
           └─ pushers (``concurrency`` of them) push (``Sender``), each app and each host
              within its share of the pushers
                └─ decide: delivered, retry at the schedule's time, or failed
                     └─ writer: outcomes written back in batches (group commit)

A worker that dies loses nothing: what it held is claimed again when its lease runs out.
A worker that stops gives back what it claimed and did not push.

One outcome the store cannot hold never holds back the others: the senders make every
answer storable (``ccpush.answers``), and should the store still refuse a value
(``StoreRefusedValue``), the writer writes the batch in halves until the refused outcome is
alone, and writes that one without the receiver's answer (``unstorable``). A store that
fails otherwise (an outage) is tried again with the whole batch, less and less often.

Isolation: each host has its own in-flight limit (``ccpush.pacing.HostLimits``): it starts
small, grows while the host answers at its usual latency, halves on a 5xx and drops to one
push when the host times out or refuses connections, so a hanging host holds one pusher,
not a share of them; a 429 or 503 also holds the host's other pushes for a while. While
more than a quarter of the pushers are free, any app may take one; the last quarter goes
only to apps under an equal share that leaves room for one more app
(``ccpush.pacing.FairShare``), so an app that starts sending finds a pusher although
others' pushes hang. No host gets more than ``per_host`` at once, so no push ever waits
inside the HTTP client for a connection. Apps take turns; the claimer claims ahead (a
batch or two beyond the pushers) and skips or limits the apps that have enough waiting
here for their pace, so claimed work never piles up behind a slow app: its deliveries wait
in the store. Stopping, pushes in flight have ``shutdown_grace`` to end; those still
hanging are abandoned and their deliveries given back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from ccpush.answers import UNSTORABLE_ANSWER
from ccpush.app_pace import LocalPaces
from ccpush.clock import Clock
from ccpush.endpoint import Endpoint
from ccpush.errors import StoreRefusedValue
from ccpush.models import Claimed, Completion, DeliveryState, ErrorKind, Outcome
from ccpush.pacing import (
    RETRY_AFTER_CAP,
    FairShare,
    HostLimits,
    HostRules,
    Signal,
    signal_of,
)
from ccpush.retry import RetrySchedule
from ccpush.senders import Pushes
from ccpush.signing import signature_header
from ccpush.store.base import Store
from ccpush.wire import DEFAULT_ZONE, fixed_headers, headers_of_test_push, push_headers

log = logging.getLogger(__name__)

AttemptListener = Callable[[Completion], None]

FLUSH_INTERVAL: Final = 0.02
"""Seconds an outcome may wait to be written with others (the writer's group commit),
unless nothing else is being pushed."""
LEASE_MARGIN: Final = 2.0
"""Seconds of lease a claimed delivery must have left, beyond a push's timeout, to be pushed."""
MIN_CLAIM_GAP: Final = 0.002
"""Seconds at least between the starts of two claims that found less than they asked for:
under a stream of ingestions, one claim takes what a few of them brought."""
EMPTY_CLAIM_GAP: Final = 0.01
"""The same after a claim that found nothing."""
MIN_WAITING: Final = 16
"""Claimed deliveries an app may have waiting here whatever its pace."""
WAITING_SECONDS: Final = 1.0
"""At its recent pace, how long an app's claimed deliveries may take to push."""
STORE_RETRY_FIRST: Final = 0.05
STORE_RETRY_LAST: Final = 30.0
"""Seconds between tries while the store fails: doubling from the first to the last."""
KEPT_PER_CACHE: Final = 4096
"""Entries at most in each of the dispatcher's memories (URL to host, app to pace)."""
TRIES_WHEN_STOPPING: Final = 3
"""Tries to write outcomes once stopping; then they are dropped, and their deliveries are
pushed again when their leases run out."""
CAP_LOG_INTERVAL: Final = 60.0
"""Seconds at least between two logs saying every pusher is busy."""


def store_retry_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` failures of the store in a row."""
    return min(STORE_RETRY_LAST, STORE_RETRY_FIRST * 2.0 ** min(failures - 1, 30))


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatchSettings:
    schedule: RetrySchedule
    lease: timedelta = timedelta(seconds=60)
    """How long a claim holds; must outlast a push's timeout."""
    concurrency: int = 128
    batch_size: int = 256
    poll_interval: float = 1.0
    """Seconds between looks at the store when nothing woke the dispatcher."""
    record_timezone: str = DEFAULT_ZONE
    shutdown_grace: float = 5.0
    """Seconds pushes in flight may take to end once stopping; then they are abandoned and
    their deliveries given back (pushed again: a repeat at most, never a loss)."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def host_of(url: str) -> str:
    """What the HTTP client pools connections by: ``scheme://host:port`` of the address."""
    scheme, _, rest = url.partition("://")
    return f"{scheme.lower()}://{rest.partition('/')[0].partition('?')[0].lower()}"


# A claimed delivery waiting here, and (monotonic) until when it may still be pushed.
_Waiting = tuple[Claimed, float]
# A delivery handed to a pusher: with its host, or None to tell the pusher to stop.
_Handed = tuple[Claimed, str] | None


class Dispatcher:
    def __init__(
        self,
        store: Store,
        sender: Pushes,
        clock: Clock,
        settings: DispatchSettings,
        *,
        listeners: Sequence[AttemptListener] = (),
    ) -> None:
        self.store = store
        self.sender = sender
        self.clock = clock
        self.settings = settings
        self.owner = worker_name()
        self.listeners = list(listeners)
        self._same_headers = fixed_headers(settings.record_timezone)
        concurrency = settings.concurrency
        self._fair = FairShare(concurrency)
        self.host_limits = HostLimits(HostRules(maximum=min(sender.limits.per_host, concurrency)))
        """Per host, the pushes it may have in flight, following how it answers."""
        self._ahead = concurrency + 2 * settings.batch_size
        """Claim while fewer than this are in flight or ready to push (a batch or two ahead
        of the pushers)."""
        self._hold = 4 * self._ahead
        """At most this many claimed at once, whatever they wait for."""
        self._min_claim = max(1, settings.batch_size // 2)
        """Claim when there is room for at least this many: fewer, larger transactions."""
        lease = settings.lease.total_seconds()
        self._pushable_for = max(lease - sender.limits.timeout - LEASE_MARGIN, lease / 2)
        """Seconds after its claim a delivery may still start a push."""
        # Claimed, not yet pushed: per app, oldest first; the apps take turns.
        self._waiting: dict[str, deque[_Waiting]] = {}
        self._turns: deque[str] = deque()
        self._over_share: set[str] = set()
        """Apps with deliveries waiting, held back for being at their fair share."""
        self._host_full: dict[str, set[str]] = {}
        """Apps with deliveries waiting, held back by their host's limit or hold."""
        self._host_timers: dict[str, asyncio.TimerHandle] = {}
        """Per held host, the call that lets its apps take turns again."""
        self._abandoned: list[int] = []
        """Deliveries whose pushes were given up on when stopping."""
        self._cap_logged = -CAP_LOG_INTERVAL
        self._held = 0
        """Claimed deliveries waiting here."""
        self._ready = 0
        """Those of apps not held back: what pushers can take now."""
        self._parked: set[str] = set()
        """The apps held back (by their share or their host)."""
        self._in_flight = 0
        self._app_busy: dict[str, int] = {}
        self._host_busy: dict[str, int] = {}
        self._hosts: dict[str, str] = {}
        self._active: dict[str, int] = {}
        """Per app with work here, how many deliveries (waiting and in flight)."""
        self._pace: dict[str, float] = {}
        """Per app, seconds a push takes (moving average)."""
        self._slow: set[str] = set()
        self._paces = LocalPaces()
        """The paces set by apps' customers (``ccpush.app_pace``), as claimed rows say."""
        self._pace_full: set[str] = set()
        """Apps with deliveries waiting, held back by their ``maxInFlight``."""
        self._pace_timers: dict[str, asyncio.TimerHandle] = {}
        """Per app held back by its ``rateLimit``, the call that lets it take turns again."""
        self._idle: deque[asyncio.Future[_Handed]] = deque()
        # Outcomes to write, deliveries to give back, and the loops' wake-ups.
        self._done: list[Completion] = []
        self._expired: list[int] = []
        self._claimer: asyncio.Future[None] | None = None
        self._nudged = False
        self._want_room = False
        """The claimer waits for room (claimed deliveries to be pushed)."""
        self._skipped: frozenset[str] = frozenset()
        """The apps the last claim skipped: the claimer waits for them to push."""
        self._writer: asyncio.Future[None] | None = None
        self._flush_timer: asyncio.TimerHandle | None = None
        self._stopping = False
        self._pausing: asyncio.Future[None] | None = None
        self._last_sweep = -float("inf")
        self._claim_failures = 0
        self._write_failures = 0
        """Failures of the store in a row, for claims and for writes."""

    def wake(self) -> None:
        """Look for due work now (called after ingestion)."""
        self._poke()

    def _poke(self) -> None:
        """Make the claimer look again: now if it naps, else as soon as its claim is done
        (a wake-up is never lost)."""
        self._nudged = True
        _resolve(self._claimer)

    # The running loop

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until ``stop`` is set; then give back what was claimed and not pushed,
        finish the pushes in flight and write their outcomes."""
        self._stopping = False
        watcher = asyncio.create_task(stop.wait(), name="ccpush-dispatcher-stop")
        watcher.add_done_callback(lambda _: self._stop())
        pushers = [
            asyncio.create_task(self._pusher(), name=f"ccpush-pusher-{n}")
            for n in range(self.settings.concurrency)
        ]
        writer = asyncio.create_task(self._write_loop(), name="ccpush-completion-writer")
        try:
            await self._claim_loop()
        finally:
            self._stop()
            watcher.cancel()
            waiting = self._drop_waiting()
            try:
                await self._give_back(waiting)
            except Exception:
                log.exception("could not give back %d claimed deliveries", len(waiting))
            await self._end_pushes(pushers)
            _resolve(self._writer)
            await writer

    async def _end_pushes(self, pushers: list[asyncio.Task[None]]) -> None:
        """Let the pushes in flight end within the grace period; then abandon the others
        and give their deliveries back, for this or another worker to push again."""
        _, hanging = await asyncio.wait(pushers, timeout=self.settings.shutdown_grace)
        for pusher in hanging:
            pusher.cancel()
        await asyncio.gather(*pushers, return_exceptions=True)
        for timer in (*self._host_timers.values(), *self._pace_timers.values()):
            timer.cancel()
        self._host_timers.clear()
        self._pace_timers.clear()
        abandoned, self._abandoned = self._abandoned, []
        if abandoned:
            log.warning("stopping: gave up on %d pushes still in flight", len(abandoned))
            try:
                await self._give_back(abandoned)
            except Exception:
                log.exception("could not give back %d deliveries", len(abandoned))

    @property
    def held_back(self) -> frozenset[str]:
        """The apps whose claimed deliveries wait for their fair share or their host's cap."""
        return frozenset(self._parked)

    @property
    def store_failing(self) -> bool:
        """Whether the last claim or the last write of outcomes failed (it is being retried)."""
        return bool(self._claim_failures or self._write_failures)

    def _stop(self) -> None:
        self._stopping = True
        _resolve(self._claimer)
        _resolve(self._pausing)
        while self._idle:
            _hand(self._idle.popleft(), None)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, unless told to stop (a wait that new work does not cut short)."""
        if self._stopping:
            return
        self._pausing = waiter = asyncio.get_running_loop().create_future()
        try:
            await _resolved_or_after(waiter, seconds)
        finally:
            self._pausing = None

    async def _claim_loop(self) -> None:
        """Claim round after round; while the store fails, try again less and less often
        (what was claimed before goes on being pushed)."""
        while not self._stopping:
            try:
                await self._claim_round()
            except Exception:
                self._claim_failures += 1
                delay = store_retry_delay(self._claim_failures)
                log.exception(
                    "claiming failed (%d in a row); trying again in %.2f s",
                    self._claim_failures,
                    delay,
                )
                await self._pause(delay)
            else:
                self._claim_failures = 0

    async def _claim_round(self) -> None:
        lease = self.settings.lease.total_seconds()
        if time.monotonic() - self._last_sweep > lease / 4:
            await self._release_expired()
            self._last_sweep = time.monotonic()
        room = min(self._room(), self._hold - self._held - self._in_flight)
        if room < self._min_claim:
            self._want_room = True
            await self._nap(self.settings.poll_interval)
            self._want_room = False
            return
        skip, limits = self._claim_limits()
        self._skipped = frozenset(skip)
        asked = min(room, self.settings.batch_size)
        self._nudged = False
        last_claim = time.monotonic()
        claimed = await self._claim(asked, skip, limits)
        if self._stopping:
            await self._give_back([item.delivery_id for item in claimed])
            return
        self._accept(claimed)
        if len(claimed) < asked:
            # Nothing more due now, or only for apps that have enough waiting here.
            if not self._nudged:
                wait = self.settings.poll_interval if skip else await self._idle_timeout(claimed)
                await self._nap(wait)
            # Woken by new work: let what arrives meanwhile come along (a claim that found
            # nothing waits longer: records kept for apps not pushing wake it too).
            gap = (MIN_CLAIM_GAP if claimed else EMPTY_CLAIM_GAP) - (time.monotonic() - last_claim)
            if gap > 0 and not self._stopping:
                await asyncio.sleep(gap)

    async def _nap(self, seconds: float) -> None:
        """Sleep until woken (new work, room to claim, stop) or ``seconds`` passed."""
        if self._nudged or self._stopping:
            self._nudged = False
            return
        self._claimer = waiter = asyncio.get_running_loop().create_future()
        try:
            await _resolved_or_after(waiter, seconds)
        finally:
            self._claimer = None
            self._nudged = False

    async def _idle_timeout(self, claimed: list[Claimed]) -> float:
        due = await self.store.next_due_at()
        poll = self.settings.poll_interval
        if due is None:
            return poll
        wait = (due - self.clock.now()).total_seconds()
        gap = self._paces.refill_gap() if wait <= 0 and not claimed else None
        if gap is not None:
            # Due, yet none claimable: rate-limited apps waiting for their tokens. Claim
            # again when one may have earned a push.
            return min(gap, poll)
        return min(max(wait, 0.0), poll)

    def _room(self) -> int:
        return self._ahead - self._in_flight - self._ready

    def _claim_limits(self) -> tuple[list[str], dict[str, int]]:
        """The apps the next claim skips, and how many it may bring the others that are
        limited: so that what is claimed can be pushed soon, and a slow app's deliveries
        wait in the store rather than here (see ``_limit``)."""
        skip, limits = [], {}
        batch = self.settings.batch_size
        waiting = self._waiting
        for app in self._active.keys() | self._slow:
            queue = waiting.get(app)
            room = self._limit(app) - (len(queue) if queue else 0)
            if app in self._paces:
                queued, busy = len(queue) if queue else 0, self._app_busy.get(app, 0)
                paced = self._paces.room(app, queued, busy)
                room = room if paced is None else min(room, paced)
            if room <= 0:
                skip.append(app)
            elif room < batch:
                limits[app] = room
        return skip, limits

    def _limit(self, app: str) -> int:
        """How many deliveries an app may have waiting here: what it pushes in
        ``WAITING_SECONDS`` at its recent pace (before any of its pushes has ended, twice
        what it pushes at once), and at least ``MIN_WAITING``."""
        pushing = max(1, self._app_busy.get(app, 0))
        seconds = self._pace.get(app)
        if seconds is None:
            return max(MIN_WAITING, 2 * pushing)
        return max(MIN_WAITING, int(WAITING_SECONDS * pushing / max(seconds, 1e-6)))

    def _accept(self, claimed: list[Claimed]) -> None:
        """Queue claimed deliveries per app, then hand them to idle pushers."""
        if not claimed:
            return
        deadline = time.monotonic() + self._pushable_for
        waiting, active, parked = self._waiting, self._active, self._parked
        paces = self._paces
        for item in claimed:
            app = item.app_id
            paces.learn(app, item.rate_limit, item.max_in_flight)
            queue = waiting.get(app)
            if queue is None:
                waiting[app] = queue = deque()
                self._turns.append(app)
            queue.append((item, deadline))
            active[app] = active.get(app, 0) + 1
            if app not in parked:
                self._ready += 1
        self._held += len(claimed)
        self._hand_out()
        if self._ready and not self._idle:
            self._log_cap()

    def _log_cap(self) -> None:
        """Say, at most once a minute, that claimed work waits for a pusher."""
        now = time.monotonic()
        if now - self._cap_logged >= CAP_LOG_INTERVAL:
            self._cap_logged = now
            log.info(
                "all %d pushers are busy; %d claimed deliveries wait for one (CCPUSH_CONCURRENCY)",
                self.settings.concurrency,
                self._ready,
            )

    def _hand_out(self) -> None:
        idle = self._idle
        while idle:
            taken = self._take()
            if taken is None:
                return
            waiter = idle.popleft()
            if waiter.done():  # its pusher was cancelled: give the delivery back
                self._expired.append(taken[0].delivery_id)
                self._finish(*taken)
                continue
            waiter.set_result(taken)

    def _take(self) -> tuple[Claimed, str] | None:
        """The next delivery to push, if some app may push now: apps in turns, each within
        its host's cap and its fair share (or over it while enough pushers are free)."""
        turns, waiting = self._turns, self._waiting
        app_busy, host_busy, hosts = self._app_busy, self._host_busy, self._hosts
        now = time.monotonic()
        while turns:
            app = turns.popleft()
            queue = waiting[app]
            item, deadline = queue[0]
            host = hosts.get(item.push_url) or self._host(item.push_url)
            on_host = host_busy.get(host, 0)
            if on_host >= self.host_limits.limit(host) or self._host_held(host, now):
                self._host_full.setdefault(host, set()).add(app)
                self._park(app, len(queue))
                continue
            busy = app_busy.get(app, 0)
            if not self._fair.may_take(busy, self._in_flight, len(self._active)):
                self._over_share.add(app)
                self._park(app, len(queue))
                continue
            if app in self._paces and self._held_by_pace(app, busy, now, len(queue)):
                continue
            queue.popleft()
            self._held -= 1
            self._ready -= 1
            if queue:
                turns.append(app)
                if app in self._skipped and len(queue) < self._limit(app):
                    self._poke()  # the claim skipped it: it may have more now
            else:
                del waiting[app]
                if app in self._skipped:
                    self._poke()
            if deadline < now:
                # Claimed too long ago to push within the lease: give it back.
                self._expired.append(item.delivery_id)
                self._forget(app)
                _resolve(self._writer)
                continue
            if app in self._paces:
                self._paces.started(app, now)
            app_busy[app] = busy + 1
            host_busy[host] = on_host + 1
            self._in_flight += 1
            return item, host
        return None

    def _host_held(self, host: str, now: float) -> bool:
        """Whether ``host`` asked to be left alone until later (429, 503): its apps take
        turns again when the hold ends."""
        until = self.host_limits.held_until(host, now)
        if until is None:
            return False
        if host not in self._host_timers:
            loop = asyncio.get_running_loop()
            delay = until - now
            self._host_timers[host] = loop.call_later(delay, self._hold_ended, host)
        return True

    def _held_by_pace(self, app: str, busy: int, now: float, waiting: int) -> bool:
        """Whether ``app`` waits for its own pace (``maxInFlight``: until one of its pushes
        ends; ``rateLimit``: until its next push's time), parked meanwhile."""
        wait = self._paces.wait(app, busy, now)
        if not wait:
            return False
        self._park(app, waiting)
        if wait == math.inf:
            self._pace_full.add(app)
        elif app not in self._pace_timers:
            loop = asyncio.get_running_loop()
            self._pace_timers[app] = loop.call_later(wait, self._pace_ended, app)
        return True

    def _pace_ended(self, app: str) -> None:
        self._pace_timers.pop(app, None)
        if app in self._parked and app in self._waiting:
            self._unpark((app,))
            self._hand_out()

    def _hold_ended(self, host: str) -> None:
        self._host_timers.pop(host, None)
        held_back = self._host_full.pop(host, None)
        if held_back:
            self._unpark(held_back)
            self._hand_out()

    def _park(self, app: str, waiting: int) -> None:
        self._parked.add(app)
        self._ready -= waiting
        if self._want_room and self._room() >= self._min_claim:
            self._poke()

    def _unpark(self, apps: Iterable[str]) -> None:
        for app in apps:
            self._parked.discard(app)
            self._ready += len(self._waiting[app])
            self._turns.append(app)

    def _host(self, url: str) -> str:
        if len(self._hosts) >= KEPT_PER_CACHE:
            self._hosts.clear()
        self._hosts[url] = host = host_of(url)
        return host

    def _forget(self, app: str) -> None:
        left = self._active[app] - 1
        if left:
            self._active[app] = left
        else:
            del self._active[app]

    def _finish(self, item: Claimed, host: str) -> None:
        """A push is over: free its places, and let apps it held back take turns again."""
        app = item.app_id
        self._in_flight -= 1
        app_busy, host_busy = self._app_busy, self._host_busy
        left = app_busy[app] - 1
        if left:
            app_busy[app] = left
        else:
            del app_busy[app]
        left = host_busy[host] - 1
        if left:
            host_busy[host] = left
        else:
            del host_busy[host]
        self._forget(app)
        if not self._in_flight and not self._ready and self._done:
            _resolve(self._writer)  # nothing else to do: write the outcomes now
        if self._host_full:
            held_back = self._host_full.pop(host, None)
            if held_back:
                self._unpark(held_back)
        if app in self._pace_full:
            self._pace_full.discard(app)
            if app in self._waiting:
                self._unpark((app,))
        if self._over_share:
            if self._in_flight < self._fair.shared_from:
                self._unpark(self._over_share)
                self._over_share.clear()
            elif app in self._over_share:
                self._over_share.discard(app)
                self._unpark((app,))
        if self._want_room and self._room() >= self._min_claim:
            self._poke()

    async def _pusher(self) -> None:
        """One of ``concurrency`` loops: take a claimed delivery, push it, hand over the result."""
        loop = asyncio.get_running_loop()
        while True:
            taken = None if self._stopping else self._take()
            if taken is None:
                if self._stopping:
                    return
                waiter: asyncio.Future[_Handed] = loop.create_future()
                self._idle.append(waiter)
                taken = await waiter
                if taken is None:
                    return
            item, host = taken
            try:
                now = self.clock.now()
                outcome = await self.sender.send(
                    item.push_url,
                    item.body,
                    self.headers_for(item, now),
                    started_at=now,
                    client_certificate=item.endpoint.client_certificate if item.endpoint else None,
                )
                took = outcome.duration_ms / 1000
                self._keep_pace(item.app_id, took)
                self._learn(host, outcome, took)
                done = self._done
                done.append(self.decide(item, outcome))
                if len(done) == 1:
                    self._flush_later()
                elif len(done) >= self.settings.batch_size:
                    _resolve(self._writer)
            except asyncio.CancelledError:
                self._abandoned.append(item.delivery_id)
                raise
            finally:
                self._finish(item, host)
            if self._idle and self._turns:
                self._hand_out()

    def _learn(self, host: str, outcome: Outcome, took: float) -> None:
        """Let the host's limit follow how it answered (``ccpush.pacing.HostLimits``)."""
        signal = signal_of(outcome)
        limits = self.host_limits
        before = limits.limit(host)
        limits.record(host, signal, took, time.monotonic(), retry_after=outcome.retry_after)
        if signal is not Signal.FINE and limits.limit(host) == limits.rules.floor < before:
            log.info("pushes to %s held to one at a time after: %s", host, outcome.error)

    def _keep_pace(self, app: str, took: float) -> None:
        pace = self._pace
        if len(pace) >= KEPT_PER_CACHE and app not in pace:
            self._forget_paces()
        seconds = pace[app] = 0.8 * pace.get(app, took) + 0.2 * took
        # An app that cannot push a batch in WAITING_SECONDS, one push at a time, is slow:
        # the claimer limits it even when it has nothing here.
        if seconds * self.settings.batch_size > WAITING_SECONDS:
            self._slow.add(app)
        elif app in self._slow:
            self._slow.discard(app)

    def _forget_paces(self) -> None:
        """Forget the pace of every app with nothing here (it is learnt again)."""
        for app in self._pace.keys() - self._active.keys():
            del self._pace[app]
            self._slow.discard(app)
        self._paces.forget(set(self._active))

    def _flush_later(self) -> None:
        if self._flush_timer is None:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(FLUSH_INTERVAL, self._flush_now)

    def _flush_now(self) -> None:
        self._flush_timer = None
        _resolve(self._writer)

    async def _write_loop(self) -> None:
        """Write outcomes in batches: when a batch is full, or ``FLUSH_INTERVAL`` after the
        first one waiting; give back deliveries claimed too long ago to push. While the
        store fails, the outcomes wait here and are tried again less and less often."""
        loop = asyncio.get_running_loop()
        while True:
            if self._done or self._expired:
                if not await self._write_pending():
                    if self._stopping and self._write_failures >= TRIES_WHEN_STOPPING:
                        self._drop_pending()
                    else:
                        await self._pause(store_retry_delay(self._write_failures))
                    continue
                if len(self._done) >= self.settings.batch_size or (self._done and self._stopping):
                    continue
                if self._done:
                    self._flush_later()
            if self._stopping and not self._in_flight and not self._done:
                return
            self._writer = waiter = loop.create_future()
            try:
                await waiter
            finally:
                self._writer = None

    async def _write_pending(self) -> bool:
        """Write the outcomes waiting and give back the expired claims; False if the store
        failed (what was not written waits for the next try)."""
        batch, self._done = self._done, []
        expired, self._expired = self._expired, []
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        try:
            if batch:
                await self._write_apart(batch, len(batch))
            await self._give_back(expired)
        except Exception:
            self._done[:0] = batch
            self._expired[:0] = expired
            self._write_failures += 1
            log.exception(
                "writing %d outcomes failed (%d in a row)", len(self._done), self._write_failures
            )
            return False
        self._write_failures = 0
        return True

    def _drop_pending(self) -> None:
        log.error(
            "stopping: %d outcomes could not be written; their deliveries are pushed again"
            " when their leases run out",
            len(self._done),
        )
        self._done.clear()
        self._expired.clear()

    def _drop_waiting(self) -> list[int]:
        """Empty the queues: the ids of the deliveries claimed and not handed to a pusher."""
        ids = [item.delivery_id for queue in self._waiting.values() for item, _ in queue]
        for queue in self._waiting.values():
            for item, _ in queue:
                self._forget(item.app_id)
        self._waiting.clear()
        self._turns.clear()
        self._over_share.clear()
        self._host_full.clear()
        self._pace_full.clear()
        self._parked.clear()
        self._held = self._ready = 0
        return ids

    async def _give_back(self, delivery_ids: list[int]) -> None:
        if delivery_ids:
            released = await self.store.release(
                delivery_ids, owner=self.owner, now=self.clock.now()
            )
            log.info("gave back %d claimed deliveries not pushed", released)

    # One pass, for tests and tools: everything due now, until nothing is

    async def run_until_idle(self) -> int:
        """Push everything due at the clock's current time; the number of attempts made."""
        made = 0
        await self._release_expired()
        while claimed := await self._claim(self.settings.batch_size):
            outcomes = await asyncio.gather(
                *(
                    self.sender.send(
                        c.push_url,
                        c.body,
                        self.headers_for(c),
                        client_certificate=c.endpoint.client_certificate if c.endpoint else None,
                    )
                    for c in claimed
                )
            )
            done = [self.decide(c, o) for c, o in zip(claimed, outcomes, strict=True)]
            await self._write_apart(done, len(done))
            made += len(claimed)
        return made

    # Shared steps

    async def _claim(
        self, limit: int, skip: Sequence[str] = (), limits: dict[str, int] | None = None
    ) -> list[Claimed]:
        now = self.clock.now()
        return await self.store.claim_due(
            now=now,
            limit=limit,
            lease_until=now + self.settings.lease,
            owner=self.owner,
            skip_apps=skip,
            app_limits=limits,
        )

    async def _release_expired(self) -> None:
        released = await self.store.release_expired(now=self.clock.now())
        if released:
            log.warning("reclaimed %d deliveries whose worker lease expired", released)

    def headers_for(self, item: Claimed, now: datetime | None = None) -> dict[str, str]:
        """The Standard Webhooks headers (``webhook-id`` the same on every attempt of a
        delivery) and ccpush's own, for an attempt starting ``now`` (default: the clock's),
        after the app's own headers and ``Authorization`` (``ccpush.endpoint``), if it has any."""
        timestamp = int((now or self.clock.now()).timestamp())
        msg_id, keys = f"dlv_{item.delivery_id}", item.signing_keys
        signature = signature_header(keys, msg_id, timestamp, item.body) if keys else None
        headers = push_headers(
            self._same_headers,
            msg_id,
            timestamp,
            signature,
            item.sequence,
            item.version,
            item.attempt,
        )
        return {**item.endpoint.request_headers(), **headers} if item.endpoint else headers

    def test_headers(
        self, keys: tuple[str, ...], body: bytes, endpoint: Endpoint | None = None
    ) -> dict[str, str]:
        """Headers of a test push: signed like a real one, with the app's own headers and
        ``Authorization``, and marked as a test."""
        timestamp = int(self.clock.now().timestamp())
        msg_id = "test_" + secrets.token_hex(8)
        signature = signature_header(keys, msg_id, timestamp, body) if keys else None
        zone = self.settings.record_timezone
        headers = headers_of_test_push(msg_id, timestamp, signature, zone)
        return {**endpoint.request_headers(), **headers} if endpoint else headers

    def decide(self, item: Claimed, outcome: Outcome) -> Completion:
        """What follows an attempt: delivered, another try at the scheduled time, or failed.
        A push the address guard blocked fails at once: another try would be blocked too.
        A retry is never due before the receiver's ``Retry-After`` (capped at
        ``RETRY_AFTER_CAP``): it can delay a retry of a short schedule, never the
        contract's 30 minutes, nor add an attempt."""
        if outcome.ok:
            state, next_at = DeliveryState.DELIVERED, None
        elif outcome.error_kind is ErrorKind.BLOCKED:
            state, next_at = DeliveryState.FAILED, None
        else:
            next_at = self.settings.schedule.next_attempt_at(item.attempt, outcome.started_at)
            state = DeliveryState.FAILED if next_at is None else DeliveryState.PENDING
            if next_at is not None and outcome.retry_after is not None:
                wait = min(outcome.retry_after, RETRY_AFTER_CAP)
                next_at = max(next_at, outcome.started_at + timedelta(seconds=wait))
        return Completion(claimed=item, outcome=outcome, next_state=state, next_attempt_at=next_at)

    async def _write_apart(self, batch: list[Completion], count: int) -> None:
        """Write the first ``count`` completions of ``batch``, and take them out of it.

        If the store refuses a value in them, write them in halves, and halves of those,
        until each refused completion is alone (``_write_refused``): the others are written
        as if it were not there. A failure of the store is raised, ``batch`` still holding
        what was not written."""
        try:
            await self._write(batch if count == len(batch) else batch[:count])
        except StoreRefusedValue as exc:
            if count > 1:
                half = count // 2
                await self._write_apart(batch, half)
                await self._write_apart(batch, count - half)
                return
            await self._write_refused(batch[0], exc)
        del batch[:count]

    async def _write_refused(self, done: Completion, refusal: StoreRefusedValue) -> None:
        """Write an attempt the store refused as ``unstorable`` makes it; should the store
        refuse that too, drop it (its delivery is pushed again when its lease runs out)."""
        claimed = done.claimed
        fields = {
            "app_id": claimed.app_id,
            "delivery_id": claimed.delivery_id,
            "call_session_id": claimed.call_session_id,
            "attempt": claimed.attempt,
        }
        log.error(
            "the store refused the outcome of attempt %d of delivery %d (app %s, call %s): %s;"
            " written without the receiver's answer",
            claimed.attempt,
            claimed.delivery_id,
            claimed.app_id,
            claimed.call_session_id,
            refusal,
            extra=fields,
        )
        try:
            await self._write([unstorable(done)])
        except StoreRefusedValue:
            log.exception(
                "the store refused the outcome of attempt %d of delivery %d (app %s, call %s)"
                " even without the receiver's answer; dropped: the delivery is pushed again"
                " when its lease runs out",
                claimed.attempt,
                claimed.delivery_id,
                claimed.app_id,
                claimed.call_session_id,
                extra=fields,
            )

    async def _write(self, batch: list[Completion]) -> None:
        await self.store.complete(batch, owner=self.owner)
        for done in batch:
            for listener in self.listeners:
                try:
                    listener(done)
                except Exception:
                    log.exception("attempt listener failed")


def unstorable(done: Completion) -> Completion:
    """An attempt whose outcome the store refused, as it is written in its place: what the
    attempt was and when, its error kind and status, and ``UNSTORABLE_ANSWER`` in place of
    the texts taken from the receiver's answer."""
    outcome = done.outcome._replace(error=UNSTORABLE_ANSWER, response_excerpt=None)
    return done._replace(outcome=outcome)


async def _resolved_or_after(waiter: asyncio.Future[None], seconds: float) -> None:
    """Wait until ``waiter`` is resolved, or resolve it after ``seconds``."""
    timer = asyncio.get_running_loop().call_later(seconds, _resolve, waiter)
    try:
        await waiter
    finally:
        timer.cancel()


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


def _hand(future: asyncio.Future[_Handed], value: _Handed) -> None:
    if not future.done():
        future.set_result(value)
