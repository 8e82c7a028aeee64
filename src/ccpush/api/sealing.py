"""Answers kept sealed for the caller they were made for.

An answer the API keeps to give again (``ccpush.api.idempotency``) may hold a secret shown
only once, a new key's. The store keeps it sealed with a key derived from the caller's
bearer token, which the store never holds (of an API key, only its SHA-256): whoever reads
the database alone cannot open it.

AES-256-GCM (``cryptography``), its key derived from the token with HKDF-SHA-256, a random
96-bit nonce per answer.
"""

from __future__ import annotations

import secrets
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES: Final = 12
_PURPOSE: Final = b"ccpush sealed answer"


def seal(token: str, plain: bytes) -> bytes:
    """``plain`` sealed for the holder of ``token``: nonce, then ciphertext and tag."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(_key(token)).encrypt(nonce, plain, _PURPOSE)


def unseal(token: str, sealed: bytes) -> bytes | None:
    """What ``seal(token, ...)`` sealed; None if it was sealed with another token (or
    altered)."""
    nonce, cipher = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
    try:
        return AESGCM(_key(token)).decrypt(nonce, cipher, _PURPOSE)
    except (InvalidTag, ValueError):
        return None


def _key(token: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PURPOSE)
    return hkdf.derive(token.encode())
