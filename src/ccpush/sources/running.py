"""Starting the broker sources a service is configured with: one task each. A broker's
client library, and the FreeSWITCH mapping, are imported only when a source needs them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import tzinfo
from typing import TYPE_CHECKING, Any

from ccpush.sources.brokers import BrokerSource, Connector, Intake, Read, Reader, Skip, read_record
from ccpush.sources.config import SourceConfig

if TYPE_CHECKING:
    from ccpush.sources.freeswitch import FreeswitchMapping


def connector_for(config: SourceConfig) -> Connector[Any]:
    """The connector of a source's broker (its client library imported only now)."""
    if config.kind == "amqp":
        from ccpush.sources.amqp import AmqpConnector

        return AmqpConnector(config)
    from ccpush.sources.nats import NatsConnector

    return NatsConnector(config)


def reader_for(
    config: SourceConfig, zone: tzinfo, freeswitch: FreeswitchMapping | None = None
) -> Reader:
    """How a source reads its messages: call records, or FreeSWITCH JSON CDRs mapped by
    ``freeswitch`` (None: the default mapping), their times in the record ``zone``."""
    if config.format == "record":
        return read_record
    from ccpush.sources.freeswitch import (
        FreeswitchMapping,
        Ignored,
        UnmappableCdr,
        map_cdr,
        read_cdr,
    )

    mapping = freeswitch or FreeswitchMapping.load()

    def read_cdr_message(body: bytes) -> Read:
        try:
            mapped = map_cdr(read_cdr(body, None), mapping, record_zone=zone)
        except UnmappableCdr as exc:
            raise ValueError(f"the CDR cannot be a record: {exc}") from None
        if isinstance(mapped, Ignored):
            return Skip(mapped.reason)
        return mapped.record, mapped.app_id

    return read_cdr_message


def start_sources(
    configs: Sequence[SourceConfig],
    intake: Intake,
    stop: asyncio.Event,
    *,
    freeswitch: FreeswitchMapping | None = None,
) -> list[asyncio.Task[None]]:
    """One task per source, each consuming until ``stop`` is set."""
    return [
        asyncio.create_task(
            BrokerSource(
                config,
                connector_for(config),
                intake,
                reader_for(config, intake.zone, freeswitch),
            ).run(stop),
            name=f"ccpush-source-{number}",
        )
        for number, config in enumerate(configs, 1)
    ]
