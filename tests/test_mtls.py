"""Pushes to HTTPS receivers with a private CA and mutual TLS, against real TLS servers on
loopback, from both HTTP clients: ``CCPUSH_CA_BUNDLE`` (added to, or replacing, the system's
CAs), a wrong CA or host name failing as ``tls``, and client certificates, platform-wide
(``CCPUSH_CLIENT_CERT``/``CCPUSH_CLIENT_KEY``) and per push, which wins."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from pydantic import ValidationError

from ccpush.clock import SystemClock
from ccpush.endpoint import ClientCertificate
from ccpush.guard import TargetPolicy
from ccpush.models import ErrorKind
from ccpush.senders import SENDERS, ProcessSender, Pushes, PushProxy, SenderLimits, make_sender
from ccpush.settings import Settings
from tests.fakedns import FakeDNS

BODY = b'{"callSessionId":"s1"}'
LOOPBACK = TargetPolicy.parse("127.0.0.0/8")
NAME = "receiver.test"
DNS = {NAME: [["127.0.0.1"]]}
CLIENTS = ["aiohttp", "reqwest"]

PRIVATE_CA = trustme.CA()
"""The CA of the receivers (and of the client certificates they accept)."""
OTHER_CA = trustme.CA()


@dataclass
class TlsReceiver:
    """An HTTPS receiver on loopback: what each request presented (the client
    certificate's names, empty without one) and its Host header."""

    port: int = 0
    clients: list[tuple[str, ...]] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)

    def url(self, host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.port}/cdr"


def server_context(
    ca: trustme.CA = PRIVATE_CA, name: str = "127.0.0.1", *, require_client: bool = False
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)  # for that name alone
    if require_client:
        context.verify_mode = ssl.CERT_REQUIRED
        PRIVATE_CA.configure_trust(context)
    return context


@asynccontextmanager
async def tls_receiver(context: ssl.SSLContext) -> AsyncIterator[TlsReceiver]:
    receiver = TlsReceiver()
    held: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(OSError, ssl.SSLError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            peer = writer.get_extra_info("peercert") or {}
            receiver.clients.append(tuple(value for _, value in peer.get("subjectAltName", ())))
            receiver.hosts.extend(
                line.split(b":", 1)[1].strip().decode()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"host:")
            )
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        for writer in held:
            writer.transport.abort()
        server.close()
        await server.wait_closed()


def bundle_of(ca: trustme.CA, tmp_path: Path, name: str = "ca.pem") -> str:
    path = tmp_path / name
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def client_certificate(name: str, ca: trustme.CA = PRIVATE_CA) -> ClientCertificate:
    issued = ca.issue_cert(name)
    chain = "".join(blob.bytes().decode() for blob in issued.cert_chain_pems)
    return ClientCertificate(chain, issued.private_key_pem.bytes().decode())


def pushes(client: str, limits: SenderLimits, *, in_process: bool = True) -> Pushes:
    if in_process:
        return SENDERS[client](SystemClock(), limits, policy=LOOPBACK, resolver=FakeDNS(DNS))
    return ProcessSender(SystemClock(), limits, policy=LOOPBACK, sender=SENDERS[client])


def limits(**changes: object) -> SenderLimits:
    return SenderLimits(timeout=3.0, connect_timeout=2.0, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_receiver_of_a_private_ca_is_trusted_with_the_bundle(
    client: str, tmp_path: Path
) -> None:
    async with tls_receiver(server_context(name=NAME)) as receiver:
        async with pushes(client, limits()) as without:
            refused = await without.send(receiver.url(NAME), BODY, {})
        async with pushes(client, limits(ca_bundle=bundle_of(PRIVATE_CA, tmp_path))) as sender:
            outcome = await sender.send(receiver.url(NAME), BODY, {})
    assert refused.error_kind is ErrorKind.TLS
    assert (refused.error or "").startswith("tls: certificate verify failed ("), refused.error
    assert outcome.ok, outcome
    assert receiver.hosts == [f"{NAME}:{receiver.port}"]


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_certificate_of_another_ca_is_a_tls_failure(client: str, tmp_path: Path) -> None:
    async with (
        tls_receiver(server_context(OTHER_CA, NAME)) as receiver,
        pushes(client, limits(ca_bundle=bundle_of(PRIVATE_CA, tmp_path))) as sender,
    ):
        outcome = await sender.send(receiver.url(NAME), BODY, {})
    assert outcome.error_kind is ErrorKind.TLS
    assert (outcome.error or "").startswith("tls: certificate verify failed ("), outcome.error
    assert "issuer" in (outcome.error or "").lower(), outcome.error
    assert receiver.hosts == []


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_certificate_for_another_name_is_a_tls_failure(client: str, tmp_path: Path) -> None:
    async with (
        tls_receiver(server_context(name="elsewhere.test")) as receiver,
        pushes(client, limits(ca_bundle=bundle_of(PRIVATE_CA, tmp_path))) as sender,
    ):
        outcome = await sender.send(receiver.url(NAME), BODY, {})
    assert outcome.error_kind is ErrorKind.TLS
    assert (outcome.error or "").startswith("tls: certificate verify failed ("), outcome.error
    assert any(word in (outcome.error or "").lower() for word in ("hostname", "name")), outcome
    assert receiver.hosts == []


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("only", [False, True], ids=["added", "only"])
async def test_the_bundle_is_added_to_the_system_store_or_replaces_it(
    client: str, only: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The system store is played by ``SSL_CERT_FILE`` (read by OpenSSL and by reqwest), in
    push processes: where reqwest can trust the bundle alone."""
    monkeypatch.setenv("SSL_CERT_FILE", bundle_of(OTHER_CA, tmp_path, "system.pem"))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    bundle = bundle_of(PRIVATE_CA, tmp_path)
    async with (
        tls_receiver(server_context(PRIVATE_CA)) as private,
        tls_receiver(server_context(OTHER_CA)) as public,
        pushes(client, limits(ca_bundle=bundle, ca_bundle_only=only), in_process=False) as sender,
    ):
        to_private = await sender.send(private.url(), BODY, {})
        to_public = await sender.send(public.url(), BODY, {})
    assert to_private.ok, to_private
    assert to_public.ok is not only, to_public
    if only:
        assert to_public.error_kind is ErrorKind.TLS


def test_reqwest_trusts_the_bundle_alone_only_in_push_processes(tmp_path: Path) -> None:
    bundle = bundle_of(PRIVATE_CA, tmp_path)
    with pytest.raises(ValueError, match="CCPUSH_PUSH_PROCESSES"):
        pushes("reqwest", limits(ca_bundle=bundle, ca_bundle_only=True))


def write_identity(certificate: ClientCertificate, tmp_path: Path) -> dict[str, str]:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text(certificate.cert_pem)
    key.write_text(certificate.key_pem)
    return {"client_cert": str(cert), "client_key": str(key)}


@pytest.mark.parametrize("in_process", [True, False], ids=["in-process", "push-process"])
@pytest.mark.parametrize("client", CLIENTS)
async def test_a_receiver_requiring_a_client_certificate_gets_ours(
    client: str, in_process: bool, tmp_path: Path
) -> None:
    bundle = bundle_of(PRIVATE_CA, tmp_path)
    platform = write_identity(client_certificate("platform.ccpush.test"), tmp_path)
    own = client_certificate("app.customer.test")
    async with tls_receiver(server_context(require_client=True)) as receiver:
        async with pushes(client, limits(ca_bundle=bundle), in_process=in_process) as bare:
            refused = await bare.send(receiver.url(), BODY, {})
        configured = limits(ca_bundle=bundle, **platform)
        async with pushes(client, configured, in_process=in_process) as sender:
            by_platform = await sender.send(receiver.url(), BODY, {})
            by_app = await sender.send(receiver.url(), BODY, {}, client_certificate=own)
            again = await sender.send(receiver.url(), BODY, {})
    assert refused.error_kind in (ErrorKind.TLS, ErrorKind.CONNECT), refused
    assert "certificate" in (refused.error or ""), refused.error
    assert by_platform.ok, by_platform
    assert by_app.ok, by_app
    assert again.ok, again
    assert receiver.clients == [
        ("platform.ccpush.test",),
        ("app.customer.test",),
        ("platform.ccpush.test",),
    ]


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_client_certificate_that_cannot_be_used_reads_plainly(
    client: str, tmp_path: Path
) -> None:
    good = client_certificate("app.customer.test")
    broken = ClientCertificate(good.cert_pem, "-----BEGIN PRIVATE KEY-----\nnope\n")
    bundle = bundle_of(PRIVATE_CA, tmp_path)
    async with (
        tls_receiver(server_context(require_client=True)) as receiver,
        pushes(client, limits(ca_bundle=bundle)) as sender,
    ):
        outcome = await sender.send(receiver.url(), BODY, {}, client_certificate=broken)
    assert outcome.error_kind is ErrorKind.TLS
    assert "client certificate cannot be used" in (outcome.error or ""), outcome.error
    assert "nope" not in (outcome.error or "")
    assert receiver.clients == []


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CCPUSH_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_environment")
def test_the_tls_settings_are_checked_at_start(tmp_path: Path) -> None:
    identity = write_identity(client_certificate("platform.ccpush.test"), tmp_path)
    other = client_certificate("other.ccpush.test")
    (tmp_path / "other.key").write_text(other.key_pem)
    bundle = bundle_of(PRIVATE_CA, tmp_path)
    refused = [
        ({"client_cert": identity["client_cert"]}, "go together"),
        ({**identity, "client_key": str(tmp_path / "other.key")}, "cannot be loaded"),
        ({"client_cert": str(tmp_path / "none.pem"), "client_key": str(tmp_path / "x")}, "cannot"),
        ({"ca_bundle_only": "true"}, "needs CCPUSH_CA_BUNDLE"),
        ({"ca_bundle": bundle, "ca_bundle_only": "true", "http_client": "reqwest"}, "PROCESSES"),
    ]
    for given, reason in refused:
        with pytest.raises(ValidationError, match=reason):
            Settings(data_dir=tmp_path, **given)  # type: ignore[arg-type]
    settings = Settings(
        data_dir=tmp_path,
        ca_bundle=bundle,  # type: ignore[arg-type]
        ca_bundle_only=True,
        push_proxy="http://u:p@127.0.0.1:3128",  # type: ignore[arg-type]
        **identity,  # type: ignore[arg-type]
    )
    made = make_sender(settings, SystemClock())
    assert (made.limits.ca_bundle, made.limits.ca_bundle_only) == (bundle, True)
    assert (made.limits.client_cert, made.limits.client_key) == (
        identity["client_cert"],
        identity["client_key"],
    )
    assert made.limits.proxy == PushProxy("http", "127.0.0.1", 3128, "u", "p")
