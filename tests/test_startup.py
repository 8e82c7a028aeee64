"""What ``ccpush serve`` checks and says as it starts, without starting it (the processes
themselves are in tests/test_cli.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ccpush.cli import data_dir_problem, next_steps
from ccpush.settings import Settings


@pytest.mark.parametrize(
    ("layout", "data_dir", "problem"),
    [
        ({}, "data", None),  # made on start
        ({}, "a/b/c/data", None),  # its parents too
        ({"data/": None}, "data", None),
        ({"data/admin-token": "ccpa_x"}, "data", None),
        ({"file": ""}, "file/data", "{tmp}/file is not a directory"),
        ({"file": ""}, "file/a/b/data", "{tmp}/file is not a directory"),
        ({"data": ""}, "data", "{tmp}/data is not a directory"),
    ],
)
def test_a_data_dir_is_usable_if_it_can_be_made_where_it_is(
    tmp_path: Path, layout: dict[str, str | None], data_dir: str, problem: str | None
) -> None:
    for name, content in layout.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.mkdir()
        else:
            path.write_text(content)
    before = sorted(tmp_path.rglob("*"))
    expected = problem.format(tmp=tmp_path) if problem else None
    assert data_dir_problem(tmp_path / data_dir) == expected
    assert sorted(tmp_path.rglob("*")) == before  # looked at, not written


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any directory")
def test_a_data_dir_in_a_directory_this_user_cannot_write_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert data_dir_problem(locked / "data") == f"{locked} is not writable by this user"
    finally:
        locked.chmod(0o700)


def test_the_next_steps_read_the_token_where_it_is() -> None:
    kept = Settings(data_dir=Path("/srv/my ccpush"))
    steps = "\n".join(next_steps(kept, "http://127.0.0.1:8080"))
    assert "TOKEN=$(cat '/srv/my ccpush/admin-token')" in steps
    assert "http://127.0.0.1:8080/v1/apps -d '" in steps
    assert '"pushUrl": "http://127.0.0.1:9000/cdr"' in steps
    assert "ccpush listen --port 9000 --secret" in steps
    configured = Settings(admin_token="a-long-enough-admin-token-0123456789")
    steps = "\n".join(next_steps(configured, "http://h:1"))
    assert "TOKEN=$CCPUSH_ADMIN_TOKEN" in steps
    assert "a-long-enough-admin-token" not in steps
