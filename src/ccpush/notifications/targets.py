"""Setting where an account's notifications go, as the API and the console both do: the
signing secret is made with the first setting (shown then, once) and on rotation."""

from __future__ import annotations

from ccpush.clock import Clock
from ccpush.notifications.records import NotificationTarget
from ccpush.signing import generate_secret
from ccpush.store.base import Store


async def set_target(
    store: Store, clock: Clock, account_id: str, *, url: str | None, email: str | None
) -> tuple[NotificationTarget, bool]:
    """Set the account's notification URL and e-mail (None: none); and whether its signing
    secret was made now (to be shown this once)."""
    current = await store.notification_target(account_id)
    secret = generate_secret() if current is None else current.secret
    target = await store.put_notification_target(
        account_id, url=url, email=email, secret=secret, now=clock.now()
    )
    return target, current is None


async def rotate_secret(store: Store, clock: Clock, account_id: str) -> NotificationTarget:
    """A new signing secret for the account's notifications (its addresses unchanged)."""
    current = await store.notification_target(account_id)
    return await store.put_notification_target(
        account_id,
        url=None if current is None else current.url,
        email=None if current is None else current.email,
        secret=generate_secret(),
        now=clock.now(),
    )
