"""How many pushes may be in flight when ``CCPUSH_CONCURRENCY`` is not set: as many as the
open-file limit leaves room for.

At start, ccpush raises its soft ``RLIMIT_NOFILE`` to the hard limit, then takes from it the
files the process needs besides pushes (the API's connections for ``serve``, the socket pairs
of push processes, the store and the rest) and gives half of what is left to pushes in flight
and half to idle connections kept open for the next push to their hosts (each push in flight
holds one connection; an idle one is closed after ``SenderLimits.idle_seconds``). The figure
is bounded: at least ``MIN_CONCURRENCY``, at most ``MAX_CONCURRENCY`` (more pushers than that
cost memory and CPU without pushing faster on one process).
"""

from __future__ import annotations

import sys
from typing import Final

from ccpush.settings import Settings, env_name

CONCURRENCY: Final = env_name("concurrency")
MIN_CONCURRENCY: Final = 16
MAX_CONCURRENCY: Final = 1024
"""The most pushes in flight a default gives (Little's law: 1,000 pushes a second at one
second each); set ``CCPUSH_CONCURRENCY`` for more."""
OTHER_FILES: Final = 64
"""Files beside connections: the store, logs, the event loop's own, probes' connections."""
UNLIMITED: Final = -1
FILES_WHEN_UNLIMITED: Final = 1 << 20
"""What an unlimited open-file limit counts as."""


def default_concurrency(open_files: int, *, reserved: int) -> int:
    """Pushes in flight for a process that may open ``open_files`` files, ``reserved`` of
    them for other uses: half of the rest (the other half for idle connections), bounded."""
    spare = max(open_files - reserved - OTHER_FILES, 0) // 2
    return max(MIN_CONCURRENCY, min(MAX_CONCURRENCY, spare))


def reserved_files(settings: Settings, *, serving: bool) -> int:
    """Open files a process with ``settings`` needs besides pushes: the API's connections
    for ``serve`` (``serving``), and a socket pair to each push process."""
    return (settings.max_connections if serving else 0) + 2 * settings.push_processes


def raise_to_hard_limit() -> int:
    """Raise the soft open-file limit to the hard one; the limit now (``FILES_WHEN_UNLIMITED``
    if there is none)."""
    if sys.platform == "win32":  # pragma: no cover - no RLIMIT_NOFILE there
        return FILES_WHEN_UNLIMITED
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # a hard limit the kernel caps lower (nr_open)
            return FILES_WHEN_UNLIMITED if soft == UNLIMITED else soft
        soft = hard
    return FILES_WHEN_UNLIMITED if soft == UNLIMITED else soft


def with_concurrency(settings: Settings, *, serving: bool) -> tuple[Settings, str]:
    """``settings`` with ``concurrency`` derived from the open-file limit (raised to the hard
    one first) unless it was set, and the line to log once started (not before: a start
    that fails says so in one line)."""
    if "concurrency" in settings.model_fields_set:
        return settings, f"pushes in flight at most: {settings.concurrency} ({CONCURRENCY})"
    open_files = raise_to_hard_limit()
    reserved = reserved_files(settings, serving=serving)
    concurrency = default_concurrency(open_files, reserved=reserved)
    note = (
        f"pushes in flight at most: {concurrency}, from the open-file limit {open_files}"
        f" ({reserved + OTHER_FILES} kept for other files; set {CONCURRENCY} to choose)"
    )
    return settings.model_copy(update={"concurrency": concurrency}), note
