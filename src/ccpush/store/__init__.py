"""Stores, chosen by URL: ``sqlite:///path/to/file.db`` or ``postgresql://host/db``."""

from __future__ import annotations

from ccpush.errors import UnknownStoreURL
from ccpush.secret_box import SecretBox
from ccpush.store.base import UNSET, Store

__all__ = ["UNSET", "Store", "open_store"]


def open_store(url: str, *, box: SecretBox | None = None) -> Store:
    """A store for ``url``, not yet opened (call ``await store.open()``); ``box`` seals the
    secrets it keeps (default: ``ccpush.secret_box.fallback_box``)."""
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        from ccpush.store.sqlite import SqliteStore

        return SqliteStore.from_url(url, box=box)
    if scheme in ("postgres", "postgresql"):
        from ccpush.store.postgres import PostgresStore

        return PostgresStore.from_url(url, box=box)
    raise UnknownStoreURL(
        f"unsupported database URL scheme {scheme!r}: use sqlite:/// or postgresql://"
    )
