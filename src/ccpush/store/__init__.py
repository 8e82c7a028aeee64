"""Stores, chosen by URL: ``sqlite:///path/to/file.db`` or ``postgresql://host/db``."""

from __future__ import annotations

from ccpush.errors import UnknownStoreURL
from ccpush.store.base import UNSET, Store

__all__ = ["UNSET", "Store", "open_store"]


def open_store(url: str) -> Store:
    """A store for ``url``, not yet opened (call ``await store.open()``)."""
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        from ccpush.store.sqlite import SqliteStore

        return SqliteStore.from_url(url)
    if scheme in ("postgres", "postgresql"):
        from ccpush.store.postgres import PostgresStore

        return PostgresStore.from_url(url)
    raise UnknownStoreURL(
        f"unsupported database URL scheme {scheme!r}: use sqlite:/// or postgresql://"
    )
