"""The default number of pushes in flight, from the open-file limit (``ccpush.capacity``)."""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccpush.capacity import (
    MAX_CONCURRENCY,
    MIN_CONCURRENCY,
    default_concurrency,
    reserved_files,
    with_concurrency,
)
from ccpush.settings import Settings
from tests.test_worker_http import _env, running


@pytest.mark.parametrize(
    ("open_files", "reserved", "concurrency"),
    [
        (1024, 0, 480),  # (1024 - 64) // 2: half for pushes, half for idle connections
        (1024, 1000, MIN_CONCURRENCY),  # serve's 1,000 connections leave nothing
        (2048, 1000, 492),
        (2048, 1000 + 2 * 4, 488),  # four push processes' socket pairs
        (4096, 1000, MAX_CONCURRENCY),  # 1,516 is more than a default gives
        (20_000, 1000, MAX_CONCURRENCY),
        (1 << 20, 0, MAX_CONCURRENCY),
        (0, 0, MIN_CONCURRENCY),
    ],
)
def test_half_of_the_spare_open_files_bounded(
    open_files: int, reserved: int, concurrency: int
) -> None:
    assert default_concurrency(open_files, reserved=reserved) == concurrency


@pytest.mark.parametrize(
    ("serving", "processes", "reserved"),
    [(True, 0, 1000), (False, 0, 0), (True, 3, 1006), (False, 2, 4)],
)
def test_reserved_files(serving: bool, processes: int, reserved: int, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, push_processes=processes)
    assert reserved_files(settings, serving=serving) == reserved


@pytest.fixture
def file_limit() -> Iterator[tuple[int, int]]:
    """The open-file limits, put back after the test."""
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield limits
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def test_not_set_it_follows_the_raised_limit(file_limit: tuple[int, int], tmp_path: Path) -> None:
    _, hard = file_limit
    if hard == resource.RLIM_INFINITY or hard < 512:
        pytest.skip(f"needs a finite hard open-file limit of at least 512, not {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    settings, note = with_concurrency(Settings(data_dir=tmp_path), serving=False)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    assert settings.concurrency == default_concurrency(hard, reserved=0)
    assert note.startswith(
        f"pushes in flight at most: {settings.concurrency}, from the open-file limit {hard}"
    )


def test_set_it_is_kept(file_limit: tuple[int, int], tmp_path: Path) -> None:
    settings, note = with_concurrency(Settings(data_dir=tmp_path, concurrency=7), serving=True)
    assert settings.concurrency == 7
    assert note == "pushes in flight at most: 7 (CCPUSH_CONCURRENCY)"


async def test_a_worker_says_the_figure_it_chose_once_started(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard open-file limit to derive from")
    env = _env(tmp_path, CCPUSH_METRICS_PORT="0", CCPUSH_LOG_LEVEL="INFO")
    async with running("worker", env=env) as worker:
        assert worker.stderr is not None
        async with asyncio.timeout(30):
            while b"pushes in flight at most" not in (line := await worker.stderr.readline()):
                assert line, "the worker stopped without saying"
    expected = default_concurrency(hard, reserved=0)
    assert f"pushes in flight at most: {expected}, from the open-file limit {hard}" in (
        line.decode()
    )
