"""Settings: one typed object, read from ``CCPUSH_*`` environment variables (and CLI options).

A value given as text (an environment variable, a command-line option) is parsed once, here,
into what the code uses: a ``RetrySchedule``, ``timedelta``s, a ``tzinfo``, IP networks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta, tzinfo
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    BeforeValidator,
    Field,
    PlainValidator,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ccpush.guard import LOOPBACK_NETWORKS, IPNetwork, TargetPolicy
from ccpush.retry import RetrySchedule, parse_duration
from ccpush.senders import HttpClient
from ccpush.sources.config import SourceConfig, parse_sources
from ccpush.sources.freeswitch.mapping import check_mapping_file
from ccpush.upkeep import UpkeepSettings
from ccpush.wire import DEFAULT_ZONE, parse_zone

ENV_PREFIX: Final = "CCPUSH_"
CONTRACT_RETRY_SCHEDULE: Final = RetrySchedule.parse("30m,30m,30m")
"""The push contract's schedule: attempts at +0, +30, +60 and +90 minutes."""
NEVER: Final = "off"
"""``CCPUSH_AUTO_PAUSE_AFTER`` that never pauses."""
PLACEHOLDER_TOKENS = frozenset({"changeme", "change-me", "changethis", "secret", "admin", "token"})
MIN_TOKEN_LENGTH = 24
MIN_CONSOLE_SECRET_LENGTH = 32
WORKER_METRICS_PORT: Final = 9108
"""Where ``ccpush worker`` answers ``/healthz``, ``/readyz`` and ``/metrics`` by default."""


def env_name(field: str) -> str:
    """The environment variable of a setting: ``retry_schedule`` → ``CCPUSH_RETRY_SCHEDULE``."""
    return ENV_PREFIX + field.upper()


def _from_text(parse: Callable[[str], Any], *kinds: type | None) -> PlainValidator:
    """Parse text (from the environment or the command line); a value of ``kinds`` (already
    parsed, given in Python) is taken as it is."""
    allowed = tuple(type(None) if kind is None else kind for kind in kinds)

    def validate(value: object) -> object:
        if isinstance(value, str):
            return parse(value)
        if isinstance(value, allowed):
            return value
        raise ValueError(f"must be given as text, not as {type(value).__name__}")

    return PlainValidator(validate)


def _mapping_file(text: str) -> Path | None:
    return check_mapping_file(Path(text))


def _duration_or_never(text: str) -> timedelta | None:
    return None if text.strip().lower() == NEVER else parse_duration(text)


def _networks(value: object) -> object:
    return TargetPolicy.parse(value).allowed_networks if isinstance(value, str) else value


Duration = Annotated[timedelta, _from_text(parse_duration, timedelta)]
"""``30m``, ``90s``, ``1.5h`` (units ms, s, m, h, d)."""
DurationOrNever = Annotated[timedelta | None, _from_text(_duration_or_never, timedelta, None)]
"""A ``Duration``, or ``off`` (None)."""
Schedule = Annotated[RetrySchedule, NoDecode, _from_text(RetrySchedule.parse, RetrySchedule)]
"""``30m,30m,30m``: the delays before each retry; empty: no retries."""
Zone = Annotated[tzinfo, _from_text(parse_zone, tzinfo)]
"""``+08:00``, ``-05:30``, ``UTC`` or an IANA name such as ``Asia/Shanghai``."""
Networks = Annotated[tuple[IPNetwork, ...], NoDecode, BeforeValidator(_networks)]
"""Comma-separated CIDR networks, e.g. ``10.20.0.0/16, fd00:1::/64``."""
Sources = Annotated[tuple[SourceConfig, ...], NoDecode, _from_text(parse_sources, tuple)]
"""Message-broker URLs, comma- or space-separated (``ccpush.sources.config``)."""


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ccpush"


class Settings(BaseSettings):
    """Every setting has an environment variable: its name in capitals after ``CCPUSH_``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    """Default: ``sqlite:///<data_dir>/ccpush.db``."""
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    admin_token: SecretStr | None = None
    """If unset, generated on first start and kept in ``<data_dir>/admin-token``."""
    retry_schedule: Schedule = CONTRACT_RETRY_SCHEDULE
    push_timeout: Annotated[float, Field(gt=0, le=300)] = 15.0
    push_connect_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    concurrency: Annotated[int, Field(ge=1, le=10_000)] = 128
    per_host_concurrency: Annotated[int, Field(ge=1, le=10_000)] = 64
    http_client: HttpClient = "aiohttp"
    """What makes the pushes' HTTP requests: aiohttp, or reqwest (Rust, through pyreqwest:
    about half the CPU per push)."""
    push_processes: Annotated[int, Field(ge=0, le=64)] = 0
    """Child processes that make the pushes' HTTP requests, each host's always in the same
    one, so that pushing and the dispatcher's own work use more than one core; 0 pushes from
    the dispatcher's process."""
    lease: Duration = timedelta(seconds=60)
    rotation_overlap: Duration = timedelta(hours=24)
    """How long a rotated-out signing secret keeps signing pushes beside the new one."""
    batch_size: Annotated[int, Field(ge=1, le=5_000)] = 256
    poll_interval: Annotated[float, Field(gt=0, le=60)] = 1.0
    record_timezone: Zone = parse_zone(DEFAULT_ZONE)
    """The zone of the records' wall-clock times (announced on pushes by ``zone_label``)."""
    response_excerpt_bytes: Annotated[int, Field(ge=0, le=65_536)] = 2048
    max_body_bytes: Annotated[int, Field(ge=1024)] = 5 * 1024 * 1024
    max_batch_records: Annotated[int, Field(ge=1, le=10_000)] = 1000
    max_queued_records: Annotated[int, Field(ge=1)] = 20_000
    """Records ingestion may hold waiting for their commit; beyond, 503 ``ingestion_busy``."""
    max_request_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024
    """Largest body of a request other than ingestion (413 above)."""
    key_rate_limit: Annotated[float, Field(ge=0)] = 1000.0
    """Requests per second one token or key may make (bursts of twice that); 0: no limit."""
    auth_failure_limit: Annotated[int, Field(ge=0)] = 20
    """Failed sign-ins per minute from one client address before it is refused (429)."""
    allowed_target_networks: Networks = ()
    """Comma-separated CIDR networks pushes may reach although not global (loopback,
    private...), e.g. ``10.20.0.0/16, fd00:1::/64``. Default: none."""
    only_allowed_targets: bool = False
    """Pushes reach only ``allowed_target_networks``, global addresses included."""
    console_secret: SecretStr | None = None
    """Signs the web console's session cookies. If unset, generated on first use and kept in
    ``<data_dir>/console-secret``; set it when several ``serve`` processes share a domain."""
    console_secure_cookie: bool | None = None
    """Mark the console's cookie ``Secure``. Default: when the request came over https."""
    retention_days: Annotated[int, Field(ge=0)] = 0
    """Delete records (with their attempts) received more than this many days ago, once
    nothing waits to be pushed for them; 0 keeps them for ever."""
    auto_pause_after: DurationOrNever = timedelta(days=3)
    """Pause an app whose every push has failed for this long (its records are kept);
    ``off`` never pauses."""
    upkeep_interval: Annotated[float, Field(gt=0)] = 60.0
    """Seconds between rounds of retention and automatic pausing."""
    max_header_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 16 * 1024
    """Largest request line and header fields of a request (431 above)."""
    max_headers: Annotated[int, Field(ge=8, le=1000)] = 100
    """Most header fields in a request (431 above)."""
    header_timeout: Annotated[float, Field(gt=0, le=300)] = 10.0
    """Seconds a request's head may take to arrive, from its first byte (or from the
    connection's opening, for its first request) to its end; 408 and closed after."""
    body_timeout: Annotated[float, Field(gt=0, le=3600)] = 30.0
    """Seconds a request's body may take to arrive after its head; 408 and closed after."""
    keepalive_timeout: Annotated[int, Field(ge=1, le=3600)] = 5
    """Seconds an idle connection is kept open between two requests."""
    max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    """Connections ``serve`` keeps open at once; one more is answered 503 and closed. With
    the pushes in flight it must fit in the open-file limit (``ulimit -Hn``)."""
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    opentelemetry: bool = False
    """Let FastAPI trace the API's requests through the globally configured OpenTelemetry
    providers (as under ``opentelemetry-instrument``). Off, no request pays for the check."""
    sources: Sources = ()
    """Message brokers ``serve`` and ``worker`` consume call records from: AMQP and NATS
    JetStream URLs, each with ccpush's options in its query (README, *Sources*)."""
    freeswitch_app_variable: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = (
        "ccpush_app_id"
    )
    """The channel variable naming the app of a FreeSWITCH CDR (README, *FreeSWITCH*)."""
    freeswitch_timezone: Annotated[tzinfo | None, _from_text(parse_zone, tzinfo, None)] = None
    """The zone of FreeSWITCH's local times (``start_stamp``...), read only when a CDR has no
    epoch times; default: ``record_timezone``."""
    freeswitch_recording_base_url: Annotated[str | None, Field(pattern=r"^https?://\S+$")] = None
    """The URL a recording's file name is appended to, to make a FreeSWITCH CDR's
    ``voiceUrl``."""
    freeswitch_mapping: Annotated[Path | None, _from_text(_mapping_file, Path, None)] = None
    """A TOML file changing the default mapping of FreeSWITCH CDRs to records."""
    metrics_host: str = "127.0.0.1"
    """Where ``worker`` (and ``serve``, given ``metrics_port``) answers ``/healthz``,
    ``/readyz`` and ``/metrics``."""
    metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    """The port of those; default: ``WORKER_METRICS_PORT`` for ``worker``, none for ``serve``
    (which answers them on its API port, and on this port too when it is set)."""
    dev: bool = False
    """Development mode (``ccpush serve --dev``): pushes may also reach this machine's
    loopback addresses (127.0.0.0/8, ::1), to test with a local receiver. Never in production."""
    ca_bundle: Path | None = None
    """A PEM file of certificate authorities that pushes trust besides the system's, for
    receivers whose certificates a private CA signed."""
    shutdown_grace: Annotated[float, Field(ge=0, le=300)] = 5.0
    """Seconds a stopping worker lets its pushes in flight end; then it gives up on them and
    gives their deliveries back, to be pushed again (a repeat at most, never a loss)."""

    @field_validator("console_secret")
    @classmethod
    def _console_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_CONSOLE_SECRET_LENGTH:
            raise ValueError(f"must be at least {MIN_CONSOLE_SECRET_LENGTH} characters")
        return value

    @field_validator("admin_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_admin_token(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _lease_outlasts_push(self) -> Self:
        if self.lease.total_seconds() <= self.push_timeout:
            raise ValueError(
                f"{env_name('lease')} ({self.lease.total_seconds():g}s) must be longer than"
                f" {env_name('push_timeout')} ({self.push_timeout:g}s),"
                " or a slow push would be claimed twice"
            )
        return self

    @property
    def upkeep(self) -> UpkeepSettings:
        return UpkeepSettings(
            retention=timedelta(days=self.retention_days) if self.retention_days else None,
            auto_pause_after=self.auto_pause_after,
            interval=self.upkeep_interval,
        )

    @property
    def target_policy(self) -> TargetPolicy:
        """What pushes may reach: global addresses, ``allowed_target_networks``, and
        loopback in development mode."""
        loopback = LOOPBACK_NETWORKS if self.dev else ()
        return TargetPolicy(self.allowed_target_networks + loopback, self.only_allowed_targets)

    @property
    def admin_token_path(self) -> Path:
        """Where the generated admin token is kept (mode 0600), when none is set."""
        return Path(self.data_dir) / "admin-token"

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'ccpush.db'}"


def check_admin_token(token: str) -> None:
    """Refuse tokens that are short or well-known placeholders."""
    if token.strip().lower() in PLACEHOLDER_TOKENS:
        raise ValueError("the admin token is a placeholder value; set a random one")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"the admin token must be at least {MIN_TOKEN_LENGTH} characters")
