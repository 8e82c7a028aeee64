"""The exceptions of ccpush, one root, each docstring its default message.

    CcpushError
    ├── ConfigurationError
    ├── StoreError
    │   ├── MigrationError
    │   ├── UnknownStoreURL
    │   └── StoreRefusedValue
    ├── NotFound
    │   ├── AccountNotFound
    │   ├── AppNotFound
    │   ├── KeyNotFound
    │   ├── RecordNotFound
    │   └── ReplayNotFound
    ├── ReplayTooLarge
    ├── IngestionBusy
    └── TargetRefused (also an OSError)

A failed push is not an exception: it is an attempt outcome, stored as data
(see ``ccpush.senders``).
"""

from __future__ import annotations


class CcpushError(Exception):
    """Something went wrong in ccpush."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(CcpushError):
    """The configuration is not valid."""


class StoreError(CcpushError):
    """The store could not complete the operation."""


class MigrationError(StoreError):
    """The store schema could not be migrated."""


class UnknownStoreURL(StoreError):
    """The database URL names no supported store (use sqlite:/// or postgresql://)."""


class StoreRefusedValue(StoreError):
    """The database refused a value it cannot hold (a NUL character, a number or date out
    of its range): bad input, not an outage, so trying again cannot help."""


class NotFound(CcpushError):
    """The object does not exist."""


class AppNotFound(NotFound):
    """No voice application has this id."""


class AccountNotFound(NotFound):
    """No account has this id."""


class KeyNotFound(NotFound):
    """No API key has this id."""


class RecordNotFound(NotFound):
    """This app has no record with this callSessionId."""


class ReplayNotFound(NotFound):
    """This app has no replay with this id."""


class ReplayTooLarge(CcpushError):
    """The replay would push more records than one replay may; narrow the range."""


class IngestionBusy(CcpushError):
    """More records wait for the database than ingestion may queue; send again shortly."""


class TargetRefused(CcpushError, OSError):
    """The push address leads to an address pushes may not reach.

    An ``OSError`` too, so that aiohttp carries it out of its resolver and socket factory
    as the ``os_error`` of a ``ClientConnectorError`` (see ``ccpush.guard``).
    """
