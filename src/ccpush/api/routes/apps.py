"""Voice Application Management: apps and their cc-http push address."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from ccpush.actions import pause_app, resume_app, send_test_push, target_problem
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
    return AppPage(items=[AppOut.of(app) for app in page], next_cursor=next_cursor)


@idempotent_post(router, "/apps", status_code=status.HTTP_201_CREATED)
async def create_app(body: AppCreate, caller: Manager, service: ServiceDep) -> AppOut:
    """Create a voice application, optionally with its cc-http push address."""
    if caller.account_id is not None:
        if body.account_id not in (None, caller.account_id):
            raise ApiError(404, "not_found", "No account has this id.")
        account_id = caller.account_id
    else:
        account_id = body.account_id or DEFAULT_ACCOUNT
    await _check_target(service, body.push_url)
    app = await service.store.create_app(
        name=body.name, push_url=body.push_url, now=service.clock.now(), account_id=account_id
    )
    return AppOut.of(app)


@router.get("/apps/{app_id}")
async def get_app(app_id: PathId, caller: Manager, service: ServiceDep) -> AppOut:
    return AppOut.of(await service.store.get_app(app_id, caller.account_id))


@router.get("/apps/{app_id}/lag")
async def app_lag(app_id: PathId, caller: Manager, service: ServiceDep) -> AppLagOut:
    """How far behind the app's pushes are: its oldest record still waiting to be pushed."""
    await service.store.get_app(app_id, caller.account_id)
    oldest = await service.store.oldest_waiting_at(app_id)
    return AppLagOut.of(oldest, service.clock.now())


@router.patch("/apps/{app_id}")
async def update_app(
    app_id: PathId, body: AppPatch, caller: Manager, service: ServiceDep
) -> AppOut:
    """Change the name, the push address (``null`` clears it), ``paused`` or ``signing``
    (turn signatures off for a receiver that cannot verify them)."""
    given = body.model_fields_set
    nulls = [n for n in ("name", "paused", "signing") if n in given and getattr(body, n) is None]
    if nulls:
        raise invalid([Problem(field=name, reason="cannot be null") for name in nulls])
    await _check_target(service, body.push_url)
    if body.paused is False:
        await resume_app(service, app_id, caller.account_id)
    app = await service.store.update_app(
        app_id,
        now=service.clock.now(),
        account_id=caller.account_id,
        name=body.name if body.name is not None else UNSET,
        push_url=body.push_url if "push_url" in given else UNSET,
        paused=True if body.paused else UNSET,
        signing=body.signing if body.signing is not None else UNSET,
    )
    service.dispatcher.wake()
    return AppOut.of(app)


async def _check_target(service: Service, push_url: str | None) -> None:
    """Refuse an address that pushes may not reach (checked again at every push)."""
    if push_url is None:
        return
    problem = await target_problem(service, push_url)
    if problem is not None:
        raise invalid([Problem(field="pushUrl", reason=problem)])


@router.delete("/apps/{app_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_app(app_id: PathId, caller: Manager, service: ServiceDep) -> Response:
    """Delete the app with all its records, deliveries and attempts."""
    await service.store.delete_app(app_id, caller.account_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/apps/{app_id}/pause")
async def pause(app_id: PathId, caller: Manager, service: ServiceDep) -> AppOut:
    """Stop pushing. Records that arrive meanwhile are kept and pushed on resume."""
    return AppOut.of(await pause_app(service, app_id, caller.account_id))


@router.post("/apps/{app_id}/resume")
async def resume(app_id: PathId, caller: Manager, service: ServiceDep) -> AppOut:
    """Push again, starting with what was held while paused. If ccpush paused the app
    because its address kept failing, the records that failed meanwhile are replayed."""
    return AppOut.of(await resume_app(service, app_id, caller.account_id))


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
    return TestPushOut.of(trial.outcome, trial.record)


@router.get("/apps/{app_id}/signing-secret")
async def signing_secret(app_id: PathId, caller: Manager, service: ServiceDep) -> SigningOut:
    """The secret that signs the app's pushes (and, during a rotation, the previous one)."""
    keys = await service.store.signing_keys(app_id, caller.account_id)
    return SigningOut.of(keys)


@idempotent_post(router, "/apps/{app_id}/signing-secret/rotate")
async def rotate_signing_secret(app_id: PathId, caller: Manager, service: ServiceDep) -> SigningOut:
    """Make a new secret. Pushes carry both signatures until the overlap ends, so the
    receiver can switch to the new secret without refusing a genuine push."""
    keys = await service.store.rotate_signing_secret(
        app_id,
        secret=generate_secret(),
        now=service.clock.now(),
        overlap=service.settings.rotation_overlap,
        account_id=caller.account_id,
    )
    return SigningOut.of(keys)
