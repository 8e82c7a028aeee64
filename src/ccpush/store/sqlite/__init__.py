"""The SQLite store (``store.py``) and its statements (``queries.py``)."""

from ccpush.store.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
