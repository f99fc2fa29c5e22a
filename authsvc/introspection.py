"""Token introspection, RFC 7662, for access and refresh tokens.

An inactive token answers `active: false` and nothing else (§2.2), whatever the reason: unknown,
expired, revoked, malformed, or issued to another client than the one asking.
"""

from __future__ import annotations

from dataclasses import dataclass

from authsvc.context import AuthorityContext
from authsvc.errors import AuthError
from authsvc.tokens import opaque
from authsvc.verification import Verifier


@dataclass(frozen=True)
class Introspection:
    """RFC 7662 §2.2 response members."""

    active: bool
    token_type: str = ""
    scope: tuple[str, ...] = ()
    client_id: str = ""
    sub: str = ""
    aud: tuple[str, ...] = ()
    iss: str = ""
    exp: int = 0
    iat: int = 0
    nbf: int = 0
    jti: str = ""
    sid: str = ""


INACTIVE = Introspection(active=False)


async def introspect(
    ctx: AuthorityContext, verifier: Verifier, token: str, *, client_id: str = ""
) -> Introspection:
    """What `token` is, if active. `token_type_hint` is unnecessary: the prefix tells them apart."""
    if opaque.looks_like(opaque.Kind.REFRESH_TOKEN, token):
        result = await _introspect_refresh(ctx, token)
    else:
        result = _introspect_access(verifier, token)
    if client_id and result.client_id != client_id:
        return INACTIVE
    return result


def _introspect_access(verifier: Verifier, token: str) -> Introspection:
    try:
        claims = verifier.verify(token, audience=None)
    except AuthError:
        return INACTIVE
    return Introspection(
        active=True,
        token_type="access_token",  # noqa: S106
        scope=claims.scope,
        client_id=claims.client_id,
        sub=claims.sub,
        aud=claims.aud,
        iss=claims.iss,
        exp=claims.exp,
        iat=claims.iat,
        nbf=claims.nbf,
        jti=claims.jti,
        sid=claims.sid,
    )


async def _introspect_refresh(ctx: AuthorityContext, token: str) -> Introspection:
    async with ctx.store.transaction(readonly=True) as tx:
        found = await tx.refresh_token_with_family(opaque.digest(token))
    if found is None:
        return INACTIVE
    record, family = found
    now = ctx.clock.now()
    expires_at = min(record.expires_at, family.expires_at, family.idle_expires_at)
    if record.used_at is not None or family.revoked_at is not None or expires_at <= now:
        return INACTIVE
    return Introspection(
        active=True,
        token_type="refresh_token",  # noqa: S106
        scope=family.scope,
        client_id=family.client_id,
        sub=family.subject,
        aud=family.audience,
        iss=ctx.settings.issuer,
        exp=int(expires_at),
        iat=int(record.issued_at),
        sid=family.family_id,
    )
