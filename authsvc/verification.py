"""Verify: an access token's signature and claims, then this replica's revocation state.

The checks are `authsvc_client.verify_access_token`, the one implementation of the rules every
verifier of our tokens runs (RFC 8725, RFC 9068 §4); this module adds what only the authority
holds (its key ring, its revocation state, a cache of verified tokens) and turns the client's
refusals into authsvc's `InvalidToken`.

Never touches the database. A token verified before costs a dictionary lookup instead of a signature
check; the time, audience, scope and revocation checks run on every call, cached or not, so a cache
entry can never outlive the token's expiry or a revocation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import authsvc_client
from authsvc_client import check_claims, verify_access_token

from authsvc.context import AuthorityContext
from authsvc.errors import InsufficientScope, InvalidRequest, InvalidToken
from authsvc.tokens.access import AccessClaims

CACHE_ENTRIES = 100_000


class VerifiedTokenCache:
    """Tokens `verify_access_token` accepted, with their claims, keyed by the token's SHA-256,
    so the cache holds no usable token (and 32 bytes a key instead of the whole token).

    Bounded: when full, the oldest half is dropped (insertion order), which costs nothing per hit.
    """

    def __init__(self, capacity: int = CACHE_ENTRIES) -> None:
        self._capacity = capacity
        self._entries: dict[bytes, AccessClaims] = {}

    def __repr__(self) -> str:
        return f"VerifiedTokenCache(entries={len(self._entries)})"

    def get(self, token: str) -> AccessClaims | None:
        return self._entries.get(_key(token))

    def put(self, token: str, claims: AccessClaims) -> None:
        if len(self._entries) >= self._capacity:
            for stale in list(self._entries)[: self._capacity // 2]:
                del self._entries[stale]
        self._entries[_key(token)] = claims

    def clear(self) -> None:
        self._entries.clear()


def _key(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def check_scopes(claims: AccessClaims, required_scopes: Sequence[str]) -> None:
    """Every required scope was granted (RFC 6750 §3.1 insufficient_scope otherwise)."""
    missing = [scope for scope in required_scopes if scope not in claims.scope]
    if missing:
        raise InsufficientScope(f"token lacks scope: {' '.join(missing)}")


class Verifier:
    """Checks access tokens for the Verify RPC, introspection and this service's own callers."""

    def __init__(self, ctx: AuthorityContext, cache: VerifiedTokenCache | None = None) -> None:
        self._ctx = ctx
        self._cache = cache or VerifiedTokenCache()

    def verify(
        self, token: str, *, audience: str | None, required_scopes: Sequence[str] = ()
    ) -> AccessClaims:
        """The claims of a valid, unrevoked token; InvalidToken or InsufficientScope otherwise.

        `audience=None` skips the audience check (introspection reports `aud` instead). A cache
        miss runs every check; a hit runs those that depend on the time and the audience.
        """
        if not token:
            raise InvalidRequest("token is required")
        ctx = self._ctx
        settings = ctx.settings
        now = ctx.clock.now()
        claims = self._cache.get(token)
        try:
            if claims is None:
                verified = verify_access_token(
                    token,
                    keys=ctx.key_ring.verification_keys,
                    issuer=settings.issuer,
                    audience=audience,
                    now=now,
                    leeway=settings.leeway,
                )
                claims = AccessClaims.from_verified(verified.claims)
                self._cache.put(token, claims)
            else:
                check_claims(
                    claims,
                    issuer=settings.issuer,
                    audience=audience,
                    now=now,
                    leeway=settings.leeway,
                )
        except authsvc_client.InvalidToken as exc:
            # The one place authsvc_client's refusals become authsvc's. An unknown kid is an
            # UnknownSigningKey to a client, which may fetch keys again; the authority holds
            # every key it trusts, so here it is invalid like any other refusal.
            raise InvalidToken(exc.description) from exc
        reason = ctx.revocations.revoked(claims)
        if reason is not None:
            raise InvalidToken(f"token revoked ({reason})")
        check_scopes(claims, required_scopes)
        return claims

    def forget_keys(self) -> None:
        """Drop cached verdicts after a key is purged, so its tokens are checked again."""
        self._cache.clear()
