"""The audit log: who changed what, when, from where, with secrets left out.

An ``AuditEntry`` is written by the store in the same transaction as the change it
records: the mutating store methods take ``audit=`` (the who: actor, source address, time)
and fill in the what (the app, the action, the values before and after) from the rows they
changed, with the pure rules here. ``redact`` is the one rule that keeps secrets out:
every value an entry keeps goes through it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, Protocol

from ccpush.models import Account, ApiKey, App, PortalLink, ReplayJob


class AuditAction(StrEnum):
    """What an entry records."""

    ACCOUNT_CREATED = "account.created"
    APP_CREATED = "app.created"
    APP_RENAMED = "app.renamed"
    APP_DELETED = "app.deleted"
    ADDRESS_SET = "address.set"
    ADDRESS_CHANGED = "address.changed"
    ADDRESS_CLEARED = "address.cleared"
    APP_PAUSED = "app.paused"
    APP_AUTO_PAUSED = "app.auto_paused"
    APP_RESUMED = "app.resumed"
    SIGNING_ON = "signing.on"
    SIGNING_OFF = "signing.off"
    SECRET_ROTATED = "signing_secret.rotated"  # noqa: S105 - an action, not a secret
    HEADERS_CHANGED = "app.headers_changed"
    """The push headers: their names only."""
    CREDENTIALS_CHANGED = "app.credentials_changed"
    """The push credentials or client certificate: their kind, user name and subject only."""
    SETTINGS_CHANGED = "app.settings_changed"
    """Any other push setting (the pace)."""
    KEY_CREATED = "key.created"
    KEY_REVOKED = "key.revoked"
    RECORD_RESENT = "record.resent"
    REPLAY_REQUESTED = "replay.requested"
    PORTAL_LINK_ISSUED = "portal_link.issued"
    PORTAL_LINK_USED = "portal_link.used"
    SIGN_IN_SUCCEEDED = "sign_in.succeeded"
    SIGN_IN_FAILED = "sign_in.failed"


ADMIN: Final = "admin"
AUTOMATIC: Final = "ccpush"
"""The actor of what ccpush does on its own (pausing an app whose address keeps failing)."""
UNKNOWN: Final = "unknown"
"""The actor of a failed sign-in: whoever sent a token that is not valid."""
REDACTED: Final = "********"

_SECRET_WORDS: Final = ("secret", "password", "token", "key_pem", "keypem", "credential")
_NAMES_ONLY: Final = frozenset({"headers", "push_headers", "pushheaders"})
_SEALED: Final = frozenset({"endpoint"})
"""App fields kept sealed: only whether they changed is told."""
_APP_BOOKKEEPING: Final = frozenset(
    {"id", "account_id", "created_at", "updated_at", "failing_since", "paused_reason"}
)


def redact(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` safe to keep: a secret's value (a field named like a password, token,
    secret or private key) becomes ``********``, headers become their names, and nested
    objects are redacted the same way."""
    return {name: _redacted(name, value) for name, value in values.items()}


def _redacted(name: str, value: Any) -> Any:
    folded = name.lower().replace("-", "_")
    if value is None:
        return None
    if any(word in folded for word in _SECRET_WORDS) or folded in _SEALED:
        return REDACTED
    if folded in _NAMES_ONLY:
        names = value.keys() if isinstance(value, Mapping) else value
        return sorted(str(item if isinstance(item, str) else item[0]) for item in names)
    if isinstance(value, Mapping):
        return redact(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Iterable):
        return [_redacted(name, item) for item in value]
    return str(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One change (or sign-in): its time, who made it and from where, what it was.

    Given to a store method as ``audit=``, it names the who (``at``, ``actor``,
    ``actor_name``, ``source``); the store fills in the what with ``about`` or
    ``app_changes``."""

    at: datetime
    actor: str
    """``admin``, a key's id, ``portal:<link id>``, ``ccpush`` or ``unknown``."""
    actor_name: str | None = None
    """The key's name, when a key acted."""
    source: str | None = None
    """The client's address; None for what ccpush did on its own."""
    action: AuditAction = AuditAction.SIGN_IN_SUCCEEDED
    account_id: str | None = None
    app_id: str | None = None
    target: str | None = None
    """What else the action was about: a key's id, a callSessionId, a replay's id."""
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    id: int | None = None
    """Its number in the log, once kept (newer entries have larger ones)."""

    def __post_init__(self) -> None:
        # Whoever makes an entry, no secret gets into it (redacting twice changes nothing).
        for name in ("before", "after"):
            values = getattr(self, name)
            if values is not None:
                object.__setattr__(self, name, redact(values))

    def about(
        self,
        action: AuditAction,
        *,
        app: App | None = None,
        account_id: str | None = None,
        target: str | None = None,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """This entry's who, with the what: ``action`` on ``app`` (or in ``account_id``)."""
        return replace(
            self,
            action=action,
            account_id=app.account_id if app else account_id or self.account_id,
            app_id=app.id if app else self.app_id,
            target=target,
            before=before,
            after=after,
        )

    def json_values(self) -> tuple[str | None, str | None]:
        """``before`` and ``after`` as JSON texts, for the store."""
        return _json(self.before), _json(self.after)


def _json(values: Mapping[str, Any] | None) -> str | None:
    """Values already redacted (``about``) as JSON."""
    return None if values is None else json.dumps(values, separators=(",", ":"), default=str)


AUDIT_COLUMNS: Final = (
    "id, at, account_id, app_id, actor, actor_name, source, action, target, before, after"
)


class _Row(Protocol):
    def __getitem__(self, column: str, /) -> Any: ...


def entry_of(row: _Row, at: datetime) -> AuditEntry:
    """An entry read from the store: its row (``AUDIT_COLUMNS``), its time read by the backend."""
    return AuditEntry(
        id=row["id"],
        at=at,
        account_id=row["account_id"],
        app_id=row["app_id"],
        actor=row["actor"],
        actor_name=row["actor_name"],
        source=row["source"],
        action=AuditAction(row["action"]),
        target=row["target"],
        before=_from_json(row["before"]),
        after=_from_json(row["after"]),
    )


def _from_json(text: str | None) -> dict[str, Any] | None:
    return None if text is None else dict(json.loads(text))


def audit_conditions(query: AuditFilter) -> list[tuple[str, Any]]:
    """The conditions of a listing (``{}`` where the value goes), for either backend; the
    actions, a list, each backend adds in its own way."""
    given: list[tuple[str, Any]] = [
        ("account_id = {}", query.account_id),
        ("at >= {}", query.since),
        ("at < {}", query.until),
        ("app_id = {}", query.app_id),
        ("id < {}", query.before_id),
    ]
    return [(condition, value) for condition, value in given if value is not None]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditFilter:
    """Which entries to list, newest first."""

    account_id: str | None = None
    """None: every account's (the operator's view), platform entries included."""
    since: datetime | None = None
    until: datetime | None = None
    app_id: str | None = None
    actions: frozenset[AuditAction] = frozenset()
    """Empty: every action."""
    before_id: int | None = None
    """Cursor: only entries older than this one."""
    limit: int = 100


# What each change records: pure rules the stores share.


def app_created(entry: AuditEntry, app: App, opened: Opened | None = None) -> AuditEntry:
    """The app as made; its sealed push settings as ``opened`` shows them (names, kinds)."""
    after = app_values(app)
    if opened is not None:
        del after["endpoint"]
        shown = _plain(opened(app))
        after |= {_camel(part): shown.get(part) for part in _HEADER_PARTS + _CREDENTIAL_PARTS}
    return entry.about(AuditAction.APP_CREATED, app=app, after=after)


def app_deleted(entry: AuditEntry, app: App) -> AuditEntry:
    return entry.about(AuditAction.APP_DELETED, app=app, before=app_values(app))


def secret_rotated(entry: AuditEntry, app: App) -> AuditEntry:
    return entry.about(AuditAction.SECRET_ROTATED, app=app)


def account_created(entry: AuditEntry, account: Account) -> AuditEntry:
    after = {"name": account.name}
    return entry.about(AuditAction.ACCOUNT_CREATED, account_id=account.id, after=after)


def key_created(entry: AuditEntry, key: ApiKey) -> AuditEntry:
    after = {"name": key.name, "scope": str(key.scope), "prefix": key.prefix}
    return entry.about(
        AuditAction.KEY_CREATED, account_id=key.account_id, target=key.id, after=after
    )


def key_revoked(entry: AuditEntry, key: ApiKey) -> AuditEntry:
    return entry.about(
        AuditAction.KEY_REVOKED, account_id=key.account_id, target=key.id, after={"name": key.name}
    )


def portal_link_issued(entry: AuditEntry, link: PortalLink) -> AuditEntry:
    after = {"appId": link.app_id, "readOnly": link.read_only, "expiresAt": link.expires_at}
    scoped = replace(entry, app_id=link.app_id)
    return scoped.about(
        AuditAction.PORTAL_LINK_ISSUED, account_id=link.account_id, target=link.id, after=after
    )


def portal_link_used(entry: AuditEntry, link: PortalLink) -> AuditEntry:
    """The link's use, by whoever opened it: the link itself is the actor."""
    opener = replace(entry, actor=f"portal:{link.id}", actor_name=None, app_id=link.app_id)
    after = {"readOnly": link.read_only}
    return opener.about(
        AuditAction.PORTAL_LINK_USED, account_id=link.account_id, target=link.id, after=after
    )


def record_resent(entry: AuditEntry, app: App, call_session_id: str, delivery: int) -> AuditEntry:
    after = {"deliveryId": delivery}
    return entry.about(AuditAction.RECORD_RESENT, app=app, target=call_session_id, after=after)


def replay_requested(entry: AuditEntry, app: App, job: ReplayJob) -> AuditEntry:
    after = {
        "kind": str(job.kind),
        "from": job.range_from,
        "to": job.range_to,
        "records": job.total,
    }
    return entry.about(AuditAction.REPLAY_REQUESTED, app=app, target=job.id, after=after)


def app_values(app: App) -> dict[str, Any]:
    """What an app's entries show of it: every setting, secrets redacted."""
    return redact({_camel(name): getattr(app, name) for name in _app_settings(app)})


def _camel(name: str) -> str:
    """``push_url`` → ``pushUrl``: entries name fields as the API does."""
    first, *rest = name.split("_")
    return first + "".join(word.title() for word in rest)


def _app_settings(app: App) -> list[str]:
    return [f.name for f in fields(app) if f.name not in _APP_BOOKKEEPING]


Opened = Callable[[App], Any]
"""What an app's sealed push settings show (``Endpoint.described()``: names and kinds)."""

_HEADER_PARTS: Final = ("header_names",)
_CREDENTIAL_PARTS: Final = ("auth", "username", "certificate")


def app_changes(
    entry: AuditEntry, before: App, after: App, opened: Opened | None = None
) -> list[AuditEntry]:
    """One entry per thing that changed between ``before`` and ``after``: renamed, the
    address set, changed or cleared, paused (by ccpush: auto-paused) or resumed, signing
    on or off, headers (names) and credentials (kinds) as ``opened`` shows them, and every
    other setting, by name (``app.settings_changed``)."""
    entries = []
    for name in _app_settings(after):
        was, now = getattr(before, name), getattr(after, name)
        if name in _SEALED and opened is not None:
            entries += _sealed_changes(entry, after, _plain(opened(before)), _plain(opened(after)))
        elif was != now:
            if name == "endpoint":  # sealed push settings: that they changed, not what they hold
                was, now = was and "(set)", now and "(set)"
            action = _app_action(name, was, now, entry)
            key = _camel(name)
            entries.append(entry.about(action, app=after, before={key: was}, after={key: now}))
    return entries


def _plain(shown: Any) -> dict[str, Any]:
    return asdict(shown) if is_dataclass(shown) and not isinstance(shown, type) else dict(shown)


def _sealed_changes(
    entry: AuditEntry, app: App, was: dict[str, Any], now: dict[str, Any]
) -> list[AuditEntry]:
    """The headers' and the credentials' changes, each an entry if it changed."""
    entries = []
    for action, parts in (
        (AuditAction.HEADERS_CHANGED, _HEADER_PARTS),
        (AuditAction.CREDENTIALS_CHANGED, _CREDENTIAL_PARTS),
    ):
        before = {_camel(part): was.get(part) for part in parts}
        after = {_camel(part): now.get(part) for part in parts}
        if before != after:
            entries.append(entry.about(action, app=app, before=before, after=after))
    return entries


def _app_action(name: str, was: Any, now: Any, entry: AuditEntry) -> AuditAction:
    if name == "name":
        return AuditAction.APP_RENAMED
    if name == "push_url":
        if was is None:
            return AuditAction.ADDRESS_SET
        return AuditAction.ADDRESS_CLEARED if now is None else AuditAction.ADDRESS_CHANGED
    if name == "paused":
        if not now:
            return AuditAction.APP_RESUMED
        return AuditAction.APP_AUTO_PAUSED if entry.actor == AUTOMATIC else AuditAction.APP_PAUSED
    if name == "signing":
        return AuditAction.SIGNING_ON if now else AuditAction.SIGNING_OFF
    return AuditAction.SETTINGS_CHANGED
