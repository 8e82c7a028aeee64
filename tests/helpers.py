"""Building a service around a test store, clock and receiver."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ccpush.clock import Clock
from ccpush.models import NewRecord
from ccpush.record import CallRecord
from ccpush.service import Service
from ccpush.settings import Settings
from ccpush.wire import DEFAULT_ZONE, parse_zone
from tests.fakedns import FakeDNS


def make_settings(tmp_path: Path, db_url: str, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "database_url": db_url,
        "admin_token": "test-admin-token-0123456789abcdef",
        "push_timeout": 2.0,
        "push_connect_timeout": 1.0,
        "lease": "10s",
        "poll_interval": 0.2,
        "auth_failure_limit": 1000,
        "allowed_target_networks": "127.0.0.0/8",
    }
    values.update(changes)
    return Settings(**values)


# Names tests may configure as push addresses; nothing else resolves, and real DNS is never asked.
TEST_DNS = {
    "example.com": [["93.184.216.34"]],
    "crm.example.com": [["93.184.216.34"]],
    "receiver.test": [["127.0.0.1"]],
}


def make_service(
    tmp_path: Path, db_url: str, clock: Clock | None = None, **changes: Any
) -> Service:
    settings = make_settings(tmp_path, db_url, **changes)
    # Push processes resolve names themselves: the test names are for pushes made here.
    resolver = None if settings.push_processes else FakeDNS(TEST_DNS)
    return Service(settings, clock=clock, resolver=resolver)


def new_record(data: dict[str, Any], zone: str = DEFAULT_ZONE) -> NewRecord:
    record = CallRecord.model_validate(data)
    return NewRecord(
        call_session_id=record.callSessionId,
        body=record.push_body(),
        call_start=record.call_start(parse_zone(zone)),
    )


def body_of(data: dict[str, Any]) -> Any:
    return json.loads(CallRecord.model_validate(data).push_body())


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> None:
    """Poll an async or sync check until it is truthy; fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)
