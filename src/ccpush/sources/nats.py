"""A NATS JetStream source: a durable pull consumer on a stream (filtered by ``subject``),
at most ``prefetch`` messages unacknowledged at once.

The stream is the platform's: ccpush does not make it. It makes its durable consumer
(explicit acknowledgements) and, when no stream keeps the dead-letter subject, a stream
``<stream>_DEAD`` for it. An invalid message is published there through JetStream (stored
once the server answers) with a ``ccpush-error`` header, then acknowledged. While ccpush
holds a batch (a slow or failing store), it tells the server the messages are in progress,
so that they are not delivered again meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Final

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from ccpush.errors import ConfigurationError
from ccpush.sources.brokers import (
    APP_HEADER,
    CONNECT_TIMEOUT,
    ERROR_HEADER,
    FIRST_WAIT,
    Inbound,
    Received,
)
from ccpush.sources.config import SourceConfig

log = logging.getLogger(__name__)

DEAD_STREAM_SUFFIX: Final = "_DEAD"
_NOT_COPIED: Final = "Nats-"
"""Headers the server reads on a publish (message id, expectations): not copied to a dead
letter, where they would mean something else."""


class NatsConnector:
    def __init__(self, config: SourceConfig) -> None:
        self.config = config

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[NatsSession]:
        client = await nats.connect(
            servers=[self.config.connect_url],
            name="ccpush",
            allow_reconnect=False,  # the source connects again itself, as for AMQP
            connect_timeout=CONNECT_TIMEOUT,
            max_reconnect_attempts=1,  # the least that makes a first connection give up
            reconnect_time_wait=0.1,
            error_cb=self._error,
        )
        try:
            stream = client.jetstream()
            await _dead_letter_stream(stream, self.config)
            await stream.add_consumer(
                self.config.queue,
                ConsumerConfig(
                    durable_name=self.config.durable,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=self.config.ack_wait,
                    filter_subject=self.config.subject,
                    max_ack_pending=self.config.prefetch,
                ),
            )
            pull = await stream.pull_subscribe_bind(
                durable=self.config.durable, stream=self.config.queue
            )
            session = NatsSession(self.config, client, stream, pull)
            try:
                yield session
            finally:
                session.let_go()
        finally:
            await client.close()

    async def _error(self, exc: Exception) -> None:
        log.warning("source %s: %s: %s", self.config.name, type(exc).__name__, exc)


class NatsSession:
    def __init__(
        self,
        config: SourceConfig,
        client: Client,
        stream: JetStreamContext,
        pull: JetStreamContext.PullSubscription,
    ) -> None:
        self.config = config
        self.client = client
        self.stream = stream
        self.pull = pull
        self._in_progress: asyncio.Task[None] | None = None

    async def next_batch(self) -> list[Received[Msg]]:
        if self.client.is_closed:
            raise ConnectionError("the connection to the NATS server was closed")
        try:
            messages = await self.pull.fetch(self.config.prefetch, timeout=FIRST_WAIT)
        except TimeoutError:  # nothing came (nats-py raises its own, or asyncio's)
            return []
        self.let_go()
        self._in_progress = asyncio.create_task(self._keep_in_progress(messages))
        return [Received(message, inbound(message)) for message in messages]

    async def dead_letter(self, message: Msg, error: str) -> None:
        headers = {
            name: value
            for name, value in (message.headers or {}).items()
            if not name.startswith(_NOT_COPIED)
        }
        headers[ERROR_HEADER] = error
        await self.stream.publish(self.config.dead_letter, message.data, headers=headers)

    async def acknowledge(self, messages: Sequence[Msg]) -> None:
        self.let_go()
        for message in messages:
            await message.ack()
        await self.client.flush()

    def let_go(self) -> None:
        """Stop telling the server the batch in hand is in progress."""
        if self._in_progress is not None:
            self._in_progress.cancel()
            self._in_progress = None

    async def _keep_in_progress(self, messages: Sequence[Msg]) -> None:
        with contextlib.suppress(nats.errors.Error, OSError):  # the connection is lost
            while True:
                await asyncio.sleep(self.config.ack_wait / 3)
                for message in messages:
                    await message.in_progress()


def inbound(message: Msg) -> Inbound:
    return Inbound(
        body=message.data,
        app_id=(message.headers or {}).get(APP_HEADER),
        sent_at=message.metadata.timestamp,
    )


async def _dead_letter_stream(stream: JetStreamContext, config: SourceConfig) -> None:
    """Make sure a stream keeps the dead-letter subject, and that it is not one this source
    consumes (its dead letters would come back)."""
    try:
        keeper = await stream.find_stream_name_by_subject(config.dead_letter)
    except nats.js.errors.NotFoundError:
        await stream.add_stream(
            name=config.queue + DEAD_STREAM_SUFFIX, subjects=[config.dead_letter]
        )
        return
    if keeper == config.queue and config.subject is None:
        raise ConfigurationError(
            f"the dead-letter subject {config.dead_letter!r} is in the stream {keeper!r},"
            " which this source consumes whole: name another with dlq=, or set subject="
        )
