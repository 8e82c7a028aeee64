"""Finding a record by its callSessionId, as the API does (``?callSessionId=``): in an
app's delivery log, or across the apps of the account on screen."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from ccpush.models import App
from ccpush.record import MAX_SESSION_ID, SESSION_ID_PATTERN
from ccpush.store.base import DeliveryFilter, Store

SEARCH: Final = "callSessionId"
"""The query parameter naming the record looked for, as in the API."""


def searchable_session_id(text: str) -> bool:
    """Whether ``text`` could be a record's callSessionId: if not, no store is asked."""
    return 0 < len(text) <= MAX_SESSION_ID and re.match(SESSION_ID_PATTERN, text) is not None


async def apps_with_record(store: Store, apps: Iterable[App], call_session_id: str) -> list[App]:
    """Those of ``apps`` that have a record with this callSessionId."""
    if not searchable_session_id(call_session_id):
        return []
    query = DeliveryFilter(call_session_id=call_session_id, limit=1)
    return [app for app in apps if await store.list_deliveries(app.id, query)]
