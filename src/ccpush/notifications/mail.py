"""Notifications by e-mail: the SMTP server's URL, addresses, and sending with aiosmtplib.

``CCPUSH_SMTP_URL`` is ``smtp://user:password@host:587?starttls=true`` (STARTTLS asked
for; without it, used if the server offers it) or ``smtps://user:password@host:465``
(TLS from the first byte). The password is only ever given to the SMTP server: an
error names the server by its host and port alone.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

MAX_EMAIL_LENGTH: Final = 254
_EMAIL: Final = re.compile(r"[^@\s\x00-\x1f\x7f<>,;\"]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
SMTP_TIMEOUT: Final = 30.0
_TRUE: Final = frozenset({"1", "true", "yes", "on"})


def check_email(value: str) -> str:
    """An e-mail address: ``name@host.domain``, without spaces or display names."""
    if len(value) > MAX_EMAIL_LENGTH:
        raise ValueError(f"must be at most {MAX_EMAIL_LENGTH} characters")
    if not _EMAIL.fullmatch(value):
        raise ValueError("must be an e-mail address such as ops@example.com")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpServer:
    """Where e-mail is sent, and how (parsed from ``CCPUSH_SMTP_URL``)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    implicit_tls: bool = False
    """``smtps://``: TLS from the first byte."""
    starttls: bool | None = None
    """True: required; None: used if the server offers it."""

    @classmethod
    def parse(cls, url: str) -> SmtpServer:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError("must start with smtp:// or smtps://")
        if not parts.hostname:
            raise ValueError("must name the server, as in smtp://mail.example.com:587")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("has an invalid port") from None
        implicit = parts.scheme == "smtps"
        options = parse_qs(parts.query)
        starttls = options.get("starttls", [None])[0]
        return cls(
            host=parts.hostname,
            port=port or (465 if implicit else 587),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            implicit_tls=implicit,
            starttls=None if starttls is None or implicit else starttls.lower() in _TRUE,
        )

    @property
    def name(self) -> str:
        """The server as errors and logs name it: host and port, never the credentials."""
        return f"{self.host}:{self.port}"


class SmtpError(Exception):
    """A message the server did not take; the text holds no credential."""


@dataclass(frozen=True, slots=True)
class Mailer:
    """Sends notification e-mails through one SMTP server."""

    server: SmtpServer
    sender: str
    """The From address (``CCPUSH_SMTP_FROM``)."""
    ca_bundle: Path | None = None

    async def send(self, to: str, subject: str, text: str) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(text)
        server = self.server
        try:
            await aiosmtplib.send(
                message,
                hostname=server.host,
                port=server.port,
                username=server.username,
                password=server.password,
                use_tls=server.implicit_tls,
                start_tls=server.starttls,
                tls_context=self._tls(),
                timeout=SMTP_TIMEOUT,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise SmtpError(f"SMTP {server.name}: {_reason(exc)}") from None

    def _tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.ca_bundle is not None:
            context.load_verify_locations(self.ca_bundle)
        return context


def _reason(exc: BaseException) -> str:
    """What went wrong, from the server's answer or the connection (no credential is in
    either: aiosmtplib sends the password encoded, and never echoes it)."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {exc.message}"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]
