"""A group of ingestion requests of several apps, stored together (``Store.ingest_many``):
each app's requests as if made one after the other, whatever else the group holds."""

from __future__ import annotations

import json
from datetime import timedelta

from ccpush.clock import ManualClock
from ccpush.models import DeliveryState
from ccpush.store import Store
from ccpush.store.base import IngestRequest
from tests.conftest import minimal_record
from tests.helpers import new_record


async def test_a_group_of_several_apps_is_stored_as_one_request_after_the_other(
    store: Store, clock: ManualClock
) -> None:
    now = clock.now()
    pushing = await store.create_app(name="pushing", push_url="http://receiver.test/", now=now)
    paused = await store.create_app(name="paused", push_url="http://receiver.test/", now=now)
    await store.update_app(paused.id, paused=True, now=now)
    await store.ingest(pushing.id, [new_record(minimal_record("known"))], now=now)
    later = now + timedelta(seconds=1)

    def request(app_id: str, *records: tuple[str, int]) -> IngestRequest:
        made = [new_record(minimal_record(sid, callDuration=d)) for sid, d in records]
        return IngestRequest(app_id=app_id, records=made, now=later)

    outcomes = await store.ingest_many(
        [
            request(pushing.id, ("known", 5), ("a", 0)),
            request(paused.id, ("a", 0), ("b", 0)),
            request(pushing.id, ("a", 1), ("known", 5), ("b", 0)),
            request(paused.id, ("a", 0)),
        ]
    )
    summary = [
        [(r.status.value, r.sequence, r.version) for r in outcome]
        for outcome in outcomes
        if isinstance(outcome, list)
    ]
    assert summary == [
        [("updated", 2, 2), ("accepted", 3, 1)],
        [("accepted", 1, 1), ("accepted", 2, 1)],
        [("updated", 4, 2), ("duplicate", None, 2), ("accepted", 5, 1)],
        [("duplicate", None, 1)],
    ]
    stored = await store.records_by_sequence(pushing.id, 1, 10, 10)
    assert [(r.call_session_id, r.sequence, r.version) for r in stored] == [
        ("known", 1, 1),
        ("known", 2, 2),
        ("a", 3, 1),
        ("a", 4, 2),
        ("b", 5, 1),
    ]
    assert json.loads(stored[3].body)["callDuration"] == 1
    assert stored[3].received_at == later
    counts = await store.count_by_state(pushing.id)
    assert counts[DeliveryState.PENDING] == 5
    assert (await store.count_by_state(paused.id))[DeliveryState.HELD] == 2
    due = await store.claim_due(
        now=later, limit=10, lease_until=later + timedelta(minutes=1), owner="w"
    )
    assert sorted((c.call_session_id, c.version) for c in due) == [
        ("a", 1),
        ("a", 2),
        ("b", 1),
        ("known", 1),
        ("known", 2),
    ]


async def test_a_group_of_duplicates_only_stores_nothing(store: Store, clock: ManualClock) -> None:
    app = await store.create_app(name="a", push_url=None, now=clock.now())
    record = new_record(minimal_record("s1"))
    await store.ingest(app.id, [record], now=clock.now())
    outcomes = await store.ingest_many(
        [IngestRequest(app_id=app.id, records=[record], now=clock.now())] * 2
    )
    assert [[r.status.value for r in o] for o in outcomes if isinstance(o, list)] == [
        ["duplicate"],
        ["duplicate"],
    ]
    assert sum((await store.count_by_state(app.id)).values()) == 1
