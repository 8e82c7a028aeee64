"""A RabbitMQ (AMQP 0-9-1) source: consumes one queue, at most ``prefetch`` messages
unacknowledged at once.

The queue, the dead-letter exchange (fanout) and the dead-letter queue are declared
durable if missing; existing ones are used as they are. Native dead-lettering cannot add a
header, so an invalid message is published to the dead-letter exchange (routing key: the
queue's name) with its headers and a ``ccpush-error`` header, persistent, mandatory and
confirmed by the broker, and only then acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

from ccpush.sources.brokers import (
    APP_HEADER,
    CONNECT_TIMEOUT,
    ERROR_HEADER,
    FIRST_WAIT,
    Inbound,
    Received,
)
from ccpush.sources.config import SourceConfig

BATCH_LINGER: Final = 0.005
"""Seconds a batch smaller than the prefetch waits for company before it is stored."""

_Item = AbstractIncomingMessage | BaseException


class AmqpConnector:
    def __init__(self, config: SourceConfig) -> None:
        self.config = config

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AmqpSession]:
        connection = await aio_pika.connect(self.config.connect_url, timeout=CONNECT_TIMEOUT)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await channel.set_qos(prefetch_count=self.config.prefetch)
            queue = await _queue(connection, channel, self.config.queue)
            dead_exchange = await _dead_letter_exchange(connection, channel, self.config)
            session = AmqpSession(self.config, dead_exchange)
            connection.close_callbacks.add(session.lost)
            channel.close_callbacks.add(session.lost)
            await queue.consume(session.received, consumer_tag=self.config.durable)
            yield session
        finally:
            await connection.close()


class AmqpSession:
    def __init__(self, config: SourceConfig, dead_exchange: AbstractExchange) -> None:
        self.config = config
        self.dead_exchange = dead_exchange
        self._inbox: asyncio.Queue[_Item] = asyncio.Queue()

    async def received(self, message: AbstractIncomingMessage) -> None:
        self._inbox.put_nowait(message)

    def lost(self, _closed: object, exc: BaseException | None) -> None:
        self._inbox.put_nowait(ConnectionError(f"the broker closed the connection: {exc}"))

    async def next_batch(self) -> list[Received[AbstractIncomingMessage]]:
        with contextlib.suppress(TimeoutError):
            first = await asyncio.wait_for(self._inbox.get(), FIRST_WAIT)
            batch = [_received(first)]
            self._take_waiting(batch)
            if len(batch) < self.config.prefetch:
                await asyncio.sleep(BATCH_LINGER)
                self._take_waiting(batch)
            return batch
        return []

    def _take_waiting(self, batch: list[Received[AbstractIncomingMessage]]) -> None:
        while len(batch) < self.config.prefetch and not self._inbox.empty():
            batch.append(_received(self._inbox.get_nowait()))

    async def dead_letter(self, message: AbstractIncomingMessage, error: str) -> None:
        copy = aio_pika.Message(
            message.body,
            headers={**(message.headers or {}), ERROR_HEADER: error},
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            timestamp=message.timestamp,
            type=message.type,
            app_id=message.app_id,
        )
        await self.dead_exchange.publish(copy, routing_key=self.config.queue, mandatory=True)

    async def acknowledge(self, messages: Sequence[AbstractIncomingMessage]) -> None:
        for message in messages:
            await message.ack()


def _received(item: _Item) -> Received[AbstractIncomingMessage]:
    if isinstance(item, BaseException):
        raise item
    return Received(item, inbound(item))


def inbound(message: AbstractIncomingMessage) -> Inbound:
    app_id: Any = (message.headers or {}).get(APP_HEADER)
    if isinstance(app_id, bytes):
        app_id = app_id.decode("utf-8", "replace")
    sent_at = message.timestamp
    if isinstance(sent_at, datetime) and sent_at.tzinfo is None:
        sent_at = sent_at.replace(tzinfo=UTC)
    return Inbound(
        body=message.body,
        app_id=None if app_id is None else str(app_id),
        sent_at=sent_at if isinstance(sent_at, datetime) else None,
    )


async def _queue(
    connection: AbstractConnection, channel: AbstractChannel, name: str
) -> AbstractQueue:
    if not await _exists(connection, lambda probe: probe.declare_queue(name, passive=True)):
        return await channel.declare_queue(name, durable=True)
    return await channel.declare_queue(name, passive=True)


async def _dead_letter_exchange(
    connection: AbstractConnection, channel: AbstractChannel, config: SourceConfig
) -> AbstractExchange:
    name = config.dead_exchange
    if await _exists(connection, lambda probe: probe.declare_exchange(name, passive=True)):
        exchange = await channel.declare_exchange(name, passive=True)
    else:
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT, durable=True)
    queue = await _queue(connection, channel, config.dead_letter)
    await queue.bind(exchange, routing_key=config.queue)
    return exchange


async def _exists(
    connection: AbstractConnection, declare: Callable[[AbstractChannel], Awaitable[object]]
) -> bool:
    """Whether a passive declaration finds its queue or exchange: tried on a channel of
    its own, since the broker closes the channel of one that does not."""
    probe = await connection.channel()
    try:
        await declare(probe)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    await probe.close()
    return True
