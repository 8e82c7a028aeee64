"""Signed pushes, following the Standard Webhooks specification.

Every push carries ``webhook-id`` (the same on every attempt of one delivery),
``webhook-timestamp`` (seconds since the epoch, when the attempt was made) and
``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256, keyed with the app's secret, of
``{webhook-id}.{webhook-timestamp}.{body}``. While a secret is being rotated the header holds
both signatures, separated by a space, so receivers can switch keys at their own pace.
The headers' names, and the rest of a push's headers, are ``ccpush.wire``'s.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import secrets
from collections.abc import Sequence
from typing import Any, Final

from ccpush.wire import SECRET_PREFIX, SIGNATURE_SCHEME


def generate_secret() -> str:
    """A new signing secret: ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


@functools.lru_cache(maxsize=1024)
def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


@functools.lru_cache(maxsize=1024)
def _pads(secret: str) -> tuple[Any, Any]:
    """HMAC-SHA256's inner and outer hash states for this secret, its key already absorbed
    (RFC 2104). Copying them costs less than ``hmac.digest``, which on OpenSSL 3 looks the
    digest up again on every call."""
    key = _key(secret)
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return (
        hashlib.sha256(key.translate(_IPAD)),
        hashlib.sha256(key.translate(_OPAD)),
    )


_BLOCK: Final = 64  # SHA-256's block size
_IPAD: Final = bytes(byte ^ 0x36 for byte in range(256))
_OPAD: Final = bytes(byte ^ 0x5C for byte in range(256))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature, ``v1,<base64>``: HMAC-SHA256 of ``{msg_id}.{timestamp}.{body}``."""
    inner_pad, outer_pad = _pads(secret)
    inner = inner_pad.copy()
    inner.update(f"{msg_id}.{timestamp}.".encode())
    inner.update(body)
    outer = outer_pad.copy()
    outer.update(inner.digest())
    return SIGNATURE_SCHEME + base64.b64encode(outer.digest()).decode()


def signature_header(keys: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per secret, space-separated."""
    if len(keys) == 1:
        return sign(keys[0], msg_id, timestamp, body)
    return " ".join([sign(secret, msg_id, timestamp, body) for secret in keys])
