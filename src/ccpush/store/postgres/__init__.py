"""The PostgreSQL store (``store.py``) and its statements (``queries.py``)."""

from ccpush.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
