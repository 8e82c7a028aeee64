"""``ccpush status``: the apps, the deliveries by state and the apps that fail, from the
API's app list and ``/metrics``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from ccpush.models import WAITING, DeliveryState
from ccpush.operator_cli.client import DEFAULT_URL, CliError, connect, path
from ccpush.operator_cli.common import ApiUrl, AsJson, Token, emit
from ccpush.operator_cli.output import APP_COLUMNS, Column, column, counts, fields, table

DELIVERIES_METRIC: Final = "ccpush_deliveries"
OLDEST_DUE_METRIC: Final = "ccpush_oldest_due_age_seconds"
FAILING_COLUMNS: Final = (
    *APP_COLUMNS[:4],
    column("FAILING SINCE", "failingSince"),
    Column("PAUSED BECAUSE", lambda app: app.get("pausedReason")),
)


def read_metrics(text: str) -> tuple[dict[str, int], float]:
    """The deliveries by state (every state, in their order) and the age of the oldest due
    delivery, from ``/metrics``."""
    # Imported here: it takes longer to import than the rest of the command line.
    from prometheus_client.parser import text_string_to_metric_families

    by_state = dict.fromkeys((state.value for state in DeliveryState), 0)
    oldest_due = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == DELIVERIES_METRIC and sample.labels.get("state") in by_state:
                by_state[sample.labels["state"]] = int(sample.value)
            elif sample.name == OLDEST_DUE_METRIC:
                oldest_due = sample.value
    return by_state, oldest_due


def failing(app: Mapping[str, Any]) -> bool:
    """Every push to the app's address has failed lately, or ccpush paused it for that."""
    return bool(app.get("failingSince") or app.get("pausedReason"))


def summary(
    apps: Sequence[Mapping[str, Any]], by_state: Mapping[str, int], oldest_due: float
) -> dict[str, Any]:
    """What ``status`` prints (its JSON)."""
    paused = sum(1 for app in apps if app["paused"])
    return {
        "apps": {
            "total": len(apps),
            "pushing": sum(1 for app in apps if app["pushing"]),
            "paused": paused,
            "withoutPushUrl": sum(1 for app in apps if not app["paused"] and not app["pushUrl"]),
        },
        "backlog": sum(by_state.get(state.value, 0) for state in WAITING),
        "deliveries": dict(by_state),
        "oldestDueAgeSeconds": oldest_due,
        "failingApps": [app for app in apps if failing(app)],
    }


def summary_text(status: Mapping[str, Any]) -> str:
    apps, failing_apps = status["apps"], status["failingApps"]
    waited = status["oldestDueAgeSeconds"]
    overview = fields(
        [
            (
                "apps",
                f"{apps['total']}: {apps['pushing']} pushing, {apps['paused']} paused,"
                f" {apps['withoutPushUrl']} without a push address",
            ),
            ("backlog", f"{status['backlog']} (the oldest due has waited {waited:.0f} s)"),
            ("deliveries", counts(status["deliveries"])),
            ("failing apps", len(failing_apps)),
        ]
    )
    if not failing_apps:
        return overview
    return overview + "\n\n" + table(failing_apps, FAILING_COLUMNS, empty="")


def status(url: ApiUrl = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """A summary: the apps, the backlog and deliveries by state, the apps that fail."""
    api = connect(url, token)
    apps = api.get_all(path("apps"))["items"]
    metrics = api.get("/metrics")
    if not isinstance(metrics, str):
        raise CliError(f"{url}/metrics did not answer Prometheus text")
    emit(summary(apps, *read_metrics(metrics)), as_json, summary_text)
