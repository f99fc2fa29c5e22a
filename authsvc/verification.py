"""Verify: an access token's signature and claims, then this replica's revocation state.

Never touches the database. A token verified before costs a dictionary lookup instead of a signature
check; the time, audience, scope and revocation checks run on every call, cached or not, so a cache
entry can never outlive the token's expiry or a revocation.
"""

from __future__ import annotations

from collections.abc import Sequence

from authsvc.context import AuthorityContext
from authsvc.errors import InsufficientScope, InvalidRequest, InvalidToken
from authsvc.tokens.access import AccessClaims, check_access_token, check_times

CACHE_ENTRIES = 100_000


class VerifiedTokenCache:
    """Tokens whose signature and issuer have been checked, keyed by the token itself.

    Bounded: when full, the oldest half is dropped (insertion order), which costs nothing per hit.
    """

    def __init__(self, capacity: int = CACHE_ENTRIES) -> None:
        self._capacity = capacity
        self._entries: dict[str, AccessClaims] = {}

    def __repr__(self) -> str:
        return f"VerifiedTokenCache(entries={len(self._entries)})"

    def get(self, token: str) -> AccessClaims | None:
        return self._entries.get(token)

    def put(self, token: str, claims: AccessClaims) -> None:
        if len(self._entries) >= self._capacity:
            for stale in list(self._entries)[: self._capacity // 2]:
                del self._entries[stale]
        self._entries[token] = claims

    def clear(self) -> None:
        self._entries.clear()


def check_grants(
    claims: AccessClaims, *, audience: str | None, required_scopes: Sequence[str]
) -> None:
    """The per-call checks on already-verified claims: audience, then scopes (RFC 6750 §3.1)."""
    if audience is not None and audience not in claims.aud:
        raise InvalidToken("token audience not accepted")
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

        `audience=None` skips the audience check (introspection reports `aud` instead).
        """
        if not token:
            raise InvalidRequest("token is required")
        ctx = self._ctx
        now = ctx.clock.now()
        claims = self._cache.get(token)
        if claims is None:
            claims = check_access_token(
                token,
                ctx.key_ring.verification_keys,
                issuer=ctx.settings.issuer,
                now=now,
                leeway=ctx.settings.leeway,
            )
            self._cache.put(token, claims)
        else:
            check_times(claims, now=now, leeway=ctx.settings.leeway)
        reason = ctx.revocations.revoked(claims)
        if reason is not None:
            raise InvalidToken(f"token revoked ({reason})")
        check_grants(claims, audience=audience, required_scopes=required_scopes)
        return claims

    def forget_keys(self) -> None:
        """Drop cached verdicts after a key is purged, so its tokens are checked again."""
        self._cache.clear()
