"""Settings: one typed object, read from ``CCPUSH_*`` environment variables (and CLI options).

A value given as text (an environment variable, a command-line option) is parsed once, here,
into what the code uses: a ``RetrySchedule``, ``timedelta``s, a ``tzinfo``, IP networks.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import ssl
from collections.abc import Callable
from datetime import timedelta, tzinfo
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainValidator,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ccpush.guard import LOOPBACK_NETWORKS, IPNetwork, TargetPolicy
from ccpush.notifications.mail import SmtpServer, check_email
from ccpush.notifications.runner import NotifySettings
from ccpush.retry import RetrySchedule, parse_duration
from ccpush.secret_box import parse_keys
from ccpush.senders import HttpClient
from ccpush.senders.egress import PushProxy
from ccpush.sources.config import SourceConfig, parse_sources
from ccpush.sources.freeswitch.mapping import check_mapping_file
from ccpush.upkeep import UpkeepSettings
from ccpush.wire import DEFAULT_ZONE, SECRET_PREFIX, parse_zone

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


NO_FRAMES: Final = "'none'"
"""``CCPUSH_CONSOLE_FRAME_ANCESTORS`` that lets no page show the console in a frame."""
_FRAME_SOURCE: Final = re.compile(
    r"'self'|https?:|https?://(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:(\d{1,5}|\*))?"
)


def _frame_ancestors(text: str) -> str:
    """CSP ``frame-ancestors`` sources, space-separated: origins (``https://a.example``,
    ``https://*.example.com:8443``), schemes (``https:``) and ``'self'``; or ``'none'``."""
    sources = text.replace(",", " ").split()
    if sources == [NO_FRAMES]:
        return NO_FRAMES
    if not sources:
        raise ValueError(f"name the sites that may frame the console, or {NO_FRAMES}")
    for source in sources:
        if not _FRAME_SOURCE.fullmatch(source):
            raise ValueError(
                f"{source!r} is not a frame-ancestors source (an origin such as"
                " https://portal.example.com, a scheme such as https:, or 'self')"
            )
    return " ".join(sources)


FrameAncestors = Annotated[str, AfterValidator(_frame_ancestors)]
"""``https://portal.example.com https://*.example.net``, or ``'none'``."""
ProductName = Annotated[str, Field(min_length=1, max_length=60, pattern=r"^[^\x00-\x1f\x7f]+$")]
_LOGO_URL: Final = re.compile(r"https://[A-Za-z0-9.-]+(:\d{1,5})?(/[^\s\"'<>;,\\]*)?")
_ACCENT: Final = re.compile(r"#[0-9a-fA-F]{6}")


def _matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


LogoUrl = Annotated[
    str,
    Field(max_length=2048),
    _matching(
        _LOGO_URL, "an https:// URL of a host name, such as https://cdn.example.com/logo.svg"
    ),
]
"""An https URL of a host name (the console's pages may load images from its origin)."""
Accent = Annotated[str, _matching(_ACCENT, "a colour written #rrggbb, such as #0a7f5a")]
"""A colour, ``#rrggbb``."""


def _https_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname or any(c.isspace() for c in value):
        raise ValueError("must be an https:// URL, as in https://ops.example.com/ccpush")
    return value


def check_signing_secret(value: str) -> str:
    """A Standard Webhooks secret: ``whsec_`` and base64 of 24 to 64 bytes."""
    try:
        key = base64.b64decode(value.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        key = b""
    if not value.startswith(SECRET_PREFIX) or not 24 <= len(key) <= 64:
        raise ValueError(f"must be {SECRET_PREFIX} and base64 of 24 to 64 random bytes")
    return value


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ccpush"


class Settings(BaseSettings):
    """Every setting has an environment variable: its name in capitals after ``CCPUSH_``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,  # a refused value may hold a secret (CCPUSH_PUSH_PROXY's)
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    """Default: ``sqlite:///<data_dir>/ccpush.db``."""
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    admin_token: SecretStr | None = None
    """If unset, generated on first start and kept in ``<data_dir>/admin-token``."""
    secret_key: SecretStr | None = None
    """Comma-separated Fernet keys that seal the secrets the store keeps (the first seals, all
    open). If unset, generated on first start and kept in ``<data_dir>/secret-key``."""
    retry_schedule: Schedule = CONTRACT_RETRY_SCHEDULE
    push_timeout: Annotated[float, Field(gt=0, le=300)] = 15.0
    push_connect_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    concurrency: Annotated[int, Field(ge=1, le=10_000)] = 128
    """Pushes in flight at once. Not set, ``serve`` and ``worker`` derive it from the
    open-file limit (``ccpush.capacity``); 128 is what a ``Service`` made in code gets."""
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
    console_frame_ancestors: FrameAncestors = NO_FRAMES
    """Who may show the console in a frame (the CSP ``frame-ancestors`` sources), e.g.
    ``https://portal.example.com``; ``'none'``: nobody. Set, the console's cookie is
    ``SameSite=None; Secure; Partitioned``, so that it works in another site's frame."""
    console_product_name: ProductName | None = None
    """The name in the console's title and top bar instead of ccpush's."""
    console_logo_url: LogoUrl | None = None
    """An https URL of the logo shown in the console's top bar instead of ccpush's."""
    console_accent: Accent | None = None
    """The console's accent colour, ``#rrggbb``."""
    retention_days: Annotated[int, Field(ge=0)] = 0
    """Delete records (with their attempts) received more than this many days ago, once
    nothing waits to be pushed for them; 0 keeps them for ever."""
    auto_pause_after: DurationOrNever = timedelta(days=3)
    """Pause an app whose every push has failed for this long (its records are kept);
    ``off`` never pauses."""
    upkeep_interval: Annotated[float, Field(gt=0)] = 60.0
    """Seconds between rounds of retention and automatic pausing."""
    public_url: Annotated[str | None, Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")] = None
    """Where the console is reached (``https://push.example.com``), for the links in
    notifications; default: ``http://<host>:<port>``."""
    notify_failing_after: Duration = timedelta(minutes=15)
    """Tell ``app.failing`` when every push to an app's address has failed this long."""
    notify_url: Annotated[str, AfterValidator(_https_url)] | None = None
    """The operator's HTTPS address told of every account's events (signed with
    ``notify_secret``)."""
    notify_email: Annotated[str, AfterValidator(check_email)] | None = None
    """The operator's e-mail address told of every account's events."""
    notify_secret: SecretStr | None = None
    """The ``whsec_...`` secret the operator's notifications are signed with."""
    notify_interval: Annotated[float, Field(gt=0)] = 30.0
    """Seconds between rounds of finding and sending notifications."""
    smtp_url: SecretStr | None = None
    """The SMTP server notifications are e-mailed through:
    ``smtp://user:password@host:587?starttls=true``, or ``smtps://`` for TLS from the start."""
    smtp_from: Annotated[str, AfterValidator(check_email)] | None = None
    """The From address of notification e-mails."""
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
    ca_bundle_only: bool = False
    """Pushes trust ``ca_bundle`` instead of the system's CAs, not besides them."""
    client_cert: Path | None = None
    """A PEM file of the client certificate (and its chain) pushes present to receivers
    that ask for one (mutual TLS), unless an app has its own; with ``client_key``."""
    client_key: Path | None = None
    """The PEM file of ``client_cert``'s key (unencrypted)."""
    push_proxy: SecretStr | None = None
    """A forward proxy every push goes through (``http://`` or ``https://``, optionally with
    ``user:password@``), CONNECT for https; the target guard still checks the receiver's
    address first, and the proxy is asked for that address."""
    shutdown_grace: Annotated[float, Field(ge=0, le=300)] = 5.0
    """Seconds a stopping worker lets its pushes in flight end; then it gives up on them and
    gives their deliveries back, to be pushed again (a repeat at most, never a loss)."""

    @field_validator("console_secret")
    @classmethod
    def _console_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_CONSOLE_SECRET_LENGTH:
            raise ValueError(f"must be at least {MIN_CONSOLE_SECRET_LENGTH} characters")
        return value

    @field_validator("secret_key")
    @classmethod
    def _secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_keys(value.get_secret_value())
        return value

    @field_validator("push_proxy")
    @classmethod
    def _push_proxy(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            PushProxy.parse(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _push_tls(self) -> Self:
        if self.ca_bundle_only and self.ca_bundle is None:
            raise ValueError(f"{env_name('ca_bundle_only')} needs {env_name('ca_bundle')}")
        if self.ca_bundle_only and self.http_client == "reqwest" and not self.push_processes:
            raise ValueError(
                f"{env_name('ca_bundle_only')} with {env_name('http_client')}=reqwest needs"
                f" {env_name('push_processes')} of 1 or more (reqwest reads its trusted CAs"
                " from the process's environment, which a push process is given)"
            )
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError(
                f"{env_name('client_cert')} and {env_name('client_key')} go together: set both"
            )
        if self.client_cert is not None and self.client_key is not None:
            check_client_certificate(self.client_cert, self.client_key)
        return self

    @property
    def egress_proxy(self) -> PushProxy | None:
        """``push_proxy``, read."""
        proxy = self.push_proxy
        return None if proxy is None else PushProxy.parse(proxy.get_secret_value())

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            SmtpServer.parse(value.get_secret_value())
        return value

    @field_validator("notify_secret")
    @classmethod
    def _notify_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_signing_secret(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _notifications_complete(self) -> Self:
        if self.notify_url is not None and self.notify_secret is None:
            raise ValueError(f"{env_name('notify_url')} needs {env_name('notify_secret')}")
        if self.smtp_url is not None and self.smtp_from is None:
            raise ValueError(f"{env_name('smtp_url')} needs {env_name('smtp_from')}")
        return self

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
    def notify(self) -> NotifySettings:
        secret = self.notify_secret
        return NotifySettings(
            failing_after=self.notify_failing_after,
            console_base=self.public_url or f"http://{self.host}:{self.port}",
            platform_url=self.notify_url,
            platform_email=self.notify_email,
            platform_secret=None if secret is None else secret.get_secret_value(),
            interval=self.notify_interval,
        )

    @property
    def smtp_server(self) -> SmtpServer | None:
        url = self.smtp_url
        return None if url is None else SmtpServer.parse(url.get_secret_value())

    @property
    def target_policy(self) -> TargetPolicy:
        """What pushes may reach: global addresses, ``allowed_target_networks``, and
        loopback in development mode."""
        loopback = LOOPBACK_NETWORKS if self.dev else ()
        return TargetPolicy(self.allowed_target_networks + loopback, self.only_allowed_targets)

    @property
    def console_embedded(self) -> bool:
        """Whether other sites may show the console in a frame."""
        return self.console_frame_ancestors != NO_FRAMES

    @property
    def admin_token_path(self) -> Path:
        """Where the generated admin token is kept (mode 0600), when none is set."""
        return Path(self.data_dir) / "admin-token"

    @property
    def secret_key_path(self) -> Path:
        """Where the generated secret key is kept (mode 0600), when none is set."""
        return Path(self.data_dir) / "secret-key"

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'ccpush.db'}"


def check_client_certificate(cert: Path, key: Path) -> None:
    """Refuse a client certificate and key that cannot be loaded together."""
    try:
        ssl.create_default_context().load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"{env_name('client_cert')} and {env_name('client_key')} cannot be loaded:"
            f" {getattr(exc, 'reason', None) or exc.strerror or exc}"
        ) from None


def check_admin_token(token: str) -> None:
    """Refuse tokens that are short or well-known placeholders."""
    if token.strip().lower() in PLACEHOLDER_TOKENS:
        raise ValueError("the admin token is a placeholder value; set a random one")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"the admin token must be at least {MIN_TOKEN_LENGTH} characters")
