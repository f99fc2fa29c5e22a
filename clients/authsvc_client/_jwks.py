"""The local cache of authsvc's public keys (RFC 7517 JWK Set, as `PublishKeys` serves it).

The cache is refreshed on a schedule (the `max_age_seconds` the server sends) and, when a token
names a `kid` the cache does not hold, at most once per minimum interval: a flood of tokens with
made-up `kid`s costs one fetch per interval, not one per token. A failed refresh keeps the keys
already held, so verification survives an authsvc outage.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey

from ._clock import Clock
from .v1 import authsvc_pb2

__all__ = ["KeyCache", "PublishedKey", "parse_jwks"]

# The key types authsvc signs with, and the one algorithm family each may verify.
_SUPPORTED = {("OKP", "Ed25519"), ("EC", "P-256")}


@dataclass(frozen=True)
class PublishedKey:
    """One public verification key: its `kid`, the joserfc key object, the algorithm it was
    published for (RFC 7517 §4.4, enforced per RFC 8725 §3.1) and its key-ring state."""

    kid: str
    key: OKPKey | ECKey = field(repr=False)
    alg: str
    state: str = ""


def parse_jwks(jwks: str | Mapping[str, Any]) -> dict[str, PublishedKey]:
    """Parse an RFC 7517 JWK Set into verification keys by `kid`.

    Keys that are not Ed25519 or P-256 signature keys, carry private material or lack a `kid` are
    skipped: they could never verify one of our tokens, and skipping them means a stray entry
    cannot stop the rest of the set from loading.
    """
    document = json.loads(jwks) if isinstance(jwks, str) else jwks
    entries = document.get("keys", []) if isinstance(document, Mapping) else []
    return _published(entry for entry in entries if isinstance(entry, Mapping))


def keys_from_response(response: authsvc_pb2.PublishKeysResponse) -> dict[str, PublishedKey]:
    """The verification keys of a `PublishKeys` answer, from its structured `keys` field."""
    entries = []
    for key in response.keys:
        entry = {"kty": key.kty, "crv": key.crv, "x": key.x, "kid": key.kid, "alg": key.alg}
        if key.y:
            entry["y"] = key.y
        if key.use:
            entry["use"] = key.use
        if key.state:
            entry["state"] = key.state
        entries.append(entry)
    return _published(entries)


def _published(entries: Iterable[Mapping[str, Any]]) -> dict[str, PublishedKey]:
    keys: dict[str, PublishedKey] = {}
    for entry in entries:
        key = _import(entry)
        if key is not None:
            keys[key.kid] = key
    return keys


def _import(entry: Mapping[str, Any]) -> PublishedKey | None:
    kid, alg = entry.get("kid"), entry.get("alg", "")
    if not isinstance(kid, str) or not kid or not isinstance(alg, str):
        return None
    if (entry.get("kty"), entry.get("crv")) not in _SUPPORTED or "d" in entry:
        return None
    if entry.get("use", "sig") != "sig":
        return None
    public = {k: entry[k] for k in ("kty", "crv", "x", "y") if k in entry}
    try:
        key: OKPKey | ECKey = (
            OKPKey.import_key(public) if public["kty"] == "OKP" else ECKey.import_key(public)
        )
    except (JoseError, ValueError, TypeError):
        return None
    state = entry.get("state", "")
    return PublishedKey(kid=kid, key=key, alg=alg, state=state if isinstance(state, str) else "")


#: Purged kids remembered (`KeyCache.forget`): years of daily rotations.
MAX_PURGED_KIDS = 4096


class KeyCache:
    """The keys a verifier trusts now, when to fetch them again, and whether it may fetch now.

    Holds no I/O: a feed (see `_feed`) fetches and calls `install`. Safe to use from several
    threads; `keys` is replaced as a whole, never mutated in place.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        min_refresh_interval: float = 10.0,
        default_max_age: float = 300.0,
    ) -> None:
        self._clock = clock
        self._min_refresh_interval = min_refresh_interval
        self._default_max_age = default_max_age
        self._lock = threading.Lock()
        self._keys: Mapping[str, PublishedKey] = MappingProxyType({})
        # Kids purged from the key ring, newest last: never trusted again, even from a key set
        # fetched before the purge and installed after it. A purge is final, so the ring never
        # publishes one of them again; bounded, since purges come one per rotation.
        self._purged: dict[str, None] = {}
        self._loaded = False
        self._refresh_due_at = float("-inf")
        self._last_attempt_at = float("-inf")

    @property
    def keys(self) -> Mapping[str, PublishedKey]:
        """A read-only snapshot of the trusted keys by `kid`."""
        return self._keys

    @property
    def loaded(self) -> bool:
        """Whether a key set was ever installed."""
        return self._loaded

    def install(self, keys: Mapping[str, PublishedKey], max_age: float | None = None) -> None:
        """Trust exactly `keys` from now, until `max_age` seconds from now, but for any key
        purged meanwhile (`forget`)."""
        age = max_age if max_age and max_age > 0 else self._default_max_age
        with self._lock:
            self._keys = MappingProxyType(
                {kid: key for kid, key in keys.items() if kid not in self._purged}
            )
            self._loaded = True
            self._refresh_due_at = self._clock.now() + age

    def forget(self, kid: str) -> None:
        """Stop trusting one key at once and for good (it was purged from the key ring)."""
        with self._lock:
            self._purged[kid] = None
            while len(self._purged) > MAX_PURGED_KIDS:
                del self._purged[next(iter(self._purged))]
            if kid in self._keys:
                self._keys = MappingProxyType({k: v for k, v in self._keys.items() if k != kid})

    def refresh_due(self) -> bool:
        """Whether the cached set is older than the server said it may be cached."""
        return self._clock.now() >= self._refresh_due_at

    def seconds_until_refresh(self) -> float:
        """How long the scheduled refresh may wait, never negative."""
        return max(0.0, self._refresh_due_at - self._clock.now())

    def claim_refresh(self) -> bool:
        """Record a fetch attempt and say whether one may happen now.

        At most one attempt per minimum interval, whatever asks for it (a token with an unknown
        `kid`, a failed fetch being retried). Every attempt counts, failed ones included, so an
        unreachable authsvc is not hammered.
        """
        with self._lock:
            now = self._clock.now()
            if now - self._last_attempt_at < self._min_refresh_interval:
                return False
            self._last_attempt_at = now
            return True

    def note_attempt(self) -> None:
        """Record a fetch attempt made on schedule, so an unknown `kid` right after waits."""
        with self._lock:
            self._last_attempt_at = self._clock.now()
