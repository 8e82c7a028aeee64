"""Settings: one typed object, read from ``CCPUSH_*`` environment variables (and CLI options)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ccpush.guard import TargetPolicy
from ccpush.record import parse_zone
from ccpush.retry import RetrySchedule, parse_duration
from ccpush.sender import HttpClient
from ccpush.upkeep import UpkeepSettings

PLACEHOLDER_TOKENS = frozenset({"changeme", "change-me", "changethis", "secret", "admin", "token"})
MIN_TOKEN_LENGTH = 24
MIN_CONSOLE_SECRET_LENGTH = 32


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ccpush"


class Settings(BaseSettings):
    """Every setting has an environment variable: its name in capitals after ``CCPUSH_``."""

    model_config = SettingsConfigDict(env_prefix="CCPUSH_", frozen=True, extra="forbid")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    """Default: ``sqlite:///<data_dir>/ccpush.db``."""
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    admin_token: SecretStr | None = None
    """If unset, generated on first start and kept in ``<data_dir>/admin-token``."""
    retry_schedule: str = "30m,30m,30m"
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
    lease: str = "60s"
    rotation_overlap: str = "24h"
    """How long a rotated-out signing secret keeps signing pushes beside the new one."""
    batch_size: Annotated[int, Field(ge=1, le=5_000)] = 256
    poll_interval: Annotated[float, Field(gt=0, le=60)] = 1.0
    record_timezone: str = "+08:00"
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
    allowed_target_networks: str = ""
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
    auto_pause_after: str = "3d"
    """Pause an app whose every push has failed for this long (its records are kept);
    ``off`` never pauses."""
    upkeep_interval: Annotated[float, Field(gt=0)] = 60.0
    """Seconds between rounds of retention and automatic pausing."""
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    opentelemetry: bool = False
    """Let FastAPI trace the API's requests through the globally configured OpenTelemetry
    providers (as under ``opentelemetry-instrument``). Off, no request pays for the check."""

    @field_validator("retry_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        RetrySchedule.parse(value)
        return value

    @field_validator("auto_pause_after")
    @classmethod
    def _auto_pause(cls, value: str) -> str:
        if value.strip().lower() != "off":
            parse_duration(value)
        return value

    @field_validator("lease", "rotation_overlap")
    @classmethod
    def _lease(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("record_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        parse_zone(value)
        return value

    @field_validator("allowed_target_networks")
    @classmethod
    def _target_networks(cls, value: str) -> str:
        TargetPolicy.parse(value)
        return value

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
        if self.lease_delta.total_seconds() <= self.push_timeout:
            raise ValueError(
                f"lease ({self.lease}) must be longer than push_timeout ({self.push_timeout}s),"
                " or a slow push would be claimed twice"
            )
        return self

    @property
    def schedule(self) -> RetrySchedule:
        return RetrySchedule.parse(self.retry_schedule)

    @property
    def lease_delta(self) -> timedelta:
        return parse_duration(self.lease)

    @property
    def upkeep(self) -> UpkeepSettings:
        after = self.auto_pause_after.strip().lower()
        return UpkeepSettings(
            retention=timedelta(days=self.retention_days) if self.retention_days else None,
            auto_pause_after=None if after == "off" else parse_duration(after),
            interval=self.upkeep_interval,
        )

    @property
    def rotation_overlap_delta(self) -> timedelta:
        return parse_duration(self.rotation_overlap)

    @property
    def target_policy(self) -> TargetPolicy:
        """What pushes may reach: global addresses, and ``allowed_target_networks``."""
        return TargetPolicy.parse(
            self.allowed_target_networks, only_allowed=self.only_allowed_targets
        )

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'ccpush.db'}"


def check_admin_token(token: str) -> None:
    """Refuse tokens that are short or well-known placeholders."""
    if token.strip().lower() in PLACEHOLDER_TOKENS:
        raise ValueError("the admin token is a placeholder value; set a random one")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"the admin token must be at least {MIN_TOKEN_LENGTH} characters")
