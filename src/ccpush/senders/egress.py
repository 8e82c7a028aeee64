"""How pushes leave: through the egress proxy (``CCPUSH_PUSH_PROXY``), trusting which CAs
(``CCPUSH_CA_BUNDLE``, ``CCPUSH_CA_BUNDLE_ONLY``), presenting which client certificate
(``CCPUSH_CLIENT_CERT`` and ``CCPUSH_CLIENT_KEY``, or an app's own).

A proxy's credentials are kept apart from its address, and nothing here shows them: its
``str`` and ``repr`` name the address only, which is what error texts and logs quote.

A client certificate arrives as PEM text. Python's ``ssl`` loads one only from files, so
``load_identity`` writes it to a private temporary directory (mode 0700, files 0600) that is
deleted as soon as the context has read it. Contexts are kept per certificate, at most
``CONTEXTS_KEPT`` of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

from yarl import URL

from ccpush.endpoint import ClientCertificate
from ccpush.guard import GuardedResolver

PROXY_SCHEMES: Final = frozenset({"http", "https"})
CONTEXTS_KEPT: Final = 256
"""TLS contexts (or clients) kept per client certificate in use, the longest unused
dropped first."""


@dataclass(frozen=True, slots=True)
class PushProxy:
    """The forward proxy every push goes through; ``str`` names it without credentials."""

    scheme: str
    host: str
    port: int
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, text: str) -> PushProxy:
        """A proxy from ``http://host:port`` or ``https://user:pass@host:port``; a
        ``ValueError`` that never quotes the credentials if it is not one."""
        try:
            parts = urlsplit(text.strip())
            port = parts.port
        except ValueError:
            raise ValueError("the push proxy must be a URL such as http://proxy:3128") from None
        if parts.scheme.lower() not in PROXY_SCHEMES:
            raise ValueError("the push proxy's URL must start with http:// or https://")
        if not parts.hostname:
            raise ValueError("the push proxy's URL has no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("the push proxy's URL must hold no path, query or fragment")
        username = None if parts.username is None else unquote(parts.username)
        if username is not None and ":" in username:
            raise ValueError("the push proxy's user name may not hold a colon")
        scheme = parts.scheme.lower()
        return cls(
            scheme=scheme,
            host=parts.hostname,
            port=port or (443 if scheme == "https" else 80),
            username=username,
            password=None if parts.password is None else unquote(parts.password or ""),
        )

    @property
    def url(self) -> str:
        """Its address, without credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        hidden = "" if self.username is None else ", credentials=(hidden)"
        return f"PushProxy({self.url!r}{hidden})"


def trusted_context(ca_bundle: str | None, only: bool = False) -> ssl.SSLContext:
    """Client-side TLS that verifies receivers: the system's CAs and those of ``ca_bundle``
    (only the latter if ``only``)."""
    if ca_bundle is not None and only:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, and checks host names
        context.load_verify_locations(cafile=ca_bundle)
        return context
    context = ssl.create_default_context()
    if ca_bundle is not None:
        context.load_verify_locations(cafile=ca_bundle)
    return context


class UnusableCertificate(ValueError):
    """A client certificate (or its key) that cannot be loaded; its text never quotes them."""


def load_identity(context: ssl.SSLContext, certificate: ClientCertificate) -> None:
    """Load a client certificate given as PEM text into ``context``, through files that
    exist only while it is read."""
    with tempfile.TemporaryDirectory(prefix="ccpush-tls-") as folder:  # mode 0700
        cert_file = _private_file(Path(folder) / "cert.pem", certificate.cert_pem)
        key_file = _private_file(Path(folder) / "key.pem", certificate.key_pem)
        try:
            context.load_cert_chain(cert_file, key_file)
        except ssl.SSLError as exc:  # the reason only: never the PEM
            raise UnusableCertificate(
                f"the client certificate cannot be used: {exc.reason}"
            ) from None


def _private_file(path: Path, text: str) -> str:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    return str(path)


def certificate_id(certificate: ClientCertificate | None) -> str | None:
    """What tells client certificates apart (a digest, never the key itself)."""
    if certificate is None:
        return None
    digest = hashlib.sha256(certificate.cert_pem.encode() + b"\0" + certificate.key_pem.encode())
    return digest.hexdigest()


def platform_identity(cert_path: str | None, key_path: str | None) -> ClientCertificate | None:
    """The platform-wide client certificate, read from its files, if set."""
    if cert_path is None or key_path is None:
        return None
    return ClientCertificate(Path(cert_path).read_text(), Path(key_path).read_text())


class TlsContexts:
    """One client TLS context per client certificate (``None``: the platform's, or none),
    made on first use and kept, at most ``CONTEXTS_KEPT``."""

    def __init__(
        self, ca_bundle: str | None, only: bool, platform: ClientCertificate | None
    ) -> None:
        self._ca_bundle = ca_bundle
        self._only = only
        self._platform = platform
        self._kept: OrderedDict[str | None, ssl.SSLContext] = OrderedDict()

    @property
    def has_platform(self) -> bool:
        """Whether pushes present the platform's client certificate when they bring none."""
        return self._platform is not None

    def context(self, certificate: ClientCertificate | None) -> ssl.SSLContext:
        """The context a push presenting ``certificate`` (or the platform's) uses."""
        chosen = certificate or self._platform
        key = certificate_id(chosen)
        context = self._kept.get(key)
        if context is not None:
            self._kept.move_to_end(key)
            return context
        context = trusted_context(self._ca_bundle, self._only)
        if chosen is not None:
            load_identity(context, chosen)
        if len(self._kept) >= CONTEXTS_KEPT:
            self._kept.popitem(last=False)
        self._kept[key] = context
        return context


ANSWER_SECONDS: Final = 60.0
"""How long a host name's checked address is used before it is resolved (and checked) again."""
HOSTS_KEPT: Final = 4096


class CheckedAddresses:
    """The one address each host name is pushed to through the proxy: resolved through the
    target guard (``GuardedResolver``: every address of the answer checked), IPv4 if it has
    one, and kept ``ANSWER_SECONDS``. The proxy is asked for this address, never the name,
    so what the guard checked is what the proxy connects to."""

    def __init__(self, guarded: GuardedResolver) -> None:
        self._guarded = guarded
        self._kept: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lookups: dict[str, asyncio.Future[str]] = {}

    async def address(self, host: str, port: int) -> str:
        """The checked address of ``host``; raises what the guard raises (``TargetRefused``,
        ``socket.gaierror``)."""
        kept = self._kept.get(host)
        if kept is not None and kept[1] > time.monotonic():
            return kept[0]
        pending = self._lookups.get(host)
        if pending is None:  # one lookup per host, however many pushes wait for it
            pending = asyncio.ensure_future(self._resolve(host, port))
            self._lookups[host] = pending
            pending.add_done_callback(lambda _: self._lookups.pop(host, None))
        return await asyncio.shield(pending)

    def known(self, host: str) -> str | None:
        """The address last checked for ``host``, if any."""
        kept = self._kept.get(host)
        return None if kept is None else kept[0]

    async def _resolve(self, host: str, port: int) -> str:
        answers = await self._guarded.resolve(host, port, socket.AF_UNSPEC)
        address = min((answer["host"] for answer in answers), key=lambda found: ":" in found)
        if len(self._kept) >= HOSTS_KEPT and host not in self._kept:
            self._kept.popitem(last=False)
        self._kept[host] = (address, time.monotonic() + ANSWER_SECONDS)
        return address


def proxy_unreachable(proxy: PushProxy, detail: str) -> str:
    return f"cannot reach the push proxy {proxy}: {detail}"


def proxy_refused(proxy: PushProxy, status: int, reason: str | None, target: str) -> str:
    said = f"HTTP {status} {reason or ''}".rstrip()
    text = f"the push proxy {proxy} answered {said} to CONNECT {target}"
    if status == HTTPStatus.PROXY_AUTHENTICATION_REQUIRED:
        return f"{text}: check the credentials in CCPUSH_PUSH_PROXY"
    return text


def host_header(url: URL) -> str:
    """The ``Host`` a request to ``url`` carries (its port only if not the scheme's)."""
    host = url.raw_host or ""
    return host if url.is_default_port() else f"{host}:{url.port}"


_CLOSED: Final = ("reset by peer", "disconnected", "close_notify", "certificate required")
"""How each client words a connection the receiver closed right after the TLS handshake:
what a receiver that requires a client certificate does to one without (TLS 1.3)."""


def without_certificate(error: str | None, https: bool, presented: bool) -> str | None:
    """``error``, saying first that no client certificate was presented when that is
    likely why the receiver closed the connection."""
    if error is None or not https or presented:
        return error
    if not any(marker in error.lower() for marker in _CLOSED):
        return error
    return f"no client certificate presented, which the receiver may require: {error}"
