"""Console sessions: a signed cookie that names who signed in, never with what.

The cookie holds the signed-in key's id and account (or, for the operator, a fingerprint of
the admin token and the account being looked at) and the session's CSRF token. It is signed
(``itsdangerous``) with the console secret, ``HttpOnly``, ``SameSite=Lax``, ``Secure`` over
https, and lasts ``MAX_AGE`` from sign-in. Every request checks again that the key is not
revoked and that the admin token has not changed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

COOKIE: Final = "ccpush_console"
MAX_AGE: Final = 12 * 3600
"""Seconds a session lasts from sign-in."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    csrf: str
    """Sent back with every form and htmx request, and compared on every POST."""
    key_id: str | None = None
    """The manage key signed in with."""
    admin: str | None = None
    """Signed in with the admin token: its fingerprint (a change of token ends the session)."""
    account_id: str | None = None
    """The key's account, or the account the operator is looking at."""

    @property
    def signed_in(self) -> bool:
        return self.key_id is not None or self.admin is not None

    def switched_to(self, account_id: str) -> Session:
        return replace(self, account_id=account_id)


def fingerprint(admin_token: str) -> str:
    """A short hash of the admin token: tells whether it changed, reveals nothing of it."""
    return hashlib.sha256(b"ccpush console " + admin_token.encode()).hexdigest()[:24]


def anonymous() -> Session:
    """A session before sign-in: only a CSRF token, so the sign-in form is protected too."""
    return Session(csrf=secrets.token_urlsafe(32))


def signed_in_as(*, key_id: str | None, admin: str | None, account_id: str) -> Session:
    """A new session (a new CSRF token) for who just signed in."""
    return Session(
        csrf=secrets.token_urlsafe(32), key_id=key_id, admin=admin, account_id=account_id
    )


def csrf_matches(session: Session | None, sent: str) -> bool:
    return session is not None and hmac.compare_digest(sent.encode(), session.csrf.encode())


class Sessions:
    """Reads and writes the session cookie."""

    def __init__(self, secret: str, *, secure: bool | None) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="ccpush-console-session")
        self._secure = secure

    def read(self, request: Request) -> Session | None:
        value = request.cookies.get(COOKIE)
        if not value:
            return None
        try:
            data: dict[str, Any] = self._serializer.loads(value, max_age=MAX_AGE)
            return Session(**data)
        except (BadSignature, TypeError):
            return None

    def write(self, response: Response, request: Request, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            self._serializer.dumps(asdict(session)),
            max_age=MAX_AGE,
            path=cookie_path(request),
            secure=self._is_secure(request),
            httponly=True,
            samesite="lax",
        )

    def clear(self, response: Response, request: Request) -> None:
        response.delete_cookie(
            COOKIE,
            path=cookie_path(request),
            secure=self._is_secure(request),
            httponly=True,
            samesite="lax",
        )

    def _is_secure(self, request: Request) -> bool:
        return self._secure if self._secure is not None else request.url.scheme == "https"


def cookie_path(request: Request) -> str:
    """Where the console is mounted: the cookie goes to the console only."""
    return str(request.scope.get("root_path") or "/")
