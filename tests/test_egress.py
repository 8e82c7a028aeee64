"""Pushes through a real forward proxy (proxy.py, run by the test on loopback), from both
HTTP clients: every push passes through it (its access log counts them), https through
CONNECT to the address the guard checked, a target the guard refuses is never asked of the
proxy, and the proxy's credentials appear in no error text or setting shown."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import ValidationError

from ccpush.clock import SystemClock
from ccpush.models import ErrorKind
from ccpush.senders import SENDERS, ProcessSender, Pushes, PushProxy, SenderLimits
from ccpush.settings import Settings
from tests.fakedns import FakeDNS
from tests.helpers import eventually
from tests.receiver import Receiver, Reply
from tests.test_mtls import (
    LOOPBACK,
    NAME,
    PRIVATE_CA,
    bundle_of,
    server_context,
    tls_receiver,
)

BODY = b'{"callSessionId":"s1"}'
CLIENTS = ["aiohttp", "reqwest"]
PASSWORD = "pr0xy-s3cret"
DNS = {NAME: [["127.0.0.1"]], "inside.test": [["10.0.0.1"]]}
_ACCESS = re.compile(r"access_log:\d+ - \S+ - (\S+) (\S+)")


@dataclass
class ForwardProxy:
    """A proxy.py process on loopback, and what its access log says it was asked."""

    port: int
    log: Path
    scheme: str = "http"

    def url(self, credentials: str = "") -> str:
        return f"{self.scheme}://{credentials}127.0.0.1:{self.port}"

    def requests(self) -> list[tuple[str, str]]:
        """(method, target) of each request the proxy served, as it logged them."""
        text = self.log.read_text() if self.log.exists() else ""
        return [(found[1], found[2]) for found in _ACCESS.finditer(text)]


def _start_proxy(
    folder: Path, basic_auth: str | None, tls: bool
) -> tuple[subprocess.Popen[bytes], Path]:
    folder.mkdir(exist_ok=True)
    port_file, log = folder / "port", folder / "proxy.log"
    served: tuple[str, ...] = ()
    if tls:  # clients reach the proxy itself over TLS, its certificate from PRIVATE_CA
        issued = PRIVATE_CA.issue_cert("127.0.0.1")
        issued.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
        issued.private_key_pem.write_to_path(str(folder / "key.pem"))
        served = ("--cert-file", str(folder / "cert.pem"), "--key-file", str(folder / "key.pem"))
    command = [
        str(Path(sys.executable).parent / "proxy"),
        *("--hostname", "127.0.0.1", "--port", "0", "--port-file", str(port_file)),
        *("--num-workers", "1", "--log-file", str(log), "--log-level", "INFO"),
        *(("--basic-auth", basic_auth) if basic_auth else ()),
        *served,
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, port_file


@contextlib.asynccontextmanager
async def forward_proxy(
    folder: Path, basic_auth: str | None = None, *, tls: bool = False
) -> AsyncIterator[ForwardProxy]:
    process, port_file = _start_proxy(folder, basic_auth, tls)
    try:
        await eventually(lambda: port_file.exists() and port_file.read_text().strip(), 20)
        scheme = "https" if tls else "http"
        yield ForwardProxy(int(port_file.read_text()), folder / "proxy.log", scheme)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[ForwardProxy]:
    async with forward_proxy(tmp_path / "open") as started:
        yield started


@pytest.fixture
async def locked_proxy(tmp_path: Path) -> AsyncIterator[ForwardProxy]:
    async with forward_proxy(tmp_path / "locked", f"ccpush:{PASSWORD}") as started:
        yield started


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    # proxy.py logs a connection once it ends: one connection per push, one line each
    started = await Receiver(lambda push, seen: Reply(headers={"Connection": "close"})).start()
    yield started
    await started.stop()


def through(client: str, proxy_url: str, *, in_process: bool = True, **changes: object) -> Pushes:
    limits = SenderLimits(  # type: ignore[arg-type]
        timeout=5.0, connect_timeout=3.0, proxy=PushProxy.parse(proxy_url), **changes
    )
    if in_process:
        return SENDERS[client](SystemClock(), limits, policy=LOOPBACK, resolver=FakeDNS(DNS))
    return ProcessSender(SystemClock(), limits, policy=LOOPBACK, sender=SENDERS[client])


@pytest.mark.parametrize("client", CLIENTS)
async def test_every_push_goes_through_the_proxy_to_the_checked_address(
    client: str, proxy: ForwardProxy, receiver: Receiver, tmp_path: Path
) -> None:
    bundle = bundle_of(PRIVATE_CA, tmp_path)
    async with (
        tls_receiver(server_context(name=NAME)) as secure,
        through(client, proxy.url(), ca_bundle=bundle) as sender,
    ):
        plain = await sender.send(f"http://{NAME}:{receiver.port}/cdr", BODY, {})
        tls = await sender.send(secure.url(NAME), BODY, {})
    assert plain.ok, plain
    assert tls.ok, tls
    await eventually(lambda: len(proxy.requests()) == 2)
    assert sorted(proxy.requests()) == [
        ("CONNECT", f"127.0.0.1:{secure.port}"),  # the address, never the name
        ("POST", f"127.0.0.1:{receiver.port}/cdr"),
    ]
    assert [push.headers["Host"] for push in receiver.pushes] == [f"{NAME}:{receiver.port}"]
    assert secure.hosts == [f"{NAME}:{secure.port}"]  # and TLS checked the name's certificate


@pytest.mark.parametrize("client", CLIENTS)
async def test_through_the_proxy_tls_still_checks_the_name(
    client: str, proxy: ForwardProxy, tmp_path: Path
) -> None:
    bundle = bundle_of(PRIVATE_CA, tmp_path)
    async with (
        tls_receiver(server_context(name="127.0.0.1")) as secure,  # not for NAME
        through(client, proxy.url(), ca_bundle=bundle) as sender,
    ):
        outcome = await sender.send(secure.url(NAME), BODY, {})
    assert outcome.error_kind is ErrorKind.TLS, outcome
    assert (outcome.error or "").startswith("tls: certificate verify failed ("), outcome.error
    assert secure.hosts == []
    await eventually(lambda: proxy.requests())
    assert proxy.requests() == [("CONNECT", f"127.0.0.1:{secure.port}")]


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_proxy_reached_over_tls_tunnels_https_pushes(client: str, tmp_path: Path) -> None:
    bundle = bundle_of(PRIVATE_CA, tmp_path)  # trusted for the proxy and the receiver
    async with (
        forward_proxy(tmp_path / "tls", tls=True) as proxy,
        tls_receiver(server_context(name=NAME)) as secure,
        through(client, proxy.url(), ca_bundle=bundle) as sender,
    ):
        outcome = await sender.send(secure.url(NAME), BODY, {})
        assert outcome.ok, outcome
        await eventually(lambda: proxy.requests())
        assert proxy.requests() == [("CONNECT", f"127.0.0.1:{secure.port}")]
    assert secure.hosts == [f"{NAME}:{secure.port}"]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_target_the_guard_refuses_is_never_asked_of_the_proxy(
    client: str, scheme: str, proxy: ForwardProxy, receiver: Receiver
) -> None:
    async with through(client, proxy.url()) as sender:
        by_name = await sender.send(f"{scheme}://inside.test/cdr", BODY, {})
        by_address = await sender.send(f"{scheme}://10.0.0.1/cdr", BODY, {})
        metadata = await sender.send(f"{scheme}://169.254.169.254/latest", BODY, {})
        allowed = await sender.send(receiver.url, BODY, {})
    assert by_name.error_kind is ErrorKind.BLOCKED, by_name
    assert "inside.test resolves to private address 10.0.0.1" in (by_name.error or "")
    assert by_address.error_kind is ErrorKind.BLOCKED, by_address
    assert metadata.error_kind is ErrorKind.BLOCKED, metadata
    assert allowed.ok, allowed
    await eventually(lambda: proxy.requests())
    assert proxy.requests() == [("POST", f"127.0.0.1:{receiver.port}/cdr")]


@pytest.mark.parametrize("client", CLIENTS)
async def test_pushes_from_push_processes_go_through_the_proxy(
    client: str, proxy: ForwardProxy, receiver: Receiver
) -> None:
    async with through(client, proxy.url(), in_process=False) as sender:
        outcomes = [await sender.send(receiver.url, BODY, {}) for _ in range(3)]
    assert all(outcome.ok for outcome in outcomes), outcomes
    await eventually(lambda: len(proxy.requests()) == 3)
    assert len(receiver.pushes) == 3


@pytest.mark.parametrize("client", CLIENTS)
async def test_the_proxy_credentials_are_sent_and_never_shown(
    client: str,
    locked_proxy: ForwardProxy,
    receiver: Receiver,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    bundle = bundle_of(PRIVATE_CA, tmp_path)
    right = locked_proxy.url(f"ccpush:{PASSWORD}@")
    wrong = locked_proxy.url("ccpush:wrong-pass@")
    async with tls_receiver(server_context(name=NAME)) as secure:
        async with through(client, right, ca_bundle=bundle) as sender:
            accepted = await sender.send(secure.url(NAME), BODY, {})
        async with through(client, wrong, ca_bundle=bundle) as sender:
            tunnel = await sender.send(secure.url(NAME), BODY, {})
            plain = await sender.send(receiver.url, BODY, {})
    assert accepted.ok, accepted
    assert tunnel.error_kind is ErrorKind.CONNECT, tunnel
    assert tunnel.error == (
        f"the push proxy http://127.0.0.1:{locked_proxy.port} answered HTTP 407 Proxy"
        f" Authentication Required to CONNECT 127.0.0.1:{secure.port}: check the"
        " credentials in CCPUSH_PUSH_PROXY"
    )
    assert (plain.status_code, plain.error_kind) == (407, ErrorKind.HTTP_STATUS), plain
    for outcome in (tunnel, plain):
        assert "wrong-pass" not in repr(outcome)
    assert PASSWORD not in caplog.text
    assert "wrong-pass" not in caplog.text
    assert secure.hosts == [f"{NAME}:{secure.port}"]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_an_unreachable_proxy_is_named_in_the_error(
    client: str, scheme: str, receiver: Receiver
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    async with through(client, f"http://ccpush:{PASSWORD}@127.0.0.1:{port}") as sender:
        outcome = await sender.send(f"{scheme}://{NAME}:{receiver.port}/cdr", BODY, {})
    assert outcome.error_kind is ErrorKind.CONNECT, outcome
    assert (outcome.error or "").startswith(
        f"cannot reach the push proxy http://127.0.0.1:{port}: "
    ), outcome.error
    assert PASSWORD not in (outcome.error or "")
    assert receiver.pushes == []


@pytest.fixture
def clean_environment() -> Iterator[None]:
    kept = {name: value for name, value in os.environ.items() if name.startswith("CCPUSH_")}
    for name in kept:
        del os.environ[name]
    yield
    os.environ.update(kept)


@pytest.mark.usefixtures("clean_environment")
def test_the_proxy_setting_keeps_its_credentials_hidden(tmp_path: Path) -> None:
    url = f"https://ccpush:{PASSWORD}@proxy.example.net:3128"
    settings = Settings(data_dir=tmp_path, push_proxy=url)  # type: ignore[arg-type]
    proxy = settings.egress_proxy
    assert proxy is not None
    assert (proxy.url, proxy.username, proxy.password) == (
        "https://proxy.example.net:3128",
        "ccpush",
        PASSWORD,
    )
    for shown in (repr(settings), str(settings), repr(proxy), str(proxy)):
        assert PASSWORD not in shown
    for bad in (f"ftp://ccpush:{PASSWORD}@proxy:21", f"http://ccpush:{PASSWORD}@proxy:99999"):
        with pytest.raises(ValidationError) as refused:
            Settings(data_dir=tmp_path, push_proxy=bad)  # type: ignore[arg-type]
        assert "push_proxy" in str(refused.value)
        assert PASSWORD not in str(refused.value)
