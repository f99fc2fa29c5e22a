"""The local verifier: everything a protected service knows about tokens, put together per call.

It gathers the facts for `decide` (method rule, bearer token, cached or fresh verification,
revocation, stream silence) and returns the verdict. No I/O happens here: keys and revocations
are kept current by a feed (see `_feed`), and the interceptors apply the verdict.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._cache import VerificationCache
from ._clock import Clock
from ._errors import InvalidToken
from ._jwks import KeyCache
from ._policy import CallFacts, Verdict, WhenStale, bearer_token, decide
from ._revocations import RevocationSet
from ._scopes import MethodScopes
from ._verification import VerifiedToken, verify_access_token

__all__ = ["LocalVerifier"]


class LocalVerifier:
    """Decides calls against the keys, revocations and method rules it holds."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        scopes: MethodScopes,
        keys: KeyCache,
        revocations: RevocationSet,
        cache: VerificationCache,
        clock: Clock,
        leeway: float,
        staleness_bound: float,
        when_stale: WhenStale,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.scopes = scopes
        self.keys = keys
        self.revocations = revocations
        self.cache = cache
        self.clock = clock
        self.leeway = leeway
        self.staleness_bound = staleness_bound
        self.when_stale = when_stale

    def check(self, method: str, metadata: Iterable[tuple[str, str | bytes]]) -> Verdict:
        """The verdict on a call to `method` carrying `metadata`."""
        public, required = self.scopes.rule(method)
        if public:
            return self._decide(CallFacts(public=True))
        try:
            token = bearer_token(metadata)
        except InvalidToken as exc:
            return self._decide(CallFacts(False, exc, required_scopes=required))
        if token is None:
            return self._decide(CallFacts(False, None, required_scopes=required))
        verification = self.verify(token)
        revocation = None
        if isinstance(verification, VerifiedToken):
            revocation = self.revocations.revocation_of(verification.claims)
        facts = CallFacts(
            public=False,
            verification=verification,
            revocation=revocation,
            required_scopes=required,
            stream_silent_for=self.revocations.silent_for(),
        )
        return self._decide(facts)

    def verify(self, token: str) -> VerifiedToken | InvalidToken:
        """Signature and claims of `token`, from the cache when seen before with a key still
        trusted; the failure as a value otherwise. Revocation is not part of this."""
        now = self.clock.now()
        keys = self.keys.keys
        cached = self.cache.get(token, now)
        if cached is not None and cached.kid in keys:
            return cached
        try:
            verified = verify_access_token(
                token,
                keys=keys,
                issuer=self.issuer,
                audience=self.audience,
                now=now,
                leeway=self.leeway,
            )
        except InvalidToken as exc:
            return exc
        self.cache.put(token, verified)
        return verified

    def forget_key(self, kid: str) -> None:
        """Stop trusting `kid` now, and every cached verification it made."""
        self.keys.forget(kid)
        self.cache.discard_key(kid)

    def _decide(self, facts: CallFacts) -> Verdict:
        return decide(facts, staleness_bound=self.staleness_bound, when_stale=self.when_stale)
