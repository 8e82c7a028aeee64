"""The senders: what makes a push's HTTP attempt and tells what became of it (an ``Outcome``).

A family, one module per way of pushing, all with the ``Pushes`` interface and judging
answers alike (``base``): ``aiohttp`` (``Sender``), ``reqwest`` (``ReqwestSender``), and
``processes`` (``ProcessSender``: either of those, run in child processes). ``make_sender``
picks one from the settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Protocol

from aiohttp.abc import AbstractResolver

from ccpush.clock import Clock
from ccpush.guard import TargetPolicy
from ccpush.senders.aiohttp import Sender
from ccpush.senders.base import (
    HEAD_BYTES,
    HttpClient,
    LocalPushes,
    Pushes,
    SenderLimits,
    judge_status,
    make_outcome,
    with_push_headers,
)
from ccpush.senders.egress import PushProxy
from ccpush.senders.processes import ProcessSender
from ccpush.senders.reqwest import ReqwestSender

__all__ = [
    "HEAD_BYTES",
    "SENDERS",
    "HttpClient",
    "LocalPushes",
    "ProcessSender",
    "PushProxy",
    "Pushes",
    "ReqwestSender",
    "Sender",
    "SenderLimits",
    "SenderSettings",
    "judge_status",
    "make_outcome",
    "make_sender",
    "with_push_headers",
]

SENDERS: Final[dict[HttpClient, type[LocalPushes]]] = {
    "aiohttp": Sender,
    "reqwest": ReqwestSender,
}
"""The sender that makes pushes in this process with each HTTP client."""


class SenderSettings(Protocol):
    """What ``make_sender`` reads of the settings (``ccpush.settings.Settings`` has it)."""

    @property
    def http_client(self) -> HttpClient: ...
    @property
    def push_processes(self) -> int: ...
    @property
    def push_timeout(self) -> float: ...
    @property
    def push_connect_timeout(self) -> float: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def per_host_concurrency(self) -> int: ...
    @property
    def response_excerpt_bytes(self) -> int: ...
    @property
    def target_policy(self) -> TargetPolicy: ...
    @property
    def ca_bundle(self) -> Path | None: ...
    @property
    def ca_bundle_only(self) -> bool: ...
    @property
    def client_cert(self) -> Path | None: ...
    @property
    def client_key(self) -> Path | None: ...
    @property
    def egress_proxy(self) -> PushProxy | None: ...


def make_sender(
    settings: SenderSettings, clock: Clock, resolver: AbstractResolver | None = None
) -> Pushes:
    """What makes the pushes with ``settings.http_client``: this process, or
    ``settings.push_processes`` child processes. ``resolver`` (for the target guard to
    wrap) is for pushes made here."""
    limits = SenderLimits(
        timeout=settings.push_timeout,
        connect_timeout=settings.push_connect_timeout,
        concurrency=settings.concurrency,
        per_host=settings.per_host_concurrency,
        excerpt_bytes=settings.response_excerpt_bytes,
        ca_bundle=None if settings.ca_bundle is None else str(settings.ca_bundle),
        ca_bundle_only=settings.ca_bundle_only,
        client_cert=None if settings.client_cert is None else str(settings.client_cert),
        client_key=None if settings.client_key is None else str(settings.client_key),
        proxy=settings.egress_proxy,
    )
    policy = settings.target_policy
    sender = SENDERS[settings.http_client]
    if not settings.push_processes:
        return sender(clock, limits, policy=policy, resolver=resolver)
    if resolver is not None:
        raise ValueError("a resolver is for pushes made in this process: no push processes")
    return ProcessSender(
        clock, limits, policy=policy, processes=settings.push_processes, sender=sender
    )
