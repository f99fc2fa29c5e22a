"""Opaque secrets: refresh tokens, client secrets, authorization codes.

Each is 256 random bits, base64url without padding, behind a fixed prefix so that secret scanners can
recognise a leaked one (the GitHub-style `prefix_` convention). Only the SHA-256 of a secret is stored:
256 bits of entropy need no slow hash, and a lookup by digest is one indexed equality.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from enum import Enum


class Kind(Enum):
    """What an opaque secret is, told by its prefix."""

    REFRESH_TOKEN = "asrt_"  # noqa: S105 (a prefix, not a secret)
    CLIENT_SECRET = "asc_"  # noqa: S105 (a prefix, not a secret)
    AUTHORIZATION_CODE = "asac_"


_BODY_LENGTH = 43  # base64url of 32 bytes, unpadded
_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def new_secret(kind: Kind) -> str:
    """A fresh secret of `kind`: prefix + 256 random bits."""
    return kind.value + _encode(secrets.token_bytes(32))


def derive_secret(kind: Kind, key: bytes, parent: str) -> str:
    """A secret derived deterministically from `parent` under `key` (HMAC-SHA256).

    Used for the rotation grace window: a retry of the same parent gets the same child back without
    the child ever being stored in plaintext.
    """
    return kind.value + _encode(hmac.new(key, parent.encode(), hashlib.sha256).digest())


def looks_like(kind: Kind, value: str) -> bool:
    """Cheap shape check, before any database work: right prefix, right length, right alphabet."""
    body = value[len(kind.value) :]
    return value.startswith(kind.value) and len(body) == _BODY_LENGTH and _ALPHABET.issuperset(body)


def digest(value: str) -> bytes:
    """The stored form of a secret: SHA-256 of its text."""
    return hashlib.sha256(value.encode()).digest()


def matches(value: str, stored_digest: bytes) -> bool:
    """Constant-time comparison of a presented secret with a stored digest."""
    return hmac.compare_digest(digest(value), stored_digest)
