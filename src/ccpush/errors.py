"""The exceptions of ccpush, one root, each docstring its default message.

    CcpushError
    ├── ConfigurationError
    ├── StoreError
    │   ├── MigrationError
    │   └── UnknownStoreURL
    └── NotFound
        └── AppNotFound

A failed push is not an exception: it is an attempt outcome, stored as data
(see ``ccpush.sender``).
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


class NotFound(CcpushError):
    """The object does not exist."""


class AppNotFound(NotFound):
    """No voice application has this id."""
