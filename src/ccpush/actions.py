"""What the API and the web console both do to a voice application: check a push address,
send a test push, pause and resume."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from ccpush.audit import AuditEntry
from ccpush.endpoint import Applied, Endpoint
from ccpush.guard import check_target
from ccpush.models import App, Outcome
from ccpush.record import CallRecord
from ccpush.service import Service
from ccpush.upkeep import resume


async def target_problem(service: Service, push_url: str) -> str | None:
    """Why pushes may not go to this address, or None (pushes are checked again when made)."""
    reason = await check_target(push_url, service.settings.target_policy, service.resolver)
    return None if reason is None else f"cannot be pushed to: {reason}"


@dataclass(frozen=True, slots=True)
class PushTrial:
    """A test push: the sample record sent, and what the receiver made of it."""

    outcome: Outcome
    record: CallRecord
    applied: Applied | None = None


async def send_test_push(service: Service, app: App, push_url: str) -> PushTrial:
    """Push a sample record to ``push_url`` now, signed as the app's pushes are.

    The push carries the header ``ccpush-test: true``; it is not stored or counted."""
    record = sample_record(service)
    body = record.push_body()
    keys = await service.store.signing_keys(app.id) if app.signing else None
    signing = keys.active(service.clock.now()) if keys else ()
    endpoint = service.store.endpoint_of(app)
    outcome = await service.sender.send(
        push_url,
        body,
        service.dispatcher.test_headers(signing, body, endpoint),
        client_certificate=endpoint.client_certificate,
    )
    return PushTrial(outcome, record, applied_of(service, endpoint))


def applied_of(service: Service, endpoint: Endpoint) -> Applied:
    """What of the app's settings, and the platform's, a push carries: names, never values."""
    described = endpoint.described()
    platform_cert = service.settings.client_cert is not None
    return Applied(
        header_names=described.header_names,
        auth=described.auth,
        client_certificate=described.certificate is not None or platform_cert,
        proxy=service.settings.push_proxy is not None,
    )


def sample_record(service: Service) -> CallRecord:
    """A plausible answered outgoing call, timed now in the record time zone."""
    now = service.clock.now().astimezone(service.zone).replace(microsecond=0, tzinfo=None)
    fmt = "%Y-%m-%d %H:%M:%S"
    return CallRecord(
        callId="test-" + secrets.token_hex(6),
        callSessionId="test-" + secrets.token_hex(8),
        called="8613800138000",
        caller="8613900139000",
        ccode="86",
        ccodeName="China",
        agentName="Test agent",
        agentGroupName="Test group",
        agentAccount="test@ccpush",
        callDuration=0,
        callType=3,
        hangupCode="200",
        hangupReason=1,
        hangingDirection=0,
        labels=["ccpush test push"],
        baseCost="0.0000",
        cost="0.0000",
        remark="This is a test push from ccpush; it is not a real call.",
        callStartTime=now.strftime(fmt),
        answerTime=now.strftime(fmt),
        callEndTime=now.strftime(fmt),
    )


async def pause_app(
    service: Service, app_id: str, account_id: str | None, audit: AuditEntry | None = None
) -> App:
    """Stop pushing; what arrives meanwhile is kept (held) and pushed on resume."""
    return await service.store.update_app(
        app_id, now=service.clock.now(), account_id=account_id, paused=True, audit=audit
    )


async def resume_app(
    service: Service, app_id: str, account_id: str | None, audit: AuditEntry | None = None
) -> App:
    """Push again: what was held first, and, for an app ccpush paused because its address
    kept failing, the records that failed meanwhile (as a replay)."""
    app, replay = await resume(service.store, service.clock, app_id, account_id, audit)
    service.dispatcher.wake()
    if replay is not None:
        service.replays.wake()
    return app
