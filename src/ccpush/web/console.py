"""Who is looking at the console, and what every page needs: the same callers as the API.

A manage key sees its own account; the operator (admin token) sees the account it has
switched to, and any app; an ingest key may not sign in. Another account's objects answer
404, as in the API. A portal link's session sees its account, or only its one app, never
the keys; a read-only one changes nothing (403).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse

from ccpush.api.auth import Caller
from ccpush.api.deps import ApiState
from ccpush.api.limits import SignInFailures
from ccpush.errors import AccountNotFound, AppNotFound
from ccpush.models import Account, App, KeyScope
from ccpush.service import Service, resolve_console_secret
from ccpush.store.base import DEFAULT_ACCOUNT
from ccpush.web.forms import read_form
from ccpush.web.pages import Pages
from ccpush.web.portal import Branding
from ccpush.web.session import Session, Sessions, csrf_matches, fingerprint

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

NOTICES = {
    "created": "The voice application was added.",
    "address-saved": "The push address was saved. Records waiting for it are pushed now.",
    "address-cleared": "The push address was cleared. New records are kept until one is set.",
    "paused": "Pushing is paused. Records that arrive are kept and pushed when you resume.",
    "resumed": "Pushing resumed, starting with the records kept meanwhile.",
    "resent": "The record is being pushed again, as this new delivery.",
    "rotated": "A new signing secret was made. Until the overlap ends, pushes are signed with"
    " the previous secret too: switch your receiver to the new one before then.",
    "push-settings-saved": "The push settings were saved: every push carries them from now on.",
    "pace-saved": "The pace was saved: every worker keeps it from its next claim.",
    "account-created": "The account was added. Make its first key: a manage key to sign in.",
    "key-revoked": "The key was revoked: requests with it are refused from now on.",
}
"""The messages a redirect may ask the next page to show (``?notice=``)."""


class SignInRequired(Exception):
    """The page needs a signed-in session."""


class CsrfRefused(Exception):
    """A POST without this session's CSRF token."""


class ReadOnly(Exception):
    """A change asked in a read-only session."""


class TooManyRequests(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry after {retry_after:.0f} s")
        self.retry_after = retry_after


class Console:
    """What the console's routes share: the API's state (service, token and limiters), the
    templates, and the session cookie signer."""

    def __init__(self, api: ApiState) -> None:
        self.api = api
        self.branding = Branding.of(self.service.settings)
        self.pages = Pages(self.service.zone, self.branding.headers(self.service.settings))
        self._sessions: Sessions | None = None

    @property
    def service(self) -> Service:
        return self.api.service

    @property
    def admin_token(self) -> str:
        return self.api.admin_token

    @property
    def auth_failures(self) -> SignInFailures:
        return self.api.auth_failures

    def page(
        self,
        request: Request,
        viewer: Viewer | None,
        template: str,
        *,
        status: int = 200,
        csrf: str | None = None,
        portal: bool = False,
        **context: Any,
    ) -> HTMLResponse:
        """A page in the console's layout, with the notice named in ``?notice=``; nothing of
        ccpush's brand in a portal session's (or if ``portal``)."""
        shared = {
            "viewer": viewer,
            "csrf": csrf if csrf is not None else (viewer.session.csrf if viewer else ""),
            "zone": self.pages.zone_label(self.service.clock.now()),
            "notice": NOTICES.get(request.query_params.get("notice", "")),
            "brand": self.branding.shown(portal=portal or bool(viewer and viewer.portal)),
        }
        return self.pages.render(request, template, {**shared, **context}, status=status)

    @property
    def sessions(self) -> Sessions:
        """Made on first use: the secret may be generated into the data directory."""
        if self._sessions is None:
            settings = self.service.settings
            secret = resolve_console_secret(settings)
            self._sessions = Sessions(
                secret,
                secure=settings.console_secure_cookie,
                store=self.service.store,
                clock=self.service.clock,
                embedded=settings.console_embedded,
            )
        return self._sessions


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


ConsoleDep = Annotated[Console, Depends(console_of)]


async def check_csrf(request: Request, console: ConsoleDep) -> None:
    """Every POST carries the session's CSRF token, in the form or the ``X-CSRF-Token`` header."""
    if request.method in SAFE_METHODS:
        return
    sent = request.headers.get("x-csrf-token") or (await read_form(request)).get("csrf", "")
    if not csrf_matches(await console.sessions.read(request), sent):
        raise CsrfRefused()


async def check_writable(request: Request, console: ConsoleDep) -> None:
    """A read-only session's POSTs are refused, signing out aside."""
    if request.method in SAFE_METHODS or request.url.path.endswith("/sign-out"):
        return
    session = await console.sessions.read(request)
    if session is not None and session.read_only:
        raise ReadOnly()


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in caller, the account on screen, and (the operator's) accounts to pick."""

    caller: Caller
    session: Session
    account: Account
    accounts: tuple[Account, ...] = ()

    @property
    def is_admin(self) -> bool:
        return self.caller.is_admin

    @property
    def scope(self) -> str | None:
        """What store lookups are confined to: the key's account, or None for the operator."""
        return self.caller.account_id

    @property
    def portal(self) -> str | None:
        """The portal link the session was opened with (its id); None for a key or the admin."""
        return self.session.portal

    @property
    def app_id(self) -> str | None:
        """The one app a portal session may see; None: any of its account's."""
        return self.session.app_id

    @property
    def read_only(self) -> bool:
        return self.session.read_only


async def current_viewer(request: Request, console: ConsoleDep) -> Viewer:
    """The viewer, or ``SignInRequired``; ``TooManyRequests`` past the key's request rate."""
    session = await console.sessions.read(request)
    if session is None or not session.signed_in:
        raise SignInRequired()
    caller = await _caller(console, session)
    if caller is None:
        raise SignInRequired()
    identity = f"portal:{session.portal}" if session.portal else caller.identity
    if (wait := console.api.key_limiter.take(identity)) is not None:
        raise TooManyRequests(wait)
    store = console.service.store
    if caller.account_id is not None:
        return Viewer(caller, session, await store.get_account(caller.account_id))
    accounts = tuple(await store.list_accounts())
    shown = [account for account in accounts if account.id == session.account_id]
    fallback = [account for account in accounts if account.id == DEFAULT_ACCOUNT]
    [account, *_] = shown or fallback or accounts
    return Viewer(caller, session, account, accounts)


async def _caller(console: Console, session: Session) -> Caller | None:
    """Who the session is, if its key is still valid (or the admin token unchanged)."""
    if session.admin is not None:
        same = hmac.compare_digest(session.admin, fingerprint(console.admin_token))
        return Caller(account_id=None, scope=None) if same else None
    if session.account_id is None:
        return None
    if session.portal is not None:
        return Caller(account_id=session.account_id, scope=KeyScope.MANAGE)
    for key in await console.service.store.list_keys(session.account_id):
        if key.id == session.key_id and key.revoked_at is None and key.scope is KeyScope.MANAGE:
            return Caller(
                account_id=key.account_id, scope=key.scope, key_id=key.id, key_name=key.name
            )
    return None


ViewerDep = Annotated[Viewer, Depends(current_viewer)]


async def viewed_app(app_id: str, console: ConsoleDep, viewer: ViewerDep) -> App:
    """The app of the path, if the viewer may see it (``AppNotFound`` else: a 404)."""
    if viewer.app_id is not None and viewer.app_id != app_id:
        raise AppNotFound()
    return await console.service.store.get_app(app_id, viewer.scope)


AppDep = Annotated[App, Depends(viewed_app)]


def require_whole_account(viewer: ViewerDep) -> Viewer:
    """What concerns the whole account (adding an app): not for a session of one app."""
    if viewer.app_id is not None:
        raise AppNotFound()
    return viewer


def require_key_holder(viewer: ViewerDep) -> Viewer:
    """The keys' pages: a portal session may neither see, make nor revoke keys (404, as if
    they did not exist)."""
    if viewer.portal is not None:
        raise AccountNotFound()
    return viewer


def require_admin(viewer: ViewerDep) -> Viewer:
    """Only the operator may switch accounts; to a key the route does not exist."""
    if not viewer.is_admin:
        raise AccountNotFound()
    return viewer
