"""Secrets at rest: what the store keeps of a secret is sealed (authenticated encryption).

A ``SecretBox`` holds one or more Fernet keys (``cryptography.fernet``: AES-128-CBC with an
HMAC-SHA256, a key of 32 random bytes written in URL-safe base64). The first key seals; every
key opens, so a key is rotated by putting a new one first, re-sealing what is kept
(``ccpush rotate-secret-key``) and then dropping the old one.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
from collections.abc import Iterable
from typing import Final

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ccpush.errors import ConfigurationError

SEALED_PREFIX: Final = "gAAAAA"
"""How every sealed text starts: Fernet's version byte (0x80) and the first bytes of its
timestamp, in URL-safe base64."""
KEY_ENV: Final = "CCPUSH_SECRET_KEY"
OPEN_CACHE_SIZE: Final = 4096
PLACEHOLDER_KEYS: Final = frozenset({"changeme", "change-me", "changethis", "secret", "key"})


class SecretKeyError(ValueError):
    """A secret key that is not a Fernet key (32 bytes in URL-safe base64)."""


class SealedTextError(ValueError):
    """A sealed text that none of the keys opens (another key sealed it, or it was altered)."""


def new_key() -> str:
    """A fresh key, as ``CCPUSH_SECRET_KEY`` takes it."""
    return Fernet.generate_key().decode()


def parse_keys(text: str) -> tuple[str, ...]:
    """The keys of a comma-separated list, checked; the first one seals."""
    keys = tuple(part.strip() for part in text.split(",") if part.strip())
    if not keys:
        raise SecretKeyError("no key given: give one or more keys, comma-separated")
    for number, key in enumerate(keys, start=1):
        _check_key(key, number)
    return keys


def _check_key(key: str, number: int) -> None:
    where = f"key {number}"
    if key.lower() in PLACEHOLDER_KEYS:
        raise SecretKeyError(
            f"{where} is a placeholder; make one with: ccpush rotate-secret-key --new-key"
        )
    try:
        raw = base64.urlsafe_b64decode(key.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raw = b""
    if len(raw) != 32:
        raise SecretKeyError(
            f"{where} is not a key: it must be 32 random bytes in URL-safe base64 (44 characters);"
            " make one with: ccpush rotate-secret-key --new-key"
        )


class SecretBox:
    """Seals and opens secrets with ``keys`` (the first seals, every one opens)."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = tuple(keys)
        if not self.keys:
            raise SecretKeyError("a secret box needs at least one key")
        for number, key in enumerate(self.keys, start=1):
            _check_key(key, number)
        self._fernet = MultiFernet([Fernet(key.encode()) for key in self.keys])
        # The dispatcher opens the same few sealed texts for every push: decrypt each once.
        self.open = functools.lru_cache(maxsize=OPEN_CACHE_SIZE)(self._open)

    @classmethod
    def fresh(cls) -> SecretBox:
        """A box with a new key of its own."""
        return cls([new_key()])

    def __repr__(self) -> str:
        return f"SecretBox(keys={len(self.keys)})"

    def seal(self, text: str) -> str:
        """``text`` sealed with the first key."""
        return self._fernet.encrypt(text.encode()).decode("ascii")

    def _open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode()
        except (InvalidToken, UnicodeEncodeError):
            raise SealedTextError(
                f"a sealed secret cannot be opened with the configured keys ({KEY_ENV}):"
                " was its key dropped before ccpush rotate-secret-key ran?"
            ) from None

    def open_all(self, sealed: Iterable[str]) -> tuple[str, ...]:
        return tuple(self.open(text) for text in sealed)

    def reseal(self, sealed: str) -> str:
        """``sealed`` sealed again with the first key (whichever key sealed it)."""
        try:
            return self._fernet.rotate(sealed.encode("ascii")).decode("ascii")
        except InvalidToken:
            self._open(sealed)  # raises the clear error
            raise

    @staticmethod
    def is_sealed(text: str) -> bool:
        """Whether ``text`` looks sealed (a plain secret never starts like a sealed one)."""
        return text.startswith(SEALED_PREFIX)


_fallback: list[SecretBox] = []


def fallback_box() -> SecretBox:
    """The box of a store made without one (in tests, tools): the keys of ``CCPUSH_SECRET_KEY``
    if it is set, else a key made once per process. A service always gives its own."""
    if not _fallback:
        configured = os.environ.get(KEY_ENV, "").strip()
        if configured:
            try:
                _fallback.append(SecretBox(parse_keys(configured)))
            except SecretKeyError as exc:
                raise ConfigurationError(f"{KEY_ENV}: {exc}") from None
        else:
            _fallback.append(SecretBox.fresh())
    return _fallback[0]
