"""Voice Application Management: apps and their cc-http push address."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from ccpush.actions import pause_app, resume_app, send_test_push, target_problem
from ccpush.api.auditing import Audit
from ccpush.api.auth import Manager
from ccpush.api.deps import ServiceDep
from ccpush.api.errors import ApiError, invalid
from ccpush.api.idempotency import idempotent_post
from ccpush.api.params import PAGE_SIZE, Cursor, Limit, PathId, page_after
from ccpush.api.schemas import (
    AppCreate,
    AppLagOut,
    AppOut,
    AppPage,
    AppPatch,
    SigningOut,
    TestPushOut,
)
from ccpush.endpoint import Endpoint, problems
from ccpush.models import App
from ccpush.record import Problem
from ccpush.service import Service
from ccpush.signing import generate_secret
from ccpush.store.base import DEFAULT_ACCOUNT, UNSET

router = APIRouter(prefix="/v1", tags=["apps"])


@router.get("/apps")
async def list_apps(
    caller: Manager, service: ServiceDep, limit: Limit = PAGE_SIZE, cursor: Cursor = None
) -> AppPage:
    """The caller's apps (the operator: every app), oldest first."""
    apps = await service.store.list_apps(caller.account_id)
    page, next_cursor = page_after(apps, cursor, limit)
    return AppPage(items=[_out(service, app) for app in page], next_cursor=next_cursor)


@idempotent_post(router, "/apps", status_code=status.HTTP_201_CREATED)
async def create_app(body: AppCreate, caller: Manager, service: ServiceDep, audit: Audit) -> AppOut:
    """Create a voice application, optionally with its cc-http push address."""
    if caller.account_id is not None:
        if body.account_id not in (None, caller.account_id):
            raise ApiError(404, "not_found", "No account has this id.")
        account_id = caller.account_id
    else:
        account_id = body.account_id or DEFAULT_ACCOUNT
    await _check_target(service, body.push_url)
    endpoint = _endpoint_change(body, Endpoint())
    app = await service.store.create_app(
        name=body.name,
        push_url=body.push_url,
        now=service.clock.now(),
        account_id=account_id,
        audit=audit,
        endpoint=endpoint,
        **body.pace_changes(),
    )
    return _out(service, app)


@router.get("/apps/{app_id}")
async def get_app(app_id: PathId, caller: Manager, service: ServiceDep) -> AppOut:
    return _out(service, await service.store.get_app(app_id, caller.account_id))


@router.get("/apps/{app_id}/lag")
async def app_lag(app_id: PathId, caller: Manager, service: ServiceDep) -> AppLagOut:
    """How far behind the app's pushes are: its oldest record still waiting to be pushed."""
    await service.store.get_app(app_id, caller.account_id)
    oldest = await service.store.oldest_waiting_at(app_id)
    return AppLagOut.of(oldest, service.clock.now())


@router.patch("/apps/{app_id}")
async def update_app(
    app_id: PathId, body: AppPatch, caller: Manager, service: ServiceDep, audit: Audit
) -> AppOut:
    """Change the name, the push address (``null`` clears it), ``paused``, ``signing``
    (turn signatures off for a receiver that cannot verify them), the push headers,
    credentials and client certificate (``null`` clears one), or the pace the receiver can
    take: ``rateLimit`` (pushes per second) and ``maxInFlight`` (``null`` lifts one)."""
    given = body.model_fields_set
    nulls = [n for n in ("name", "paused", "signing") if n in given and getattr(body, n) is None]
    if nulls:
        raise invalid([Problem(field=name, reason="cannot be null") for name in nulls])
    await _check_target(service, body.push_url)
    current = await service.store.get_app(app_id, caller.account_id)
    endpoint = _endpoint_change(body, service.store.endpoint_of(current))
    if body.paused is False:
        await resume_app(service, app_id, caller.account_id, audit)
    app = await service.store.update_app(
        app_id,
        now=service.clock.now(),
        account_id=caller.account_id,
        name=body.name if body.name is not None else UNSET,
        push_url=body.push_url if "push_url" in given else UNSET,
        paused=True if body.paused else UNSET,
        signing=body.signing if body.signing is not None else UNSET,
        endpoint=endpoint if endpoint is not None else UNSET,
        audit=audit,
        **body.pace_changes(),
    )
    service.dispatcher.wake()
    return _out(service, app)


def _out(service: Service, app: App) -> AppOut:
    """The app as the API shows it: its push settings by name and kind, never a value."""
    return AppOut.of(app, service.store.endpoint_of(app))


def _endpoint_change(body: AppCreate | AppPatch, current: Endpoint) -> Endpoint | None:
    """The app's push settings as ``body`` changes them (refused if they are invalid)."""
    endpoint = body.endpoint_from(current)
    found = problems(endpoint) if endpoint is not None else []
    if found:
        raise invalid(found)
    return endpoint


async def _check_target(service: Service, push_url: str | None) -> None:
    """Refuse an address that pushes may not reach (checked again at every push)."""
    if push_url is None:
        return
    problem = await target_problem(service, push_url)
    if problem is not None:
        raise invalid([Problem(field="pushUrl", reason=problem)])


@router.delete("/apps/{app_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_app(
    app_id: PathId, caller: Manager, service: ServiceDep, audit: Audit
) -> Response:
    """Delete the app with all its records, deliveries and attempts."""
    await service.store.delete_app(app_id, caller.account_id, audit=audit)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/apps/{app_id}/pause")
async def pause(app_id: PathId, caller: Manager, service: ServiceDep, audit: Audit) -> AppOut:
    """Stop pushing. Records that arrive meanwhile are kept and pushed on resume."""
    return _out(service, await pause_app(service, app_id, caller.account_id, audit))


@router.post("/apps/{app_id}/resume")
async def resume(app_id: PathId, caller: Manager, service: ServiceDep, audit: Audit) -> AppOut:
    """Push again, starting with what was held while paused. If ccpush paused the app
    because its address kept failing, the records that failed meanwhile are replayed."""
    return _out(service, await resume_app(service, app_id, caller.account_id, audit))


@idempotent_post(
    router,
    "/apps/{app_id}/test-push",
    responses={409: {"description": "The app has no push address"}},
)
async def test_push(app_id: PathId, caller: Manager, service: ServiceDep) -> TestPushOut:
    """Push a sample record to the app's address now, and say what happened.

    The push carries the header ``ccpush-test: true``; it is not stored or counted as a record."""
    app = await service.store.get_app(app_id, caller.account_id)
    if app.push_url is None:
        raise ApiError(409, "no_push_address", "the app has no push address to test")
    trial = await send_test_push(service, app, app.push_url)
    return TestPushOut.of(trial.outcome, trial.record, trial.applied)


@router.get("/apps/{app_id}/signing-secret")
async def signing_secret(app_id: PathId, caller: Manager, service: ServiceDep) -> SigningOut:
    """The secret that signs the app's pushes (and, during a rotation, the previous one)."""
    keys = await service.store.signing_keys(app_id, caller.account_id)
    return SigningOut.of(keys)


@idempotent_post(router, "/apps/{app_id}/signing-secret/rotate")
async def rotate_signing_secret(
    app_id: PathId, caller: Manager, service: ServiceDep, audit: Audit
) -> SigningOut:
    """Make a new secret. Pushes carry both signatures until the overlap ends, so the
    receiver can switch to the new secret without refusing a genuine push."""
    keys = await service.store.rotate_signing_secret(
        app_id,
        secret=generate_secret(),
        now=service.clock.now(),
        overlap=service.settings.rotation_overlap,
        account_id=caller.account_id,
        audit=audit,
    )
    await service.notifier.secret_rotated(app_id)
    return SigningOut.of(keys)
