"""``ccpush listen`` as a customer runs it, receiving real pushes from a running ccpush.

The command runs as a subprocess; a Service in this process (with a ManualClock, so the
30-minute retry is immediate) pushes to it, and the tests read its output line by line.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccpush.clock import ManualClock
from ccpush.service import Service
from tests.api_client import ok
from tests.conftest import minimal_record
from tests.helpers import make_service

pytestmark = pytest.mark.slow
ROW = re.compile(
    r"\d\d:\d\d:\d\d\s+(?P<seq>\S+)\s+(?P<ver>\S+)\s+(?P<att>\S+)\s+(?P<sid>\S+)\s+"
    r"(?P<type>.+?)\s+(?P<duration>\d+s|-)\s+(?P<sig>[✓✗-])\s+(?P<answer>\d{3})$"
)


class Listening:
    """A running ``ccpush listen``, and the lines it printed."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.url = ""

    async def next_line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        assert raw, "ccpush listen stopped:\n" + "\n".join(self.lines)
        self.lines.append(raw.decode().rstrip("\n"))
        return self.lines[-1]

    async def expect(self, pattern: str, timeout: float = 10) -> str:
        """Read on until a line matches ``pattern`` (a regex); that line."""
        async with asyncio.timeout(timeout):
            while not re.search(pattern, line := await self.next_line(timeout)):
                pass
        return line

    async def row(self, sid: str, attempt: int = 1) -> dict[str, str]:
        """The table line of a push, by callSessionId and attempt."""
        line = await self.expect(rf"\s{re.escape(sid)}\s.*\s[✓✗-]\s+\d{{3}}$")
        fields = _row(line)
        if fields["att"] != str(attempt):
            return await self.row(sid, attempt)
        return fields

    async def stop(self, signum: signal.Signals) -> list[str]:
        """Signal it; the lines it printed from then on."""
        assert self.process.stdout is not None
        self.process.send_signal(signum)
        rest = await asyncio.wait_for(self.process.stdout.read(), 10)
        assert await asyncio.wait_for(self.process.wait(), 10) == 0
        return rest.decode().splitlines()


def _row(line: str) -> dict[str, str]:
    match = ROW.search(line)
    assert match, f"not a table line: {line!r}"
    return match.groupdict()


@asynccontextmanager
async def listening(*args: str) -> AsyncIterator[Listening]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ccpush",
        "listen",
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
    )
    listen = Listening(process)
    try:
        started = await listen.expect(r"^listening on ", timeout=30)
        listen.url = started.split()[2]
        yield listen
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def seed_failing(pattern: str, rate: float) -> int:
    """A seed for which ``--fail-rate rate`` fails exactly the pushes marked F in ``pattern``
    (``.F..``: the second), by the rule ``listen --help`` states: the n-th verified push
    fails when the n-th draw of ``random.Random(seed)`` is below the rate."""
    for seed in range(100_000):
        draws = random.Random(seed)
        if all((draws.random() < rate) == (mark == "F") for mark in pattern):
            return seed
    raise AssertionError(f"no seed fails {pattern}")


@pytest.fixture
def now_clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
async def service(tmp_path: Path, db_url: str, now_clock: ManualClock) -> AsyncIterator[Service]:
    service = make_service(tmp_path, db_url, now_clock)
    await service.start(dispatch=False)
    yield service
    await service.stop()


async def new_app(admin: httpx.AsyncClient, name: str) -> tuple[str, str]:
    app = await ok(await admin.post("/v1/apps", json={"name": name}), 201)
    secret = (await ok(await admin.get(f"/v1/apps/{app['id']}/signing-secret")))["secret"]
    return app["id"], secret


async def point(admin: httpx.AsyncClient, app_id: str, url: str) -> None:
    await ok(await admin.patch(f"/v1/apps/{app_id}", json={"pushUrl": url}))


async def push(
    admin: httpx.AsyncClient, service: Service, app_id: str, record: dict[str, Any]
) -> None:
    """Ingest one record and push what is due: one push at a time, in a known order."""
    await ok(await admin.post(f"/v1/apps/{app_id}/call-records", json=record), 202)
    await service.dispatcher.run_until_idle()


async def test_pushes_verification_a_retry_and_a_gap_that_closes(
    admin: httpx.AsyncClient, service: Service, now_clock: ManualClock
) -> None:
    app_id, secret = await new_app(admin, "tested")
    stranger_id, _ = await new_app(admin, "another secret")
    seed = seed_failing(".F..", 0.5)
    args = ("--secret", secret, "--fail-rate", "0.5", "--seed", str(seed), "--tolerance", "3600")
    async with listening(*args) as listen:
        await point(admin, app_id, f"{listen.url}/a")
        await point(admin, stranger_id, f"{listen.url}/b")
        for n in (1, 2, 3):
            await push(admin, service, app_id, minimal_record(f"call-{n}", callDuration=n))
        first, failed, third = [await listen.row(f"call-{n}") for n in (1, 2, 3)]
        assert first == {
            "seq": "1", "ver": "1", "att": "1", "sid": "call-1", "type": "incoming",
            "duration": "1s", "sig": "✓", "answer": "200",
        }  # fmt: skip
        assert (failed["seq"], failed["sig"], failed["answer"]) == ("2", "✓", "500")
        assert (third["seq"], third["answer"]) == ("3", "200")
        assert await listen.next_line(10) == "gap: missing 2"

        now_clock.advance(timedelta(minutes=30))
        await service.dispatcher.run_until_idle()
        retried = await listen.row("call-2", attempt=2)
        assert (retried["seq"], retried["sig"], retried["answer"]) == ("2", "✓", "200")
        assert await listen.next_line(10) == "gap closed: 2 arrived late, nothing missing"

        await push(admin, service, stranger_id, minimal_record("stranger"))
        refused = await listen.row("stranger")
        assert (refused["sig"], refused["answer"]) == ("✗", "401")
        assert "no signature matches" in await listen.next_line(10)
        summary = await listen.stop(signal.SIGINT)
    assert summary == [
        "summary: 5 pushes (0 test); answered 3 with 200, 1 with 401, 1 with 500",
        "gaps: none (highest sequence 3)",
    ]
    history = await ok(await admin.get(f"/v1/apps/{app_id}/call-records/call-2/deliveries"))
    [delivery] = history["items"]
    assert [a["statusCode"] for a in delivery["attemptLog"]] == [500, 200]


async def test_an_open_gap_is_in_the_summary_and_json_is_printed(
    admin: httpx.AsyncClient, service: Service
) -> None:
    app_id, _ = await new_app(admin, "unverified")
    seed = seed_failing("..F.", 0.5)  # the test push draws first
    args = ("--json", "--status", "202", "--fail-rate", "0.5", "--seed", str(seed))
    async with listening(*args) as listen:
        await point(admin, app_id, f"{listen.url}/cdr")
        trial = await ok(await admin.post(f"/v1/apps/{app_id}/test-push"))
        assert (trial["delivered"], trial["statusCode"]) == (True, 202)
        test_row = await listen.row(trial["record"]["callSessionId"])
        assert (test_row["seq"], test_row["sig"], test_row["answer"]) == ("test", "-", "202")
        for n in (1, 2, 3):
            await push(admin, service, app_id, minimal_record(f"r{n}", remark="é"))
        assert (await listen.row("r2"))["answer"] == "500"
        await listen.expect(r'^\s+"callSessionId": "r3",$')
        assert await listen.expect(r"^gap") == "gap: missing 2"
        summary = await listen.stop(signal.SIGTERM)
    assert '      "remark": "é",' in listen.lines
    assert summary == [
        "summary: 4 pushes (1 test); answered 3 with 202, 1 with 500",
        "gaps: missing 2 (highest sequence 3)",
    ]


def test_every_option_has_its_environment_variable() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "ccpush", "listen", "--help"],
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    options = ("HOST", "PORT", "SECRET", "STATUS", "DELAY", "FAIL_RATE", "SEED", "JSON")
    for name in options:
        assert f"CCPUSH_LISTEN_{name}" in shown


def test_a_malformed_secret_is_refused_before_listening() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ccpush", "listen", "--port", "0", "--secret", "whsec_***"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert "whsec_ followed by base64" in done.stderr
