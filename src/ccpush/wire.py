"""A push as it travels: its headers, its body's type, its times and their zone, defined once.

The server (``ccpush.dispatcher``) writes pushes with what is here, and the receiver kit
(``ccpush.receiver``), ``ccpush listen``, the demo and the benchmarks read them with it, so
neither side can drift from the other. Standard library only: the kit imports it, and is
imported without the server's dependencies.

A push is a POST of one call record as JSON (``CONTENT_TYPE``) with these headers:

* ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``: Standard Webhooks (the
  signature, ``v1,`` and a base64 HMAC-SHA256 keyed with a ``whsec_`` secret, is computed
  by ``ccpush.signing`` and absent when the app's signing is off);
* ``ccpush-sequence`` (the app's number for the record version, without holes),
  ``ccpush-record-version`` and ``ccpush-attempt``;
* ``ccpush-record-timezone``: the zone of the record's ``yyyy-MM-dd HH:mm:ss`` times;
* on a test push, ``ccpush-test: true``, and neither sequence nor version.
"""

from __future__ import annotations

import re
from datetime import UTC, timedelta, timezone, tzinfo
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ccpush import __version__

WEBHOOK_ID: Final = "webhook-id"
WEBHOOK_TIMESTAMP: Final = "webhook-timestamp"
WEBHOOK_SIGNATURE: Final = "webhook-signature"
SEQUENCE: Final = "ccpush-sequence"
RECORD_VERSION: Final = "ccpush-record-version"
ATTEMPT: Final = "ccpush-attempt"
RECORD_TIMEZONE: Final = "ccpush-record-timezone"
TEST: Final = "ccpush-test"

CONTENT_TYPE: Final = "application/json;charset=UTF-8"
USER_AGENT: Final = f"ccpush/{__version__}"
HTTP_HEADERS: Final = {
    "Content-Type": CONTENT_TYPE,
    "User-Agent": USER_AGENT,
    # The answer is only excerpted, never decompressed: ask for it as is.
    "Accept-Encoding": "identity",
}
"""What every push carries as an HTTP request, whatever its record."""

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SIGNATURE_SCHEME: Final = "v1,"
"""What each signature in ``webhook-signature`` starts with."""
TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
"""The record's times: ``yyyy-MM-dd HH:mm:ss``, wall-clock in the record time zone."""
DEFAULT_ZONE: Final = "+08:00"
"""The record time zone unless configured (the platform's convention), and the one a
receiver assumes when a push names none."""


def fixed_headers(zone: str) -> dict[str, str]:
    """The headers every push of a platform carries alike: ``HTTP_HEADERS`` and the record
    time zone (as ``zone_label`` writes it). Made once, for ``push_headers``."""
    return {**HTTP_HEADERS, RECORD_TIMEZONE: zone}


def push_headers(
    fixed: dict[str, str],
    msg_id: str,
    timestamp: int,
    signature: str | None,
    sequence: int,
    version: int,
    attempt: int,
) -> dict[str, str]:
    """A push's headers: Standard Webhooks' (no signature if ``signature`` is None), then
    ``fixed`` (``fixed_headers``), then the record version's numbers and the attempt's. One
    dictionary per push: this is made for every attempt."""
    headers = {WEBHOOK_ID: msg_id, WEBHOOK_TIMESTAMP: str(timestamp)}
    if signature is not None:
        headers[WEBHOOK_SIGNATURE] = signature
    headers.update(fixed)
    headers[SEQUENCE] = str(sequence)
    headers[RECORD_VERSION] = str(version)
    headers[ATTEMPT] = str(attempt)
    return headers


def headers_of_test_push(
    msg_id: str, timestamp: int, signature: str | None, zone: str
) -> dict[str, str]:
    """A test push's headers: signed like a push, marked as a test, without a sequence
    number or a version (the sender adds ``HTTP_HEADERS``)."""
    headers = {WEBHOOK_ID: msg_id, WEBHOOK_TIMESTAMP: str(timestamp)}
    if signature is not None:
        headers[WEBHOOK_SIGNATURE] = signature
    headers[ATTEMPT] = "1"
    headers[RECORD_TIMEZONE] = zone
    headers[TEST] = "true"
    return headers


_OFFSET: Final = re.compile(r"([+-])(\d{2}):(\d{2})")


def parse_zone(text: str) -> tzinfo:
    """A record time zone from ``+08:00``, ``-05:30``, ``UTC`` or an IANA name."""
    match = _OFFSET.fullmatch(text.strip())
    if match:
        sign = 1 if match.group(1) == "+" else -1
        hours, minutes = int(match.group(2)), int(match.group(3))
        if hours > 14 or minutes > 59:
            raise ValueError(f"time zone offset {text!r} is out of range")
        return timezone(sign * timedelta(hours=hours, minutes=minutes))
    if text.strip().upper() in ("UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(text.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {text!r}: use an offset like +08:00 or a name like Asia/Shanghai"
        ) from None


def zone_label(zone: tzinfo) -> str:
    """How the record time zone is announced on a push (``+08:00`` or an IANA name)."""
    if isinstance(zone, ZoneInfo):
        return zone.key
    offset = zone.utcoffset(None) or timedelta(0)
    total = int(offset.total_seconds()) // 60
    sign = "-" if total < 0 else "+"
    return f"{sign}{abs(total) // 60:02d}:{abs(total) % 60:02d}"
