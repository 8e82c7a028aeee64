"""Broker sources as ``CCPUSH_SOURCES`` names them: one URL each, ccpush's options in its
query (README, *Sources*). Pure: reading a URL connects to nothing, so settings are
checked at start-up, and a broker's client library is imported only by a source that
uses it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, Literal, TypedDict, get_args
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

SourceKind = Literal["amqp", "nats"]
RecordFormat = Literal["record", "freeswitch"]

SCHEMES: Final[dict[str, SourceKind]] = {
    "amqp": "amqp",
    "amqps": "amqp",
    "nats": "nats",
    "tls": "nats",
}
DEFAULT_DURABLE: Final = "ccpush"
DEFAULT_PREFETCH: Final = 256
DEFAULT_ACK_WAIT: Final = 30.0
MAX_PREFETCH: Final = 10_000
DEAD_SUFFIX: Final = ".dead"
"""AMQP: the dead-letter exchange and queue are ``<queue>.dead`` unless named."""
NATS_DEAD_PREFIX: Final = "dead."
"""NATS: the dead-letter subject is ``dead.<stream>`` unless named."""
HIDDEN: Final = "***"

COMMON_OPTIONS: Final = frozenset({"format", "app", "prefetch", "durable"})
AMQP_OPTIONS: Final = frozenset({"queue", "dlx", "dlq"})
AMQP_CONNECTION_OPTIONS: Final = frozenset(
    {"heartbeat", "name", "timeout", "auth", "cafile", "capath", "cadata", "keyfile", "certfile"}
    | {"no_verify_ssl"}
)
"""Query parameters the AMQP client reads itself: passed on with the connection URL."""
NATS_OPTIONS: Final = frozenset({"stream", "subject", "dlq", "ack_wait"})

FORMATS: Final[dict[str, RecordFormat]] = {name: name for name in get_args(RecordFormat)}
_NAME_FORBIDDEN = re.compile(r"[\s.*>/\\]")
_SPLIT = re.compile(r"[\s,]+")


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceConfig:
    """One broker source."""

    kind: SourceKind
    name: str
    """The URL as configured with its password (a NATS token too) hidden: names the source
    in logs and in the metrics' ``source`` label."""
    connect_url: str = field(repr=False)
    """What the client connects to, credentials included: ccpush's options taken out."""
    queue: str
    """The AMQP queue, or the NATS stream, consumed."""
    subject: str | None = None
    """NATS: the consumer's filter subject (None: the whole stream)."""
    durable: str = DEFAULT_DURABLE
    """NATS: the durable consumer's name; AMQP: the consumer tag."""
    format: RecordFormat = "record"
    app_id: str | None = None
    """The app of a message without a ``ccpush-app-id`` header."""
    prefetch: int = DEFAULT_PREFETCH
    """Messages held unacknowledged at most, and the largest batch stored in one go."""
    dead_exchange: str = ""
    """AMQP: where invalid messages are published (declared fanout if missing)."""
    dead_letter: str = ""
    """AMQP: the queue bound to ``dead_exchange``; NATS: the subject invalid messages are
    published to (a stream ``<stream>_DEAD`` is made to keep it if none does)."""
    ack_wait: float = DEFAULT_ACK_WAIT
    """NATS: seconds before the server delivers again a message not acknowledged (one
    ccpush holds is kept in progress meanwhile): how soon a dead process's messages return."""


def parse_sources(text: str) -> tuple[SourceConfig, ...]:
    """The sources of a comma- or space-separated list of URLs; ``ValueError`` naming the
    source (its password hidden) and what is wrong."""
    sources = tuple(parse_source(url) for url in _SPLIT.split(text.strip()) if url)
    names = [source.name for source in sources]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"source {name}: configured twice")
    return sources


def parse_source(url: str) -> SourceConfig:
    parts = urlsplit(url)
    name = redact(url)
    kind = SCHEMES.get(parts.scheme.lower())
    if kind is None:
        schemes = ", ".join(f"{scheme}://" for scheme in SCHEMES)
        raise ValueError(f"source {name}: the scheme must be one of {schemes}")
    try:
        options = _options(parts.query)
        if kind == "amqp":
            return _amqp(name, parts, options)
        return _nats(name, parts, options)
    except ValueError as exc:
        raise ValueError(f"source {name}: {exc}") from None


def redact(url: str) -> str:
    """``url`` with its password hidden, and a NATS token (a user without password) too."""
    parts = urlsplit(url)
    if parts.password is None and not (parts.username and parts.scheme in ("nats", "tls")):
        return url
    user = HIDDEN if parts.password is None else f"{parts.username}:{HIDDEN}"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether the NATS subject filter ``pattern`` (``*`` one token, ``>`` the rest) takes
    in the subject ``subject`` (without wildcards)."""
    wanted, given = pattern.split("."), subject.split(".")
    for index, part in enumerate(wanted):
        if part == ">":
            return len(given) > index
        if index >= len(given) or part not in ("*", given[index]):
            return False
    return len(wanted) == len(given)


def _options(query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in options:
            raise ValueError(f"the option {key!r} is given twice")
        options[key] = value
    return options


class _Common(TypedDict):
    format: RecordFormat
    app_id: str | None
    prefetch: int
    durable: str


def _common(options: dict[str, str], allowed: frozenset[str]) -> _Common:
    unknown = sorted(set(options) - COMMON_OPTIONS - allowed)
    if unknown:
        known = ", ".join(sorted(COMMON_OPTIONS | allowed))
        raise ValueError(f"unknown option {unknown[0]!r} (options: {known})")
    record_format = options.get("format", "record")
    if record_format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    app_id = options.get("app") or None
    if app_id is not None and not app_id.isprintable():
        raise ValueError("app must be an app id, without control characters")
    return {
        "format": FORMATS[record_format],
        "app_id": app_id,
        "prefetch": _prefetch(options.get("prefetch")),
        "durable": _name(options.get("durable", DEFAULT_DURABLE), "durable"),
    }


def _prefetch(text: str | None) -> int:
    if text is None:
        return DEFAULT_PREFETCH
    if not text.isdigit() or not 1 <= int(text) <= MAX_PREFETCH:
        raise ValueError(f"prefetch must be a whole number from 1 to {MAX_PREFETCH}")
    return int(text)


def _seconds(text: str | None, option: str, default: float) -> float:
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 1 <= value <= 3600:
        raise ValueError(f"{option} must be a number of seconds from 1 to 3600")
    return value


def _name(value: str, option: str) -> str:
    if not value or _NAME_FORBIDDEN.search(value) or not value.isprintable():
        raise ValueError(f"{option} must be a name without spaces, '.', '*', '>', '/' or '\\'")
    return value


def _amqp(name: str, parts: SplitResult, options: dict[str, str]) -> SourceConfig:
    passed = {key: options.pop(key) for key in list(options) if key in AMQP_CONNECTION_OPTIONS}
    common = _common(options, AMQP_OPTIONS)
    queue = options.get("queue", "")
    if not queue or len(queue.encode()) > 255 or not queue.isprintable():
        raise ValueError("queue=<name> is required: the AMQP queue to consume (255 bytes at most)")
    return SourceConfig(
        kind="amqp",
        name=name,
        connect_url=urlunsplit(parts._replace(query=urlencode(passed), fragment="")),
        queue=queue,
        dead_exchange=options.get("dlx") or queue + DEAD_SUFFIX,
        dead_letter=options.get("dlq") or queue + DEAD_SUFFIX,
        **common,
    )


def _nats(name: str, parts: SplitResult, options: dict[str, str]) -> SourceConfig:
    common = _common(options, NATS_OPTIONS)
    if "stream" not in options:
        raise ValueError("stream=<name> is required: the JetStream stream to consume")
    stream = _name(options["stream"], "stream")
    subject = _subject(options["subject"], "subject") if "subject" in options else None
    dead = _subject(options.get("dlq") or NATS_DEAD_PREFIX + stream, "dlq")
    if "*" in dead or ">" in dead:
        raise ValueError("dlq must be a subject without wildcards")
    if subject is not None and subject_matches(subject, dead):
        raise ValueError(f"dlq {dead!r} is within subject {subject!r}: dead letters would return")
    return SourceConfig(
        kind="nats",
        name=name,
        connect_url=urlunsplit(parts._replace(path="", query="", fragment="")),
        queue=stream,
        subject=subject,
        dead_letter=dead,
        ack_wait=_seconds(options.get("ack_wait"), "ack_wait", DEFAULT_ACK_WAIT),
        **common,
    )


def _subject(value: str, option: str) -> str:
    tokens = value.split(".")
    if (
        not value.isprintable()
        or any(not token or any(ch.isspace() for ch in token) for token in tokens)
        or ">" in tokens[:-1]
        or any(token not in ("*", ">") and ("*" in token or ">" in token) for token in tokens)
    ):
        raise ValueError(f"{option} must be a NATS subject such as cdr.> (got {value!r})")
    return value
