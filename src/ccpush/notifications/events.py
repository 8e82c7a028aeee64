"""An event as it is told: the webhook's JSON ``{"type", "timestamp", "data"}`` and the
e-mail made from it. The message names the app, its address, the last error and the
app's page in the console."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final

from ccpush.models import App
from ccpush.notifications.records import EventType, Notice
from ccpush.store.planning import new_id

SUMMARIES: Final = {
    EventType.APP_FAILING: "every push to {pushUrl} has failed since {failingSince}",
    EventType.APP_AUTO_PAUSED: (
        "ccpush paused pushing: every push to {pushUrl} failed since {failingSince};"
        " its records are kept and pushed again on resume"
    ),
    EventType.APP_RECOVERED: "pushes to {pushUrl} succeed again",
    EventType.REPLAY_FINISHED: "replay {replayId} queued its {records} records again",
    EventType.SECRET_ROTATED: "the signing secret was rotated",
}
_SUMMARY_KEYS: Final = ("pushUrl", "failingSince", "replayId", "records")
LABELS: Final = (
    ("appName", "App"),
    ("appId", "App id"),
    ("accountId", "Account"),
    ("pushUrl", "Push address"),
    ("failingSince", "Failing since"),
    ("lastError", "Last error"),
    ("replayId", "Replay"),
    ("records", "Records"),
    ("consoleUrl", "Console"),
)


def _time(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def app_data(app: App, console_base: str, last_error: str | None = None) -> dict[str, Any]:
    """What every event of an app says of it."""
    return {
        "accountId": app.account_id,
        "appId": app.id,
        "appName": app.name,
        "pushUrl": app.push_url,
        "failingSince": _time(app.failing_since),
        "lastError": last_error,
        "consoleUrl": f"{console_base.rstrip('/')}/console/apps/{app.id}",
    }


def make_notice(type: EventType, app: App, data: dict[str, Any], now: datetime) -> Notice:
    """The event, its id (``msg_...``, the webhook's ``webhook-id``) and its JSON body."""
    body = {"type": type.value, "timestamp": _time(now), "data": data}
    return Notice(
        id=new_id("msg"),
        account_id=app.account_id,
        app_id=app.id,
        type=type,
        body=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
        created_at=now,
    )


def email_of(body: bytes, product: str = "ccpush") -> tuple[str, str]:
    """The subject and text of the e-mail telling a notification's JSON ``body``."""
    event = json.loads(body)
    data: dict[str, Any] = event["data"]
    type = EventType(event["type"])
    name = data.get("appName") or data.get("appId")
    subject = f"[{product}] {type.value}: {name}"
    summary = SUMMARIES[type].format_map({key: data.get(key) or "?" for key in _SUMMARY_KEYS})
    lines = [f"{name}: {summary}.", ""]
    lines += [f"{label}: {data[key]}" for key, label in LABELS if data.get(key) is not None]
    lines += ["", f"Event {type.value} at {event['timestamp']}."]
    return subject, "\n".join(lines) + "\n"
