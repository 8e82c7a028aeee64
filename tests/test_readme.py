"""The README, followed as a new operator follows it.

The walkthrough of *Running it* (the ``sh`` blocks marked ``<!-- walkthrough... -->``) is
run as typed, block after block, in one bash against the ``ccpush serve`` its first block
starts, and must end with a record verified and answered 200 at ``ccpush listen``. Every
other shell command of the README must parse and name real commands and options, and every
``CCPUSH_*`` it names must be a real setting or option variable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import string
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer

from ccpush.cli import app
from ccpush.settings import Settings, env_name
from tests.helpers import eventually
from tests.served import free_port

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCUMENTS = [README, *(REPO / "docs" / name for name in (
    "operations.md", "security.md", "sources.md", "freeswitch.md", "receiving.md",
))]  # fmt: skip
"""The pages that show ccpush's commands and settings: their shell blocks are checked."""
VENV_BIN = Path(sys.executable).parent
STEP_SECONDS = 30.0
"""How long one walkthrough block may take, the wait it names included."""
ARRIVED = re.compile(r"\S+ +1 +1 +1 +\S+ +\S+ +\S+ +✓ +200$", re.MULTILINE)
"""``ccpush listen``'s line for a first push of a record (sequence 1, version 1, attempt 1),
its signature verified and answered 200."""
BLOCK = re.compile(r"(?:<!--\s*(?P<marker>.*?)\s*-->\n)?```sh\n(?P<code>.*?)```", re.DOTALL)
WAIT = re.compile(r'wait for (?:"(?P<text>[^"]+)"|/(?P<pattern>.+)/)')
BUILTINS = frozenset({"cd", "export", "kill", "wait", "set", "echo", "source", ".", "}"})
OPERATORS = "();<>|&\n"
REDIRECTIONS = frozenset({"<", ">", ">>", ">&", "<&", "&>", "&>>"})
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Step:
    """A block of the walkthrough: run as the server, or typed into the shell (then, if it
    says so, wait until the output shows ``wait_for``)."""

    code: str
    server: bool = False
    wait_for: re.Pattern[str] | None = None


def shell_blocks(text: str) -> list[tuple[str | None, str]]:
    """Every ``sh`` block of ``text``, with the HTML comment just before it (or None)."""
    return [(found["marker"], found["code"]) for found in BLOCK.finditer(text)]


def walkthrough(text: str) -> list[Step]:
    steps = []
    for marker, code in shell_blocks(text):
        if marker is None or not marker.startswith("walkthrough"):
            continue
        wait = WAIT.search(marker)
        pattern = None
        if wait is not None:
            pattern = re.compile(re.escape(wait["text"]) if wait["text"] else wait["pattern"])
        steps.append(Step(code, server=marker.endswith(": server"), wait_for=pattern))
    return steps


def test_the_walkthrough_is_marked_in_order() -> None:
    steps = walkthrough(README.read_text())
    assert steps[0].server, "the walkthrough starts ccpush"
    assert [step.server for step in steps].count(True) == 1
    assert "ccpush listen" in "".join(step.code for step in steps)


@pytest.mark.slow
async def test_the_walkthrough_ends_with_a_record_at_the_listener(tmp_path: Path) -> None:
    steps = walkthrough(README.read_text())
    env = _fresh_machine(tmp_path)
    server = await Terminal.open(["bash", "-c", steps[0].code], env)
    shell = await Terminal.open(["bash"], env)
    try:
        await eventually(lambda: _answers(env["CCPUSH_PORT"]), timeout=STEP_SECONDS)
        await shell.type("set -euo pipefail")
        for number, step in enumerate(steps[1:], start=1):
            await shell.run(number, step)
    finally:
        await shell.close()
        await server.close()
    assert ARRIVED.search(shell.text), shell.text
    assert "development mode" in server.text
    token = home_data_dir(env) / "admin-token"
    assert token.stat().st_mode & 0o077 == 0
    assert token.read_text().strip() not in shell.text + server.text


def home_data_dir(env: dict[str, str]) -> Path:
    """The default data dir, under the new home."""
    return Path(env["HOME"], ".local", "share", "ccpush")


def _fresh_machine(tmp_path: Path) -> dict[str, str]:
    """The environment of a new operator's terminal: a new home, ccpush on the PATH, no
    ccpush settings or proxies; free ports for the server and the listener."""
    kept = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CCPUSH_", "XDG_")) and "proxy" not in name.lower()
    }
    home = tmp_path / "home"
    home.mkdir()
    return {
        **kept,
        "HOME": str(home),
        "PATH": f"{VENV_BIN}{os.pathsep}{kept.get('PATH', '')}",
        "CCPUSH_PORT": str(free_port()),
        "CCPUSH_LISTEN_PORT": str(free_port()),
    }


async def _answers(port: str) -> bool:
    async with httpx.AsyncClient() as client:
        try:
            return (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        except httpx.TransportError:
            return False


class Terminal:
    """A command in a session of its own, in the working copy, and everything it (and what
    it started in the background) printed; a shell is typed into as a reader types."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self.process = process
        self.stdin = process.stdin
        self.text = ""
        self._reading = asyncio.create_task(self._read(process.stdout))

    @classmethod
    async def open(cls, command: list[str], env: dict[str, str]) -> Terminal:
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=REPO,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        return cls(process)

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(4096):
            self.text += chunk.decode(errors="replace")

    async def type(self, code: str) -> None:
        self.stdin.write(code.encode() + b"\n")
        await self.stdin.drain()

    async def run(self, number: int, step: Step) -> None:
        """Type ``step``, and wait until it has run and shown what it should."""
        start, done = len(self.text), f"-- block {number} done --"
        await self.type(f"{step.code}\necho '{done}'")
        pattern = step.wait_for

        def finished() -> bool:
            if self._reading.done():
                raise AssertionError(f"the shell stopped in block {number}:\n{self.text}")
            shown = self.text[start:]
            return done in shown and (pattern is None or bool(pattern.search(shown)))

        try:
            await eventually(finished, timeout=STEP_SECONDS)
        except TimeoutError:
            raise AssertionError(f"block {number} did not end:\n{step.code}\n{self.text}") from None

    async def close(self) -> None:
        """End the input, stop the session's processes, and wait for the last output."""
        self.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        async with asyncio.timeout(STEP_SECONDS):
            await self._reading
            await self.process.wait()


# Every other command


def commands(code: str) -> Iterator[list[str]]:
    """The simple commands of a shell block, as words (variables not expanded), split where
    bash splits them: at ``;``, ``&``, ``|``, newlines and parentheses (``$(...)`` too)."""
    lexer = shlex.shlex(without_comments(code), posix=True, punctuation_chars=OPERATORS)
    lexer.whitespace = " \t\r"
    lexer.commenters = ""
    lexer.wordchars += "".join(c for c in string.punctuation if c not in OPERATORS + "'\"\\")
    words: list[str] = []
    redirected = False
    for token in lexer:
        if redirected:
            redirected = False  # the file of a redirection
        elif token in REDIRECTIONS:
            redirected = True
        elif set(token) <= set(OPERATORS):
            if words:
                yield words
            words = []
        else:
            words.append(token)
    if words:
        yield words


def without_comments(code: str) -> str:
    """``code`` without its comments: from a ``#`` that starts a word, outside quotes, to the
    end of its line. Continued lines are joined."""
    kept, quote, previous = [], "", "\n"
    lines = iter(code.replace("\\\n", " "))
    for char in lines:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and previous.isspace():
            char = next((rest for rest in lines if rest == "\n"), "\n")
        kept.append(char)
        previous = char
    return "".join(kept)


def called(words: list[str]) -> list[str]:
    """The command and its arguments, without the variable assignments (and the ``{`` of a
    group) before it."""
    index = 0
    while index < len(words) and (words[index] == "{" or ASSIGNMENT.fullmatch(words[index])):
        index += 1
    return words[index:]


def _readme_commands() -> list[list[str]]:
    found = []
    for document in DOCUMENTS:
        for _, code in shell_blocks(document.read_text()):
            found += [words for words in map(called, commands(code)) if words]
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_shell_block_of_the_readme_parses(document: Path) -> None:
    for _, code in shell_blocks(document.read_text()):
        checked = subprocess.run(["bash", "-n"], input=code, text=True, capture_output=True)
        assert checked.returncode == 0, f"{checked.stderr}\n{code}"


def test_every_command_of_the_readme_exists() -> None:
    functions = set(re.findall(r"^(\w+)\(\) \{", README.read_text(), re.MULTILINE))
    for command, *_ in _readme_commands():
        exists = (
            command in BUILTINS
            or command in functions
            or (REPO / command).exists()
            or shutil.which(command) is not None
            or command == "ccpush"  # on the PATH from .venv/bin, as *Running it* sets up
        )
        assert exists, f"the README runs {command!r}, which is no command"


def test_every_ccpush_command_of_the_readme_names_real_options() -> None:
    root = typer.main.get_command(app)
    seen = []
    for words in _readme_commands():
        if Path(words[0]).name != "ccpush":
            continue
        command, path = _subcommand(root, words[1:])
        given = {word.partition("=")[0] for word in words if word.startswith("--")}
        known = {option for param in command.params for option in param.opts}
        assert given <= known | {"--help"}, f"{words}: no such option {given - known}"
        seen.append(path)
    assert ["serve"] in seen
    assert ["listen"] in seen
    for path in map(list, {tuple(path) for path in seen}):
        shown = _ccpush(*path, "--help")
        assert shown.returncode == 0, shown.stderr


def _subcommand(root: Any, words: list[str]) -> tuple[Any, list[str]]:
    """The (typer) command that ``ccpush`` followed by ``words`` runs, and its path."""
    command, path = root, []
    while words and words[0] in getattr(command, "commands", {}):
        command = command.commands[words[0]]
        path.append(words.pop(0))
    assert path, f"ccpush {' '.join(words)}: no such command"
    return command, path


def _ccpush(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ccpush", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=60,
        check=False,
    )


def _option_variables() -> dict[str, set[str]]:
    """Each command-line option's environment variable, with the options that read it."""
    found: dict[str, set[str]] = {}
    pending = [typer.main.get_command(app)]
    while pending:
        command = pending.pop()
        pending += getattr(command, "commands", {}).values()
        for param in command.params:
            envvars = [param.envvar] if isinstance(param.envvar, str) else param.envvar or []
            for envvar in envvars:
                found.setdefault(envvar, set()).update(param.opts)
    return found


SETTING_VARIABLES = {env_name(field) for field in Settings.model_fields}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_ccpush_variable_of_the_readme_is_real(document: Path) -> None:
    named = set(re.findall(r"\bCCPUSH_[A-Z0-9_]+", document.read_text()))
    unknown = named - SETTING_VARIABLES - set(_option_variables())
    assert not unknown, f"the README names variables ccpush does not read: {sorted(unknown)}"


def test_the_configuration_names_every_option_of_a_setting() -> None:
    """The intro of *Configuration* lists the settings that have an option, and says that the
    others are environment variables only: the list must be the CLI's."""
    text = README.read_text()
    intro = text[text.index("## Configuration") : text.index("| variable |")]
    assert "environment variables only" in " ".join(intro.split())
    listed = set(re.findall(r"`(--[a-z-]+)`", intro))
    options = {
        option
        for variable, opts in _option_variables().items()
        if variable in SETTING_VARIABLES
        for option in opts
        if option.startswith("--")
    }
    assert listed == options
    for variable, opts in _option_variables().items():  # each of the same name as its variable
        if variable in SETTING_VARIABLES:
            assert {env_name(option[2:].replace("-", "_")) for option in opts} == {variable}


def test_commands_are_split_as_bash_splits_them() -> None:
    code = """TOKEN=$(cat ~/x)   # the token
A=1 ccpush serve --dev &
curl -sS -H "a b" $API/x#y -d '{
  "k": "v # not a comment"}' | field id
f() { python3 -c 'print(1)' "$1"; } > out \\
  2>&1
"""
    assert [called(words) for words in commands(code)] == [
        [],
        ["cat", "~/x"],
        ["ccpush", "serve", "--dev"],
        ["curl", "-sS", "-H", "a b", "$API/x#y", "-d", '{\n  "k": "v # not a comment"}'],
        ["field", "id"],
        ["f"],
        ["python3", "-c", "print(1)", "$1"],
        ["}", "2"],
    ]
