"""The receiver kit: verify, read and reconcile ccpush's pushes, with the standard library only.

It is for the customer's side of a push: the program behind a cc-http push address.
``import ccpush.receiver`` needs nothing but Python (no pydantic, aiohttp or FastAPI), so it
can be vendored into any web framework. Each push is a POST of one call record as JSON with
these headers: ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` (Standard
Webhooks), ``ccpush-sequence``, ``ccpush-record-version``, ``ccpush-attempt``,
``ccpush-record-timezone`` and, on a test push, ``ccpush-test: true``.

A receiver does this with each push (see ``docs/receiving.md`` for FastAPI and Flask)::

    verifier = Verifier(["whsec_..."])  # GET /v1/apps/{appId}/signing-secret
    seen = MemoryIdempotencyStore()     # or your own: Redis SET NX, a unique key in SQL
    gaps = GapTracker()                 # one per app, that is per push address

    def handle(body: bytes, headers: Mapping[str, str]) -> int:  # the status to answer
        try:
            verifier.verify(body, headers)
        except VerificationError:
            return 401
        push = parse_push(body, headers)
        if push.info.is_test:
            return 200
        with first_delivery(seen, push.info.webhook_id) as first:
            if first:
                save(push.info.version, push.record)  # the upsert below
                gaps.add(push.info.sequence)
        return 200

1. **Verify first.** ``Verifier`` checks the HMAC-SHA256 signature (any of the header's
   signatures, against any of your secrets, so a secret rotation needs no downtime) and that
   ``webhook-timestamp`` is within 5 minutes of now, which stops replays of old pushes.
2. **Answer 2xx only once the record is stored.** Any other answer, a timeout or a lost
   connection makes ccpush push it again at +30, +60 and +90 minutes, with the same
   ``webhook-id`` and ``ccpush-attempt`` 2, 3, 4. An exception inside ``first_delivery``
   releases the webhook-id, so that retry is handled rather than skipped.
3. **Skip repeats by ``webhook-id``.** Delivery is at least once: a push can arrive again
   although it was answered (the answer was lost, or a ccpush worker died before writing it).
4. **Upsert by version.** A record changed after it was pushed (a remark added, the recording
   ready) is pushed again with the same ``callSessionId`` and the next
   ``ccpush-record-version``; versions can arrive out of order (version 1 retried after
   version 2 was delivered). Keep, per ``callSessionId``, the highest version::

       INSERT INTO calls (call_session_id, version, record) VALUES (?, ?, ?)
       ON CONFLICT (call_session_id) DO UPDATE
          SET version = excluded.version, record = excluded.record
        WHERE calls.version < excluded.version

5. **Watch the sequence.** ``ccpush-sequence`` numbers each record version of an app 1, 2,
   3... without holes. ``GapTracker`` reports the numbers not received; a push still retrying
   fills its gap within 90 minutes, and what is missing after that can be fetched with
   ``fetch_missing`` (the reconciliation query) and saved with the same upsert.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from enum import IntEnum
from typing import Any, Final, NamedTuple, Protocol

from ccpush.codes import CallType, HangingDirection, HangupReason
from ccpush.wire import (
    ATTEMPT,
    DEFAULT_ZONE,
    RECORD_TIMEZONE,
    RECORD_VERSION,
    SECRET_PREFIX,
    SEQUENCE,
    SIGNATURE_SCHEME,
    TEST,
    TIME_FORMAT,
    WEBHOOK_ID,
    WEBHOOK_SIGNATURE,
    WEBHOOK_TIMESTAMP,
    parse_zone,
)

__all__ = [
    "CONTRACT_FIELDS",
    "DEFAULT_TIMEZONE",
    "DEFAULT_TOLERANCE",
    "Arrival",
    "CallRecord",
    "CallType",
    "Gap",
    "GapTracker",
    "HangingDirection",
    "HangupReason",
    "Headers",
    "IdempotencyStore",
    "InvalidPushError",
    "MemoryIdempotencyStore",
    "MissedRecord",
    "MissingHeaderError",
    "Push",
    "PushInfo",
    "ReceivedRecord",
    "ReceiverError",
    "ReconciliationError",
    "SignatureError",
    "TimestampError",
    "VerificationError",
    "Verifier",
    "fetch_missing",
    "first_delivery",
    "parse_push",
    "parse_record",
    "parse_timezone",
    "read_push_info",
]

DEFAULT_TOLERANCE: Final = timedelta(minutes=5)
DEFAULT_TIMEZONE: Final = parse_zone(DEFAULT_ZONE)
"""The record time zone when a push does not name one (the platform's convention)."""


class Headers(Protocol):
    """Any request's headers: a dict, Starlette's, Werkzeug's, aiohttp's (anything with
    ``items()``); names are matched without regard to case."""

    def items(self) -> Iterable[tuple[str, str]]: ...


# Errors


class ReceiverError(Exception):
    """Base of the kit's errors."""


class VerificationError(ReceiverError):
    """The push is not proven to come from ccpush: answer 401 and do not use it."""


class MissingHeaderError(VerificationError):
    """A Standard Webhooks header is absent (no signature: the app's signing is off)."""


class TimestampError(VerificationError):
    """``webhook-timestamp`` is unreadable, or too far from now (a replayed or delayed push)."""


class SignatureError(VerificationError):
    """No signature in ``webhook-signature`` matches the body with any of the secrets."""


class InvalidPushError(ReceiverError, ValueError):
    """The body or the ccpush headers are not those of a call record push."""


class ReconciliationError(ReceiverError):
    """The reconciliation query failed (an HTTP error, or an answer that is not a page)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# Verifying


def _lowered(headers: Headers) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _secret_key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"a signing secret is {SECRET_PREFIX} followed by base64") from None


def _expected_signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Verifier:
    """Checks that a push comes from ccpush: its signature, and that it is recent.

    ``secrets`` are the app's ``whsec_...`` secrets: give the old and the new one while you
    rotate. ``now`` (an aware datetime) is injectable for tests."""

    def __init__(
        self,
        secrets: str | Iterable[str],
        *,
        tolerance: timedelta = DEFAULT_TOLERANCE,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        given = [secrets] if isinstance(secrets, str) else list(secrets)
        if not given:
            raise ValueError("a Verifier needs at least one signing secret")
        self._keys = [_secret_key(secret) for secret in given]
        self.tolerance = tolerance
        self._now = now

    def verify(self, body: bytes | str, headers: Headers) -> None:
        """Return if the push is genuine; else raise a ``VerificationError``."""
        raw = body.encode() if isinstance(body, str) else bytes(body)
        found = _lowered(headers)
        msg_id, timestamp, signatures = (
            _required(found, name) for name in (WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE)
        )
        self._check_timestamp(timestamp)
        offered = [
            s.removeprefix(SIGNATURE_SCHEME).encode()
            for s in signatures.split()
            if s.startswith(SIGNATURE_SCHEME)
        ]
        for key in self._keys:
            expected = _expected_signature(key, msg_id, timestamp, raw)
            if any(hmac.compare_digest(expected, candidate) for candidate in offered):
                return
        raise SignatureError("no signature matches the body with the given secret(s)")

    def _check_timestamp(self, text: str) -> None:
        try:
            sent = datetime.fromtimestamp(int(text), UTC)
        except (ValueError, OverflowError, OSError):
            raise TimestampError(f"{WEBHOOK_TIMESTAMP} {text!r} is not unix seconds") from None
        now = self._now()
        if sent < now - self.tolerance:
            raise TimestampError(f"the push is too old: signed {now - sent} ago")
        if sent > now + self.tolerance:
            raise TimestampError(f"the push is from the future: signed {sent - now} ahead")


def _required(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        hint = " (is signing turned off for the app?)" if name == WEBHOOK_SIGNATURE else ""
        raise MissingHeaderError(f"the push has no {name} header{hint}")
    return value


# Reading the headers


parse_timezone: Final = parse_zone
"""A record time zone from ``+08:00``, ``-05:30``, ``UTC`` or an IANA name; ``ValueError``
if it is none of those."""


@dataclass(frozen=True, slots=True)
class PushInfo:
    """What ccpush's headers say about a push."""

    webhook_id: str
    """The same on every attempt of one delivery: the key to recognise a repeat."""
    sequence: int | None
    """The app's number for this record version (1, 2, 3... without holes); None on a test."""
    version: int
    """1 for a new record, 2, 3... for later changes of the same callSessionId."""
    attempt: int
    """1 to 4: the first push, then the retries at +30, +60, +90 minutes."""
    is_test: bool
    """A test push from the console or the API: a sample, not a record of yours."""
    timezone: tzinfo
    """The zone of the record's ``yyyy-MM-dd HH:mm:ss`` times."""
    timezone_name: str
    timestamp: datetime | None
    """When this attempt was signed (``webhook-timestamp``), if it says."""


def read_push_info(headers: Headers) -> PushInfo:
    """The ccpush headers of a push; ``InvalidPushError`` if one is missing or malformed."""
    found = _lowered(headers)
    is_test = found.get(TEST, "").strip().lower() == "true"
    zone_name = found.get(RECORD_TIMEZONE, "").strip() or DEFAULT_ZONE
    try:
        zone = parse_zone(zone_name)
    except ValueError as exc:
        raise InvalidPushError(f"{RECORD_TIMEZONE}: {exc}") from None
    webhook_id = found.get(WEBHOOK_ID, "").strip()
    if not webhook_id:
        raise InvalidPushError(f"the push has no {WEBHOOK_ID} header")
    return PushInfo(
        webhook_id=webhook_id,
        sequence=None if is_test else _header_int(found, SEQUENCE),
        version=_header_int(found, RECORD_VERSION, default=1),
        attempt=_header_int(found, ATTEMPT, default=1),
        is_test=is_test,
        timezone=zone,
        timezone_name=zone_name,
        timestamp=_header_time(found.get(WEBHOOK_TIMESTAMP)),
    )


def _header_int(headers: Mapping[str, str], name: str, default: int | None = None) -> int:
    text = headers.get(name)
    if text is None and default is not None:
        return default
    if text is None or not text.strip().isdigit() or int(text) < 1:
        raise InvalidPushError(f"{name} must be a positive integer, not {text!r}")
    return int(text)


def _header_time(text: str | None) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(text), UTC) if text else None
    except (ValueError, OverflowError, OSError):
        return None


# Reading the record


@dataclass(frozen=True, slots=True)
class ReceivedRecord:
    """One call record as a receiver reads it (from a push or the reconciliation query): the
    contract's 23 fields in its order, in Python types.

    Enum fields hold the enum member for a documented value and the plain int otherwise
    (a call center may add a hang-up reason; treat what you do not know as "other").
    Times are the pushed ``yyyy-MM-dd HH:mm:ss`` strings; ``call_start_at``, ``answer_at``
    and ``call_end_at`` are the same times as aware datetimes in ``timezone``."""

    call_id: str | None
    call_session_id: str
    called: str | None
    called_info: str | None
    caller: str | None
    ccode: str | None
    ccode_name: str | None
    agent_name: str | None
    agent_group_name: str | None
    agent_account: str | None
    call_duration: int
    call_type: CallType | int
    hangup_code: str | None
    hangup_reason: HangupReason | int | None
    hanging_direction: HangingDirection | int | None
    labels: tuple[str, ...]
    base_cost: Decimal | None
    cost: Decimal | None
    remark: str | None
    call_start_time: str
    answer_time: str | None
    call_end_time: str
    voice_url: str | None
    timezone: tzinfo = field(default=DEFAULT_TIMEZONE, compare=False)

    @property
    def call_start_at(self) -> datetime:
        return self._aware(self.call_start_time)

    @property
    def answer_at(self) -> datetime | None:
        return None if self.answer_time is None else self._aware(self.answer_time)

    @property
    def call_end_at(self) -> datetime:
        return self._aware(self.call_end_time)

    def _aware(self, text: str) -> datetime:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=self.timezone)


CallRecord = ReceivedRecord
"""``ReceivedRecord`` by its first name, which code written for the kit may use (the
server's ``ccpush.record.CallRecord`` is another class: the contract validated at
ingestion)."""


CONTRACT_FIELDS: Final = {
    "callId": "call_id",
    "callSessionId": "call_session_id",
    "called": "called",
    "calledInfo": "called_info",
    "caller": "caller",
    "ccode": "ccode",
    "ccodeName": "ccode_name",
    "agentName": "agent_name",
    "agentGroupName": "agent_group_name",
    "agentAccount": "agent_account",
    "callDuration": "call_duration",
    "callType": "call_type",
    "hangupCode": "hangup_code",
    "hangupReason": "hangup_reason",
    "hangingDirection": "hanging_direction",
    "labels": "labels",
    "baseCost": "base_cost",
    "cost": "cost",
    "remark": "remark",
    "callStartTime": "call_start_time",
    "answerTime": "answer_time",
    "callEndTime": "call_end_time",
    "voiceUrl": "voice_url",
}
"""The contract's field names, in its order, and the ``ReceivedRecord`` attribute of each."""

_TEXT: Final = (
    "callId", "called", "calledInfo", "caller", "ccode", "ccodeName", "agentName",
    "agentGroupName", "agentAccount", "hangupCode", "remark", "voiceUrl",
)  # fmt: skip
_ENUMS: Final[dict[str, type[IntEnum]]] = {
    "callType": CallType,
    "hangupReason": HangupReason,
    "hangingDirection": HangingDirection,
}


def parse_record(
    body: bytes | str | Mapping[str, Any], zone: tzinfo = DEFAULT_TIMEZONE
) -> ReceivedRecord:
    """A ``ReceivedRecord`` from a push body (or its decoded JSON); ``InvalidPushError`` if
    it is not one. Fields outside the contract are ignored; an absent optional field reads
    as null, absent ``labels`` as ``()``."""
    data = _json_object(body)
    values: dict[str, Any] = {CONTRACT_FIELDS[name]: _text(data, name) for name in _TEXT}
    values.update(
        call_session_id=_text(data, "callSessionId", required=True),
        call_duration=_integer(data, "callDuration", required=True),
        call_type=_code(data, "callType", required=True),
        hangup_reason=_code(data, "hangupReason"),
        hanging_direction=_code(data, "hangingDirection"),
        labels=_labels(data),
        base_cost=_money(data, "baseCost"),
        cost=_money(data, "cost"),
        call_start_time=_time(data, "callStartTime", required=True),
        answer_time=_time(data, "answerTime"),
        call_end_time=_time(data, "callEndTime", required=True),
    )
    return ReceivedRecord(**values, timezone=zone)


def _json_object(body: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(body, Mapping):
        return body
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidPushError(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidPushError("the body is not a JSON object")
    return data


def _value(data: Mapping[str, Any], name: str, required: bool) -> Any:
    value = data.get(name)
    if value is None and required:
        raise InvalidPushError(f"{name} is required")
    return value


def _text(data: Mapping[str, Any], name: str, required: bool = False) -> Any:
    value = _value(data, name, required)
    if value is not None and not isinstance(value, str):
        raise InvalidPushError(f"{name} must be a string or null")
    return value


def _integer(data: Mapping[str, Any], name: str, required: bool = False) -> int | None:
    value = _value(data, name, required)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidPushError(f"{name} must be an integer or null")
    return value


def _code(data: Mapping[str, Any], name: str, required: bool = False) -> IntEnum | int | None:
    value = _integer(data, name, required)
    if value is None:
        return None
    kind = _ENUMS[name]
    return kind(value) if value in kind._value2member_map_ else value


def _money(data: Mapping[str, Any], name: str) -> Decimal | None:
    value = _text(data, name)
    try:
        return None if value is None else Decimal(value)
    except InvalidOperation:
        raise InvalidPushError(f"{name} must be a decimal string, not {value!r}") from None


def _time(data: Mapping[str, Any], name: str, required: bool = False) -> Any:
    value = _text(data, name, required)
    try:
        if value is not None:
            datetime.strptime(value, TIME_FORMAT)
    except ValueError:
        raise InvalidPushError(f"{name} must be yyyy-MM-dd HH:mm:ss, not {value!r}") from None
    return value


def _labels(data: Mapping[str, Any]) -> tuple[str, ...]:
    value = data.get("labels") or []
    if not isinstance(value, list) or not all(isinstance(label, str) for label in value):
        raise InvalidPushError("labels must be an array of strings")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class Push:
    """A push read: what its headers say, and its record."""

    info: PushInfo
    record: ReceivedRecord


def parse_push(body: bytes | str, headers: Headers) -> Push:
    """Read a push (verify it first); ``InvalidPushError`` if it is not a call record push."""
    info = read_push_info(headers)
    return Push(info=info, record=parse_record(body, info.timezone))


# Recognising repeats


class IdempotencyStore(Protocol):
    """Where handled ``webhook-id`` values are remembered: memory here, or Redis
    (``SET id 1 NX EX 604800`` / ``DEL id``), or SQL (insert into a table with a unique key,
    delete on failure). Keep ids for at least 2 hours: the last retry is 90 minutes in."""

    def claim(self, webhook_id: str) -> bool:
        """Remember the id; True if it was not remembered already (atomically)."""
        ...

    def release(self, webhook_id: str) -> None:
        """Forget the id: handling it failed, so its retry must be handled."""
        ...


class MemoryIdempotencyStore:
    """The most recent ``max_ids`` webhook ids, in memory (least recently seen dropped first);
    safe to share between threads. Good for one process; lost on restart."""

    def __init__(self, max_ids: int = 100_000) -> None:
        if max_ids < 1:
            raise ValueError("max_ids must be at least 1")
        self.max_ids = max_ids
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, webhook_id: str) -> bool:
        with self._lock:
            if webhook_id in self._ids:
                self._ids.move_to_end(webhook_id)
                return False
            self._ids[webhook_id] = None
            if len(self._ids) > self.max_ids:
                self._ids.popitem(last=False)
            return True

    def release(self, webhook_id: str) -> None:
        with self._lock:
            self._ids.pop(webhook_id, None)

    def __len__(self) -> int:
        return len(self._ids)


@contextmanager
def first_delivery(store: IdempotencyStore, webhook_id: str) -> Iterator[bool]:
    """Whether this delivery is new. The id stays claimed unless the block raises, so a push
    whose handling failed (and was not answered 2xx) is handled when it comes again."""
    first = store.claim(webhook_id)
    try:
        yield first
    except BaseException:
        if first:
            store.release(webhook_id)
        raise


# Finding what did not arrive


class Gap(NamedTuple):
    """Sequence numbers ``first`` to ``last`` (included) not received."""

    first: int
    last: int

    def __str__(self) -> str:
        if self.first == self.last:
            return str(self.first)
        return f"{self.first}–{self.last}"  # noqa: RUF001 - an en dash, meant


@dataclass(frozen=True, slots=True)
class Arrival:
    """What one sequence number changed."""

    sequence: int
    new: bool
    """False for a number already received (or below where tracking started)."""
    opened: Gap | None = None
    """The numbers this arrival showed to be missing (it came after them)."""
    filled: Gap | None = None
    """The missing range this number belonged to (it came late)."""


class GapTracker:
    """Reports the sequence numbers of one app that have not arrived.

    Numbers may arrive in any order and more than once. ``received_through`` is where
    tracking starts: 0 expects 1 first (a receiver there from the app's start); the value
    you kept from ``received_through`` before a restart; or None to start at the first
    number added (numbers below it are then ignored)."""

    def __init__(self, received_through: int | None = 0) -> None:
        self._through = received_through
        self._highest = received_through or 0
        self._ahead: set[int] = set()
        self._lock = threading.Lock()

    @property
    def received_through(self) -> int | None:
        """Every number up to this one has arrived (None: nothing added yet, start unknown)."""
        return self._through

    @property
    def highest(self) -> int:
        return self._highest

    def add(self, sequence: int) -> Arrival:
        if sequence < 1:
            raise ValueError(f"sequence numbers start at 1, not {sequence}")
        with self._lock:
            if self._through is None:
                self._through = self._highest = sequence
                return Arrival(sequence, new=True)
            if sequence <= self._through or sequence in self._ahead:
                return Arrival(sequence, new=False)
            return self._record(sequence)

    def _record(self, sequence: int) -> Arrival:
        assert self._through is not None
        opened = Gap(self._highest + 1, sequence - 1) if sequence > self._highest + 1 else None
        filled = next((gap for gap in self._missing() if gap.first <= sequence <= gap.last), None)
        self._ahead.add(sequence)
        self._highest = max(self._highest, sequence)
        while self._through + 1 in self._ahead:
            self._through += 1
            self._ahead.remove(self._through)
        return Arrival(sequence, new=True, opened=opened, filled=filled)

    def missing(self) -> list[Gap]:
        """The ranges not received, lowest first."""
        with self._lock:
            return self._missing()

    def _missing(self) -> list[Gap]:
        gaps, expected = [], (self._through or 0) + 1
        for number in sorted(self._ahead):
            if number > expected:
                gaps.append(Gap(expected, number - 1))
            expected = number + 1
        return gaps


# Fetching what is missing


class MissedRecord(NamedTuple):
    sequence: int
    version: int
    record: ReceivedRecord


def fetch_missing(
    base_url: str,
    app_id: str,
    api_key: str,
    first: int,
    last: int,
    *,
    zone: tzinfo = DEFAULT_TIMEZONE,
    page_size: int = 100,
    timeout: float = 30.0,
) -> Iterator[MissedRecord]:
    """The records numbered ``first`` to ``last`` (included), from ccpush's reconciliation
    query (``GET /v1/apps/{appId}/call-records?fromSequence&toSequence``), page by page.

    ``base_url`` is ccpush's API (``https://ccpush.example.com``); ``api_key`` a key that may
    read the app's records; ``zone`` the record time zone (``PushInfo.timezone``). Raises
    ``ReconciliationError`` if the query fails."""
    if not base_url.startswith(("http://", "https://")):
        raise ValueError("base_url must be an http:// or https:// URL")
    path = f"{base_url.rstrip('/')}/v1/apps/{urllib.parse.quote(app_id, safe='')}/call-records"
    query: dict[str, str | int] = {"fromSequence": first, "toSequence": last, "limit": page_size}
    while True:
        page = _get_json(f"{path}?{urllib.parse.urlencode(query)}", api_key, timeout)
        yield from (_missed(item, zone) for item in _items(page))
        cursor = page.get("nextCursor")
        if cursor is None:
            return
        query["cursor"] = str(cursor)


def _get_json(url: str, api_key: str, timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked to be http(s)
        url, headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            page = json.load(answer)
    except urllib.error.HTTPError as exc:
        raise ReconciliationError(_error_message(exc), status=exc.code) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ReconciliationError(f"the reconciliation query failed: {exc}") from None
    if not isinstance(page, dict):
        raise ReconciliationError("the reconciliation query did not answer a page")
    return page


def _items(page: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = page.get("items")
    if not isinstance(items, list):
        raise ReconciliationError("the reconciliation query did not answer a page")
    return items


def _missed(item: Any, zone: tzinfo) -> MissedRecord:
    try:
        return MissedRecord(
            int(item["sequence"]), int(item["version"]), parse_record(item["record"], zone)
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ReconciliationError(
            f"the reconciliation query answered an unreadable item: {exc}"
        ) from None


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        message = str(json.load(error)["error"]["message"])
    except (ValueError, KeyError, TypeError, OSError):
        message = str(error.reason)
    finally:
        error.close()
    return f"the reconciliation query answered {error.code}: {message}"
