"""Pushes made in push processes: what only they can do (a child that dies, one that is
stopped); what every sender does is tested on both in ``test_sender`` and ``test_running``."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import pytest

from ccpush.clock import SystemClock
from ccpush.guard import TargetPolicy
from ccpush.models import ErrorKind
from ccpush.senders import ProcessSender, SenderLimits
from tests.helpers import eventually
from tests.receiver import Receiver, Reply

BODY = b'{"callSessionId":"s1"}'
LIMITS = SenderLimits(timeout=30, connect_timeout=1, per_host=8)
LOOPBACK = TargetPolicy.parse("127.0.0.0/8")


@pytest.fixture
async def sender() -> AsyncIterator[ProcessSender]:
    async with ProcessSender(SystemClock(), LIMITS, policy=LOOPBACK, processes=2) as sender:
        yield sender


async def test_a_push_process_that_dies_fails_its_attempts_and_is_replaced(
    sender: ProcessSender, receiver: Receiver
) -> None:
    receiver.responder = lambda push, seen: Reply(delay=60) if seen == 0 else Reply()
    before = sender.pids
    attempt = asyncio.ensure_future(sender.send(receiver.url, BODY, {"webhook-id": "dlv_1"}))
    await receiver.wait_for(lambda r: len(r.pushes) == 1)
    os.kill(before[0], signal.SIGKILL)  # both hold nothing: the first is chosen
    outcome = await asyncio.wait_for(attempt, 10)
    assert outcome.error_kind is ErrorKind.INTERRUPTED
    assert "exit code -9" in (outcome.error or "")
    again = await sender.send(receiver.url, BODY, {"webhook-id": "dlv_1"})
    assert again.ok
    assert len(receiver.pushes) == 2
    assert sender.pids[0] not in before
    assert sender.pids[1] == before[1]


async def test_attempts_are_spread_over_the_processes(
    sender: ProcessSender, receiver: Receiver
) -> None:
    """Two attempts at once go to two processes: killing one fails one of them only."""
    receiver.responder = lambda push, seen: Reply(delay=60)
    attempts = [
        asyncio.ensure_future(sender.send(receiver.url, BODY, {"webhook-id": f"dlv_{n}"}))
        for n in range(2)
    ]
    await receiver.wait_for(lambda r: len(r.pushes) == 2)
    os.kill(sender.pids[1], signal.SIGKILL)
    done, waiting = await asyncio.wait(attempts, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    assert [task.result().error_kind for task in done] == [ErrorKind.INTERRUPTED]
    assert len(waiting) == 1
    await receiver.stop()  # the slow receiver answers the other one now
    [outcome] = await asyncio.gather(*waiting)
    assert outcome.error_kind is not ErrorKind.INTERRUPTED


async def test_closing_lets_the_processes_finish_their_attempts(receiver: Receiver) -> None:
    receiver.responder = lambda push, seen: Reply(delay=0.3)
    sender = ProcessSender(SystemClock(), LIMITS, policy=LOOPBACK, processes=2)
    await sender.start()
    pids = sender.pids
    attempts = [asyncio.ensure_future(sender.send(receiver.url, BODY, {})) for _ in range(4)]
    await receiver.wait_for(lambda r: len(r.pushes) == 4)
    await sender.close()
    assert all(attempt.result().ok for attempt in attempts)
    for pid in pids:  # exited and reaped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_the_target_guard_holds_in_a_push_process(receiver: Receiver) -> None:
    """The children get the policy: without loopback in it, a loopback push is refused."""
    async with ProcessSender(SystemClock(), LIMITS, policy=TargetPolicy()) as sender:
        outcome = await sender.send(receiver.url, BODY, {})
    assert outcome.error_kind is ErrorKind.BLOCKED
    assert receiver.pushes == []


async def test_a_sender_not_started_says_so() -> None:
    sender = ProcessSender(SystemClock(), LIMITS, policy=LOOPBACK)
    with pytest.raises(RuntimeError, match="not started"):
        await sender.send("http://127.0.0.1:9/", BODY, {})


async def test_an_attempt_whose_caller_stopped_waiting_does_not_disturb_the_others(
    sender: ProcessSender, receiver: Receiver
) -> None:
    receiver.responder = lambda push, seen: Reply(delay=0.2) if seen == 0 else Reply()
    given_up = asyncio.ensure_future(sender.send(receiver.url, BODY, {"webhook-id": "dlv_1"}))
    await receiver.wait_for(lambda r: len(r.pushes) == 1)
    given_up.cancel()
    later = [sender.send(receiver.url, BODY, {"webhook-id": f"dlv_{n}"}) for n in range(2, 6)]
    assert all(outcome.ok for outcome in await asyncio.gather(*later))
    await receiver.wait_for(lambda r: len(r.pushes) == 5)
    await sender.close()  # the first one's answer arrives for nobody, and is dropped
    assert given_up.cancelled()


async def test_a_push_process_that_cannot_be_started_again_fails_the_attempt(
    sender: ProcessSender, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispatcher always gets an outcome, never an exception, from a sender."""
    for pid in sender.pids:
        os.kill(pid, signal.SIGKILL)
    monkeypatch.setattr("sys.executable", "/bin/false")  # every new child exits at once
    await eventually(lambda: sender.pids == [])
    outcome = await sender.send(receiver.url, BODY, {})
    assert outcome.error_kind is ErrorKind.INTERRUPTED
    assert "no push process could be started" in (outcome.error or "")
    assert receiver.pushes == []
    monkeypatch.undo()
    assert (await sender.send(receiver.url, BODY, {})).ok  # the next one starts


async def test_a_child_that_does_not_finish_in_time_is_killed_on_close(
    receiver: Receiver,
) -> None:
    """Closing waits the push timeout and a margin for a child, then kills it: a stuck
    child cannot hold up a stopping service."""
    quick = SenderLimits(timeout=0.2, connect_timeout=0.2)
    sender = ProcessSender(SystemClock(), quick, policy=LOOPBACK)
    await sender.start()
    [pid] = sender.pids
    os.kill(pid, signal.SIGSTOP)  # frozen: it will never answer, nor read its socket's end
    attempt = asyncio.ensure_future(sender.send(receiver.url, BODY, {}))
    await asyncio.wait_for(sender.close(), 30)
    outcome = await attempt
    assert outcome.error_kind is ErrorKind.INTERRUPTED
    assert "exit code -9" in (outcome.error or "")
