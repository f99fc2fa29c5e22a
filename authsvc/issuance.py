"""Minting tokens: user token pairs in a new family, and client-credentials tokens (RFC 6749 §4.4)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from authsvc.client_registry import authenticate, require_grant
from authsvc.context import AuthorityContext, new_id
from authsvc.errors import InvalidClient, InvalidRequest
from authsvc.scopes import grant, grant_audience
from authsvc.storage.records import ClientRecord, FamilyRecord, RefreshTokenRecord
from authsvc.storage.sql import Tx
from authsvc.subjects import check_subject
from authsvc.tokens import access, opaque


@dataclass(frozen=True)
class IssuedAccessToken:
    token: str = field(repr=False)
    claims: access.AccessClaims
    expires_in: int


@dataclass(frozen=True)
class IssuedTokenPair:
    access: IssuedAccessToken
    family: FamilyRecord
    refresh_token: str = field(repr=False)

    @property
    def refresh_expires_in(self) -> int:
        if not self.refresh_token:
            return 0
        return max(0, int(self.family.expires_at - self.access.claims.iat))


def mint_access_token(
    ctx: AuthorityContext,
    *,
    subject: str,
    client_id: str,
    scope: Sequence[str],
    audience: Sequence[str],
    family_id: str = "",
) -> IssuedAccessToken:
    """Sign an RFC 9068 access token with the active key. No I/O.

    `iat` is whole seconds (RFC 7519 NumericDate, as every verifier expects) while a subject or
    client revocation covers `iat <= not_before`. A token minted in the same second as such a
    revocation, but after it, therefore starts at the next second: otherwise it would be born
    revoked. A second revocation in that second covers the tokens minted between the two
    (`RevocationState.not_before_for`), so the next ones may start two seconds ahead. Strict
    verifiers with no leeway may see such a token as not yet valid for that long.
    """
    if not audience:
        # RFC 9068 §2.2 requires `aud`, and every verifier refuses a token without one. Every
        # grant refuses this before it writes anything (`scopes.grant_audience`,
        # `rotation.classify_refresh`); this is the last line, for a caller that did not.
        raise ValueError("an access token needs an audience (RFC 9068 §2.2)")
    now = int(ctx.clock.now())
    floor = ctx.revocations.issued_after(subject, client_id)
    issued_at = max(now, floor) if floor is not None else now
    ttl = ctx.settings.access_token_ttl
    claims = access.AccessClaims(
        iss=ctx.settings.issuer,
        sub=subject,
        aud=tuple(audience),
        exp=issued_at + ttl,
        iat=issued_at,
        jti=new_id(),
        client_id=client_id,
        scope=tuple(scope),
        sid=family_id,
    )
    return IssuedAccessToken(ctx.key_ring.signer.access_tokens.sign(claims), claims, ttl)


async def start_family(
    ctx: AuthorityContext,
    tx: Tx,
    client: ClientRecord,
    *,
    subject: str,
    scope: Sequence[str],
    audience: Sequence[str],
    device_id: str,
) -> tuple[FamilyRecord, str]:
    """Insert a new family with its first refresh token; the family and the token.

    A client not registered for the refresh_token grant gets a family (its session, which
    revocation and ListSessions see) but no refresh token: "" is returned and nothing is stored.
    Refresh tokens exist only for clients allowed to use them, so `rotate` need not ask again.
    """
    now = ctx.clock.now()
    s = ctx.settings
    family = FamilyRecord(
        family_id=new_id(),
        subject=subject,
        client_id=client.client_id,
        device_id=device_id,
        scope=tuple(scope),
        audience=tuple(audience),
        created_at=now,
        last_used_at=now,
        expires_at=now + s.refresh_absolute_ttl,
        idle_expires_at=now + s.refresh_idle_ttl,
        revoked_at=None,
        revoke_reason=None,
    )
    await tx.insert_family(family)
    # RFC 9068 §5: a client's own tokens carry its id as `sub`, so a user whose subject is a
    # client's id would be that client to every resource server. Read after the insert: on
    # PostgreSQL a registration choosing the id holds off new families while it looks among
    # the subjects (`Tx.lock_new_families`), so of two racing, one always sees the other.
    if await tx.get_client(subject) is not None:
        raise InvalidRequest(
            "subject is a registered client's id, which that client's tokens carry as sub: "
            "give the user another subject"
        )
    if "refresh_token" not in client.grant_types:
        return family, ""
    refresh_token = opaque.new_secret(opaque.Kind.REFRESH_TOKEN)
    await tx.insert_refresh_token(
        RefreshTokenRecord(
            family_id=family.family_id,
            issued_at=now,
            used_at=None,
            expires_at=min(family.idle_expires_at, family.expires_at),
            token_digest=opaque.digest(refresh_token),
        )
    )
    return family, refresh_token


async def issue_token_pair(
    ctx: AuthorityContext,
    *,
    subject: str,
    client_id: str,
    scope: Sequence[str],
    audience: Sequence[str],
    device_id: str,
) -> IssuedTokenPair:
    """A new family for an already-authenticated user, committed before the tokens are returned."""
    check_subject(subject, device_id)
    async with ctx.store.transaction() as tx:
        client = await tx.get_client(client_id)
        if client is None or not client.enabled:
            raise InvalidClient("unknown or disabled client")
        require_grant(client, "refresh_token")
        granted_scope = grant(scope, client.scopes)
        granted_audience = grant_audience(audience, client.audiences)
        family, refresh_token = await start_family(
            ctx,
            tx,
            client,
            subject=subject,
            scope=granted_scope,
            audience=granted_audience,
            device_id=device_id,
        )
        await tx.append_audit(
            "token_pair_issued",
            ctx.clock.now(),
            subject=subject,
            client_id=client_id,
            family_id=family.family_id,
        )
    issued = mint_access_token(
        ctx,
        subject=subject,
        client_id=client_id,
        scope=granted_scope,
        audience=granted_audience,
        family_id=family.family_id,
    )
    return IssuedTokenPair(issued, family, refresh_token)


async def client_credentials(
    ctx: AuthorityContext,
    *,
    client_id: str,
    client_secret: str,
    scope: Sequence[str],
    audience: Sequence[str],
) -> IssuedAccessToken:
    """RFC 6749 §4.4: a confidential client trades its credentials for an access token only."""
    client = await authenticate(ctx, client_id, client_secret)
    if client.public:
        raise InvalidClient("public clients cannot use client credentials")
    require_grant(client, "client_credentials")
    granted_scope = grant(scope, client.scopes)
    granted_audience = grant_audience(audience, client.audiences)
    return mint_access_token(
        ctx,
        subject=client.client_id,
        client_id=client.client_id,
        scope=granted_scope,
        audience=granted_audience,
    )
