"""The verification cache: a token seen before costs a dictionary lookup, not a signature check.

Entries are keyed by the SHA-256 of the token (the cache never holds a usable token), bounded in
number (least recently used first out), and never outlive the token's `exp`. A hit is only the
signature and claims check; revocation and the key still being trusted are checked on every
call by the verifier, so a token revoked after it was cached is refused all the same.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from ._verification import VerifiedToken

__all__ = ["VerificationCache"]


class VerificationCache:
    """A bounded map from token digest to its verified claims, safe across threads."""

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must not be negative")
        self._max_entries = max_entries
        self._entries: OrderedDict[bytes, VerifiedToken] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, now: float) -> VerifiedToken | None:
        """The cached verification of `token`, or None if unknown or expired at `now`."""
        digest = _digest(token)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if now >= entry.claims.exp:
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return entry

    def put(self, token: str, verified: VerifiedToken) -> None:
        """Remember a successful verification until the token expires."""
        if self._max_entries == 0:
            return
        digest = _digest(token)
        with self._lock:
            self._entries[digest] = verified
            self._entries.move_to_end(digest)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def discard_key(self, kid: str) -> None:
        """Forget every token signed by `kid` (the key was purged)."""
        with self._lock:
            for digest in [d for d, v in self._entries.items() if v.kid == kid]:
                del self._entries[digest]

    def prune(self, now: float) -> None:
        """Drop every entry whose token has expired."""
        with self._lock:
            for digest in [d for d, v in self._entries.items() if now >= v.claims.exp]:
                del self._entries[digest]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
