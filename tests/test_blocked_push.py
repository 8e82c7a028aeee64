"""A push the address guard blocks fails at once: another attempt would be blocked too."""

from __future__ import annotations

from datetime import timedelta

from ccpush.clock import ManualClock
from ccpush.models import DeliveryState, ErrorKind
from ccpush.service import Service
from tests.conftest import minimal_record
from tests.helpers import new_record
from tests.receiver import Receiver, always


async def test_a_blocked_push_is_attempted_once_and_fails(
    service: Service, clock: ManualClock
) -> None:
    # Made in the store: the API refuses such an address; a push finds it all the same
    # when a name starts resolving to a private address.
    app = await service.store.create_app(
        name="private", push_url="http://10.20.30.40:8080/cdr", now=clock.now()
    )
    await service.store.ingest(app.id, [new_record(minimal_record("b1"))], now=clock.now())
    assert await service.dispatcher.run_until_idle() == 1
    for _ in range(4):  # past every retry the schedule would have made
        clock.advance(timedelta(minutes=30))
        assert await service.dispatcher.run_until_idle() == 0
    [delivery] = await service.store.deliveries_of(app.id, "b1")
    assert (delivery.state, delivery.attempts, delivery.next_attempt_at) == (
        DeliveryState.FAILED,
        1,
        None,
    )
    [attempt] = delivery.attempt_log
    assert attempt.error_kind is ErrorKind.BLOCKED


async def test_another_failure_is_still_retried(
    service: Service, clock: ManualClock, receiver: Receiver
) -> None:
    receiver.responder = always(503)
    app = await service.store.create_app(name="down", push_url=receiver.url, now=clock.now())
    await service.store.ingest(app.id, [new_record(minimal_record("d1"))], now=clock.now())
    await service.dispatcher.run_until_idle()
    clock.advance(timedelta(minutes=30))
    assert await service.dispatcher.run_until_idle() == 1
    [delivery] = await service.store.deliveries_of(app.id, "d1")
    assert (delivery.state, delivery.attempts) == (DeliveryState.PENDING, 2)
