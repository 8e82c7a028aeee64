"""Console sessions: a signed cookie that names who signed in, never with what.

The cookie holds a random session id, the signed-in key's id and account (or, for the
operator, a fingerprint of the admin token and the account being looked at) and the
session's CSRF token. It is signed (``itsdangerous``) with the console secret, ``HttpOnly``,
``SameSite=Lax``, ``Secure`` over https, and lasts ``MAX_AGE`` from when it was last
written. When other sites may frame the console (``CCPUSH_CONSOLE_FRAME_ANCESTORS``), it is
``SameSite=None; Secure; Partitioned`` instead: a browser sends it to a frame of another site
only then. A portal link's session names the link, its account, app and whether it is
read-only. Every request checks again, in the store, that the key is not revoked and that the
admin token has not changed: revoking a key ends its sessions in every process.

Signing out ends the session on the server, not only in the browser: its id is kept in the
store (``Store.end_console_session``), and a cookie naming it reads as no session in every
process on that store. Upkeep forgets it once every copy of its cookie has expired. Each
process keeps the sessions it has seen ended in ``EndedSessions``, in front of the store.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Final

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from ccpush.clock import Clock
from ccpush.models import PortalLink
from ccpush.store.base import Store
from ccpush.upkeep import CONSOLE_SESSION_LIFE

COOKIE: Final = "ccpush_console"
MAX_AGE: Final = int(CONSOLE_SESSION_LIFE.total_seconds())
"""Seconds a session's cookie is accepted after it was written."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    sid: str
    """This session's random id: signing out ends it on the server."""
    csrf: str
    """Sent back with every form and htmx request, and compared on every POST."""
    key_id: str | None = None
    """The manage key signed in with."""
    admin: str | None = None
    """Signed in with the admin token: its fingerprint (a change of token ends the session)."""
    account_id: str | None = None
    """The key's account, the portal link's, or the account the operator is looking at."""
    portal: str | None = None
    """Signed in with this portal link (its id): confined to ``account_id``."""
    app_id: str | None = None
    """The portal link's one app, if it names one: nothing else of the account is seen."""
    read_only: bool = False
    """The portal link's session may look, not change anything."""

    @property
    def signed_in(self) -> bool:
        return self.key_id is not None or self.admin is not None or self.portal is not None

    def switched_to(self, account_id: str) -> Session:
        return replace(self, account_id=account_id)


def fingerprint(admin_token: str) -> str:
    """A short hash of the admin token: tells whether it changed, reveals nothing of it."""
    return hashlib.sha256(b"ccpush console " + admin_token.encode()).hexdigest()[:24]


def anonymous() -> Session:
    """A session before sign-in: only a CSRF token, so the sign-in form is protected too."""
    return Session(sid=secrets.token_urlsafe(16), csrf=secrets.token_urlsafe(32))


def signed_in_as(*, key_id: str | None, admin: str | None, account_id: str) -> Session:
    """A new session (a new CSRF token) for who just signed in."""
    return replace(anonymous(), key_id=key_id, admin=admin, account_id=account_id)


def portal_session(link: PortalLink) -> Session:
    """A new session for who opened ``link``: its account (or app), read-only if it says."""
    return replace(
        anonymous(),
        portal=link.id,
        account_id=link.account_id,
        app_id=link.app_id,
        read_only=link.read_only,
    )


def csrf_matches(session: Session | None, sent: str) -> bool:
    return session is not None and hmac.compare_digest(sent.encode(), session.csrf.encode())


class EndedSessions:
    """The ids of the sessions seen signed out, each kept ``MAX_AGE`` from then: by
    then every cookie written before has expired anyway. Past ``size`` ids, the oldest is
    dropped and every cookie written before its sign-out is refused with it: a full list
    ends too many sessions, never too few."""

    def __init__(self, *, now: Callable[[], float] = time.time, size: int = 100_000) -> None:
        self.now = now
        self.size = size
        self._ended: OrderedDict[str, float] = OrderedDict()
        self._written_before = -math.inf
        """Cookies written at or before this time are refused (set when the list is full)."""

    def end(self, sid: str) -> None:
        now = self.now()
        self._ended[sid] = now
        self._ended.move_to_end(sid)
        while self._ended:
            oldest, ended_at = next(iter(self._ended.items()))
            expired = ended_at + MAX_AGE <= now
            if not expired and len(self._ended) <= self.size:
                return
            del self._ended[oldest]
            if not expired:
                self._written_before = max(self._written_before, ended_at)

    def ended(self, sid: str, written_at: float) -> bool:
        """Whether a cookie naming ``sid``, written at ``written_at``, is of an ended session."""
        return sid in self._ended or written_at <= self._written_before


class Sessions:
    """Reads and writes the session cookie, and ends sessions on sign-out, in ``store``."""

    def __init__(
        self,
        secret: str,
        *,
        secure: bool | None,
        store: Store,
        clock: Clock,
        embedded: bool = False,
    ) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="ccpush-console-session")
        self._secure = secure
        self._embedded = embedded
        self._store = store
        self._clock = clock
        self._ended = EndedSessions()

    async def read(self, request: Request) -> Session | None:
        """The cookie's session; None without a valid one, or if it was signed out (read
        once per request)."""
        if not hasattr(request.state, "console_session"):
            request.state.console_session = await self._read(request)
        session: Session | None = request.state.console_session
        return session

    async def _read(self, request: Request) -> Session | None:
        value = request.cookies.get(COOKIE)
        if not value:
            return None
        try:
            data, written = self._serializer.loads(value, max_age=MAX_AGE, return_timestamp=True)
            session = Session(**data)
        except (BadSignature, TypeError):
            return None
        if self._ended.ended(session.sid, written.timestamp()):
            return None
        if await self._store.console_session_ended(session.sid):
            self._ended.end(session.sid)
            return None
        return session

    async def end(self, session: Session) -> None:
        """Sign ``session`` out: its cookie, or any copy of it, no longer reads, in any
        process on the store."""
        await self._store.end_console_session(session.sid, now=self._clock.now())
        self._ended.end(session.sid)

    def write(self, response: Response, request: Request, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            self._serializer.dumps(asdict(session)),
            max_age=MAX_AGE,
            path=cookie_path(request),
            secure=self._is_secure(request),
            httponly=True,
            samesite="none" if self._embedded else "lax",
        )
        self._partition(response)

    def clear(self, response: Response, request: Request) -> None:
        response.delete_cookie(
            COOKIE,
            path=cookie_path(request),
            secure=self._is_secure(request),
            httponly=True,
            samesite="none" if self._embedded else "lax",
        )
        self._partition(response)

    def _partition(self, response: Response) -> None:
        """Embedded, mark the cookie just set ``Partitioned``: a browser that blocks other
        sites' cookies in frames keeps it, for the framing site only (Python's cookies learn
        the attribute in 3.14)."""
        if self._embedded:
            name, value = response.raw_headers[-1]
            response.raw_headers[-1] = (name, value + b"; Partitioned")

    def _is_secure(self, request: Request) -> bool:
        if self._embedded:
            return True  # a cookie sent to another site's frame must be
        return self._secure if self._secure is not None else request.url.scheme == "https"


def cookie_path(request: Request) -> str:
    """Where the console is mounted: the cookie goes to the console only."""
    return str(request.scope.get("root_path") or "/")
