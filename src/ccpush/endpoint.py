"""What a customer's push address needs besides its URL: headers of their own, credentials
(HTTP Basic or a bearer token) and a client certificate for mutual TLS.

An ``Endpoint`` is kept sealed in the store (``ccpush.secret_box``), as one JSON text; the
dispatcher opens it to push, and everything shown of it (API reads, the console, the test
push's answer) shows names and kinds, never values.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from ccpush.record import Problem

MAX_HEADERS: Final = 20
MAX_NAME_LENGTH: Final = 128
MAX_VALUE_LENGTH: Final = 1024
MAX_PEM_LENGTH: Final = 64 * 1024
RESERVED_HEADERS: Final = frozenset(
    {"content-type", "content-length", "host", "transfer-encoding", "connection", "user-agent"}
)
RESERVED_PREFIXES: Final = ("webhook-", "ccpush-")
TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP token (RFC 9110, 5.6.2): what a header name is made of."""
VALUE: Final = re.compile(r"[\t\x20-\x7e]*")
"""Visible ASCII, spaces and tabs: no CR, LF, NUL or other control character."""


@dataclass(frozen=True, slots=True)
class BasicAuth:
    username: str
    password: str = field(repr=False)
    type: Literal["basic"] = "basic"


@dataclass(frozen=True, slots=True)
class BearerAuth:
    token: str = field(repr=False)
    type: Literal["bearer"] = "bearer"


PushAuth = BasicAuth | BearerAuth


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """A client certificate for mutual TLS: its PEM chain and its unencrypted PEM key."""

    cert_pem: str = field(repr=False)
    key_pem: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What is shown of a client certificate: whose it is and until when."""

    subject: str
    not_after: datetime


@dataclass(frozen=True, slots=True)
class Described:
    """An endpoint as it is shown: names and kinds, never a value."""

    header_names: tuple[str, ...]
    auth: Literal["basic", "bearer"] | None
    username: str | None
    certificate: CertificateInfo | None


@dataclass(frozen=True, slots=True)
class Applied:
    """What of the app's push settings a test push used: names and kinds, never values."""

    header_names: tuple[str, ...]
    auth: str | None
    client_certificate: bool
    proxy: bool


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An app's push settings besides its URL; ``Endpoint()`` when it has none."""

    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    auth: PushAuth | None = None
    client_certificate: ClientCertificate | None = None

    @property
    def empty(self) -> bool:
        return not self.headers and self.auth is None and self.client_certificate is None

    def request_headers(self) -> dict[str, str]:
        """The headers a push carries for this endpoint: its own, and ``Authorization``."""
        headers = dict(self.headers)
        if isinstance(self.auth, BasicAuth):
            pair = f"{self.auth.username}:{self.auth.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        elif isinstance(self.auth, BearerAuth):
            headers["Authorization"] = "Bearer " + self.auth.token
        return headers

    def described(self) -> Described:
        auth = self.auth
        return Described(
            header_names=tuple(name for name, _ in self.headers),
            auth=auth.type if auth is not None else None,
            username=auth.username if isinstance(auth, BasicAuth) else None,
            certificate=certificate_info(self.client_certificate.cert_pem)
            if self.client_certificate
            else None,
        )

    def to_json(self) -> str:
        auth: dict[str, str] | None = None
        if isinstance(self.auth, BasicAuth):
            auth = {"type": "basic", "username": self.auth.username, "password": self.auth.password}
        elif isinstance(self.auth, BearerAuth):
            auth = {"type": "bearer", "token": self.auth.token}
        cert = self.client_certificate
        return json.dumps(
            {
                "headers": [list(pair) for pair in self.headers],
                "auth": auth,
                "clientCertificate": {"certPem": cert.cert_pem, "keyPem": cert.key_pem}
                if cert
                else None,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Endpoint:
        data = json.loads(text)
        cert = data.get("clientCertificate")
        return cls(
            headers=tuple((name, value) for name, value in data.get("headers", ())),
            auth=auth_of(data.get("auth")),
            client_certificate=ClientCertificate(cert["certPem"], cert["keyPem"]) if cert else None,
        )


def auth_of(data: Mapping[str, Any] | None) -> PushAuth | None:
    """``{"type": "basic", "username", "password"}`` or ``{"type": "bearer", "token"}``."""
    if data is None:
        return None
    if data["type"] == "basic":
        return BasicAuth(username=data["username"], password=data["password"])
    return BearerAuth(token=data["token"])


# The rules: each answers the problems found, each naming its field as the API does.


def problems(endpoint: Endpoint) -> list[Problem]:
    """Everything wrong with ``endpoint``; none if it can be kept and pushed with."""
    found = header_problems(endpoint.headers, with_auth=endpoint.auth is not None)
    if endpoint.auth is not None:
        found += auth_problems(endpoint.auth)
    if endpoint.client_certificate is not None:
        found += certificate_problems(endpoint.client_certificate)
    return found


def header_problems(headers: tuple[tuple[str, str], ...], *, with_auth: bool) -> list[Problem]:
    found = []
    if len(headers) > MAX_HEADERS:
        found.append(Problem(field="pushHeaders", reason=f"at most {MAX_HEADERS} headers"))
    seen: set[str] = set()
    for name, value in headers:
        field = f"pushHeaders.{name}"
        reason = _name_problem(name, with_auth) or _value_problem(value)
        if reason is None and name.lower() in seen:
            reason = "is given twice (header names are case-insensitive)"
        seen.add(name.lower())
        if reason is not None:
            found.append(Problem(field=field, reason=reason))
    return found


def _name_problem(name: str, with_auth: bool) -> str | None:
    lowered = name.lower()
    if not TOKEN.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        return (
            f"is not a header name: up to {MAX_NAME_LENGTH} letters, digits and"
            " !#$%&'*+-.^_`|~ (an HTTP token)"
        )
    if lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_PREFIXES):
        return "is reserved: ccpush sets it on every push"
    if lowered == "authorization" and with_auth:
        return "is reserved while pushAuth is set: pushAuth makes the Authorization header"
    return None


def _value_problem(value: str, limit: int = MAX_VALUE_LENGTH) -> str | None:
    if len(value) > limit:
        return f"must be at most {limit} characters"
    if not VALUE.fullmatch(value):
        return "must hold only printable ASCII, spaces and tabs (no CR, LF, NUL or control)"
    return None


def auth_problems(auth: PushAuth) -> list[Problem]:
    if isinstance(auth, BasicAuth):
        found = _text_problems("pushAuth.username", auth.username, empty=False)
        if ":" in auth.username:
            found.append(Problem(field="pushAuth.username", reason="must not contain ':'"))
        return found + _text_problems("pushAuth.password", auth.password, empty=True)
    return _text_problems("pushAuth.token", auth.token, empty=False)


def _text_problems(field: str, value: str, *, empty: bool) -> list[Problem]:
    reason = _value_problem(value, 512) or (None if empty or value else "must not be empty")
    return [] if reason is None else [Problem(field=field, reason=reason)]


def certificate_problems(cert: ClientCertificate) -> list[Problem]:
    """Whether the PEM pair is a certificate chain and its unencrypted, matching key."""
    try:
        leaf = x509.load_pem_x509_certificates(_pem(cert.cert_pem))[0]
    except ValueError:
        return [_cert_problem("certPem", "is not a PEM certificate (-----BEGIN CERTIFICATE-----)")]
    try:
        key = load_pem_private_key(_pem(cert.key_pem), password=None)
    except TypeError:
        return [_cert_problem("keyPem", "is encrypted: give the key without a passphrase")]
    except (ValueError, UnicodeError):
        return [_cert_problem("keyPem", "is not a PEM private key (-----BEGIN PRIVATE KEY-----)")]
    if _public(leaf.public_key()) != _public(key.public_key()):
        return [_cert_problem("keyPem", "is not the key of the certificate in certPem")]
    return []


def _pem(text: str) -> bytes:
    if len(text) > MAX_PEM_LENGTH:
        raise ValueError("too long")
    return text.encode("ascii", errors="strict") if text.isascii() else b""


def _public(key: Any) -> bytes:
    return bytes(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))


def _cert_problem(part: str, reason: str) -> Problem:
    return Problem(field=f"clientCertificate.{part}", reason=reason)


def certificate_info(cert_pem: str) -> CertificateInfo:
    leaf = x509.load_pem_x509_certificates(cert_pem.encode("ascii"))[0]
    return CertificateInfo(
        subject=leaf.subject.rfc4514_string(), not_after=leaf.not_valid_after_utc.astimezone(UTC)
    )


endpoint_from_json: Final = functools.lru_cache(maxsize=1024)(Endpoint.from_json)
"""``Endpoint.from_json``, each text read once: claims open the same few for every push."""
