"""The API's objects as plain aligned text for people: tables, and an object's fields one per
line (``--json`` prints the API's JSON instead)."""

from __future__ import annotations

import textwrap
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

Row = Mapping[str, Any]

ABSENT: Final = "-"
GAP: Final = "  "


def cell(value: object) -> str:
    """A value as a table shows it: ``-`` for none, ``yes``/``no``, else its text."""
    if value is None:
        return ABSENT
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def width(text: str) -> int:
    """The columns a terminal gives ``text``: two for an East Asian wide character, none for
    a combining mark."""
    return sum(
        0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1
        for char in text
    )


def pad(text: str, columns: int) -> str:
    return text + " " * (columns - width(text))


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    value: Callable[[Row], object]


def column(header: str, key: str) -> Column:
    """A column showing the object's ``key``."""
    return Column(header, lambda row: row.get(key))


def table(rows: Sequence[Row], columns: Sequence[Column], *, empty: str) -> str:
    """A header line and a line per row, each column as wide as its widest cell; ``empty``
    when there is no row."""
    if not rows:
        return empty
    lines = [[c.header for c in columns], *([cell(c.value(row)) for c in columns] for row in rows)]
    widths = [max(width(line[i]) for line in lines) for i in range(len(columns))]
    return "\n".join(
        GAP.join(pad(text, size) for text, size in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def fields(pairs: Sequence[tuple[str, object]]) -> str:
    """``label  value`` lines, the values aligned; a value of several lines stays in its
    column."""
    size = max(width(label) for label, _ in pairs)
    lines = []
    for label, value in pairs:
        first, *more = cell(value).splitlines() or [""]
        lines.append(f"{pad(label, size)}{GAP}{first}".rstrip())
        lines.extend(" " * (size + len(GAP)) + line for line in more)
    return "\n".join(lines)


def counts(by_name: Mapping[str, object]) -> str:
    """``pending 3, delivered 12``."""
    return ", ".join(f"{name} {count}" for name, count in by_name.items()) or "none"


# Accounts and keys

ACCOUNT_COLUMNS: Final = (
    column("ID", "id"),
    column("NAME", "name"),
    column("CREATED", "createdAt"),
)
KEY_COLUMNS: Final = (
    column("ID", "id"),
    column("NAME", "name"),
    column("SCOPE", "scope"),
    column("PREFIX", "prefix"),
    column("CREATED", "createdAt"),
    column("REVOKED", "revokedAt"),
)


def account_fields(account: Row) -> str:
    return fields(
        [("id", account["id"]), ("name", account["name"]), ("created", account["createdAt"])]
    )


def key_fields(key: Row) -> str:
    pairs = [
        ("id", key["id"]),
        ("name", key["name"]),
        ("account", key["accountId"] or "(platform key)"),
        ("scope", key["scope"]),
        ("prefix", key["prefix"]),
        ("created", key["createdAt"]),
        ("revoked", key["revokedAt"]),
    ]
    if "secret" in key:
        pairs.append(("secret", key["secret"]))
    return fields(pairs)


# Apps


def app_state(app: Row) -> str:
    """One word for where an app stands: paused, no address, failing, or pushing."""
    if app.get("paused"):
        return "paused"
    if not app.get("pushUrl"):
        return "no address"
    return "failing" if app.get("failingSince") else "pushing"


APP_COLUMNS: Final = (
    column("ID", "id"),
    column("NAME", "name"),
    column("ACCOUNT", "accountId"),
    Column("STATE", app_state),
    column("PUSH URL", "pushUrl"),
)


def app_fields(app: Row) -> str:
    return fields(
        [
            ("id", app["id"]),
            ("name", app["name"]),
            ("account", app["accountId"]),
            ("push url", app["pushUrl"]),
            ("state", app_state(app)),
            ("paused reason", app["pausedReason"]),
            ("failing since", app["failingSince"]),
            ("signing", app["signing"]),
            ("push headers", ", ".join(app.get("pushHeaders") or {}) or "none"),
            ("push auth", _auth(app.get("pushAuth"))),
            ("client cert", (app.get("clientCertificate") or {}).get("subject") or "none"),
            ("rate limit", _per_second(app.get("rateLimit"))),
            ("max in flight", app.get("maxInFlight") or "no limit"),
            ("created", app["createdAt"]),
            ("updated", app["updatedAt"]),
        ]
    )


def _auth(auth: Row | None) -> str:
    if not auth:
        return "none"
    return f"basic ({auth['username']})" if auth["type"] == "basic" else str(auth["type"])


def _per_second(rate: float | None) -> str:
    return "no limit" if rate is None else f"{rate:g}/s"


def trial_fields(trial: Row) -> str:
    return fields(
        [
            ("delivered", trial["delivered"]),
            ("status", trial["statusCode"]),
            ("latency", f"{trial['latencyMs']:.0f} ms"),
            ("error", _error(trial)),
            ("answer", trial["responseExcerpt"]),
        ]
    )


def signing_fields(keys: Row) -> str:
    return fields(
        [
            ("secret", keys["secret"]),
            ("previous secret", keys["previousSecret"]),
            ("previous until", keys["previousUntil"]),
        ]
    )


# Deliveries and replays

ATTEMPT_COLUMNS: Final = (
    column("#", "number"),
    column("STARTED", "startedAt"),
    Column("TOOK", lambda attempt: f"{attempt['durationMs']:.0f} ms"),
    column("STATUS", "statusCode"),
    Column("ERROR", lambda attempt: _error(attempt)),
)


def _error(outcome: Row) -> str | None:
    kind, text = outcome.get("errorKind"), outcome.get("error")
    return f"{kind}: {text}" if kind and text else kind or text


def delivery_text(delivery: Row) -> str:
    """A delivery's line, and its attempts as a table under it."""
    head = (
        f"delivery {delivery['id']}: {delivery['state']}, version {delivery['version']},"
        f" sequence {delivery['sequence']}, created {delivery['createdAt']}"
    )
    if delivery.get("nextAttemptAt"):
        head += f", next attempt {delivery['nextAttemptAt']}"
    if delivery.get("replayId"):
        head += f", replay {delivery['replayId']}"
    attempts = table(delivery["attemptLog"], ATTEMPT_COLUMNS, empty="no attempt yet")
    return head + "\n" + textwrap.indent(attempts, GAP)


def deliveries_text(answer: Row) -> str:
    return "\n\n".join(delivery_text(delivery) for delivery in answer["items"])


def replay_fields(replay: Row) -> str:
    return fields(
        [
            ("id", replay["id"]),
            ("kind", replay["kind"]),
            ("from", replay["from"]),
            ("to", replay["to"]),
            ("state", replay["state"]),
            ("records", replay["total"]),
            ("enqueued", replay["enqueued"]),
            ("deliveries", counts(replay["deliveries"])),
            ("created", replay["createdAt"]),
            ("finished", replay["finishedAt"]),
        ]
    )
