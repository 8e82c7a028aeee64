"""The receiver kit installs on its own (``receiver-kit/``): a wheel of the standard-library
modules that imports nothing else and verifies and parses a real push."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest

from ccpush import wire
from ccpush.signing import generate_secret, signature_header
from tests.conftest import sample_record

ROOT = Path(__file__).resolve().parents[1]
SERVER_ONLY = ("pydantic", "fastapi", "aiohttp", "asyncpg", "pyreqwest", "typer", "uvicorn")

# Run in the kit's own environment: verify and parse the push given on stdin, then say
# which of the server's dependencies got imported (none may).
PROBE = """
import json, sys
from ccpush.receiver import Verifier, parse_push
push = json.load(sys.stdin)
body = push["body"].encode()
Verifier(push["secret"]).verify(body, push["headers"])
parsed = parse_push(body, push["headers"])
print(json.dumps({
    "session": parsed.record.call_session_id,
    "sequence": parsed.info.sequence,
    "imported": sorted({name.split(".")[0] for name in sys.modules} & set(push["server"])),
}))
"""


def _run(*command: str | Path, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(part) for part in command],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _kit_environment(tmp_path: Path) -> Path:
    """A new virtual environment with only the kit's wheel installed; its python."""
    wheels = tmp_path / "wheels"
    _run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, ROOT / "receiver-kit"
    )
    (wheel,) = wheels.glob("ccpush_receiver-*.whl")
    venv.create(tmp_path / "kit", with_pip=True)
    python = tmp_path / "kit" / "bin" / "python"
    _run(python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", wheel)
    return python


@pytest.mark.slow
def test_the_receiver_kit_installs_alone_and_reads_a_signed_push(tmp_path: Path) -> None:
    python = _kit_environment(tmp_path)
    installed = _run(python, "-m", "pip", "list", "--format=freeze").split()
    names = {line.split("==")[0] for line in installed} - {"pip", "setuptools"}  # venv's own
    assert names == {"ccpush-receiver"}

    secret = generate_secret()
    body = json.dumps(sample_record("kit-1")).encode()
    timestamp = int(time.time())
    signature = signature_header([secret], "dlv_7", timestamp, body)
    fixed = wire.fixed_headers(wire.DEFAULT_ZONE)
    headers = wire.push_headers(fixed, "dlv_7", timestamp, signature, 41, 1, 1)
    push = {"secret": secret, "body": body.decode(), "headers": headers, "server": SERVER_ONLY}

    answer = json.loads(_run(python, "-c", PROBE, stdin=json.dumps(push)))
    assert answer == {"session": "kit-1", "sequence": 41, "imported": []}
