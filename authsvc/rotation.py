"""Refresh-token rotation with reuse detection (RFC 9700 §4.14.2, OAuth 2.1 §4.3.1).

Trading refresh token N marks it used and issues N+1 in the same family, in one short transaction
whose compare-and-set (`UPDATE … WHERE used_at IS NULL`, checked by row count) lets exactly one
caller win. Presenting a used token again is reuse: the whole family is revoked, a
`refresh_reuse_detected` audit event is written, and the caller gets invalid_grant.

A concurrent duplicate is indistinguishable from a replay by an attacker, so it is treated as one:
the family dies. Deployments whose clients retry in flight can enable a short grace window, in which
a retry of the same parent gets the same child back; the child is derived from the parent with an
HMAC, so it is never stored in plaintext.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from authsvc.context import AuthorityContext, append_events
from authsvc.errors import InvalidGrant
from authsvc.issuance import IssuedTokenPair, mint_access_token
from authsvc.scopes import narrow
from authsvc.storage.records import FamilyRecord, RefreshTokenRecord, RevocationEventRecord
from authsvc.tokens import opaque


class Refresh(Enum):
    """What presenting a refresh token means."""

    ROTATE = "rotate"  # fresh: trade it in
    GRACE_RETRY = "grace_retry"  # used moments ago: hand back the same child
    REUSE = "reuse"  # used before: revoke the family
    REVOKED = "revoked"  # family revoked: refuse, change nothing
    EXPIRED = "expired"  # family or token expired: refuse, change nothing
    WRONG_CLIENT = "wrong_client"  # issued to another client: refuse, change nothing
    NO_AUDIENCE = "no_audience"  # a family with no audience: refuse, change nothing


def classify_refresh(
    token: RefreshTokenRecord,
    family: FamilyRecord,
    *,
    now: float,
    client_id: str,
    grace_seconds: int,
) -> Refresh:
    """The pure decision behind `rotate`: one verdict per way a refresh can go.

    Another client's token is judged first, before its family's state, so that a client learns
    nothing of a token that is not its own (as introspection tells it only `active: false`).

    A used token in a live family is reuse however long ago its own expiry passed: the family
    lives on because it was rotated since, perhaps by whoever stole the token, and the holder
    coming back with it is how the theft shows (RFC 9700 §4.14.2). Judged by the token's expiry
    first, the replay would only be "expired", and the thief would keep the session.

    A family with no audience, started before registration required one, could only yield an
    access token with `"aud": []`, which RFC 9068 §2.2 forbids and every verifier refuses: a
    rotation or a grace retry is refused, with nothing changed. Not revoked: its tokens are
    accepted nowhere, so there is nothing to tell the verifiers, and it ends at its idle expiry.
    Reuse is still reuse."""
    if client_id and client_id != family.client_id:
        return Refresh.WRONG_CLIENT
    if family.revoked_at is not None:
        return Refresh.REVOKED
    if min(family.expires_at, family.idle_expires_at) <= now:
        return Refresh.EXPIRED
    if token.used_at is not None:
        if not (grace_seconds and now - token.used_at <= grace_seconds):
            return Refresh.REUSE
        verdict = Refresh.GRACE_RETRY
    elif token.expires_at <= now:
        return Refresh.EXPIRED
    else:
        verdict = Refresh.ROTATE
    return verdict if family.audience else Refresh.NO_AUDIENCE


_REFUSALS = {
    Refresh.REVOKED: "refresh token revoked",
    Refresh.EXPIRED: "refresh token expired",
    Refresh.WRONG_CLIENT: "refresh token unknown",  # the words for a token that does not exist
    Refresh.REUSE: "refresh token reused; the session was revoked",
    Refresh.NO_AUDIENCE: "this session has no audience to issue tokens for: sign in again",
}


async def rotate(
    ctx: AuthorityContext,
    refresh_token: str,
    *,
    client_id: str = "",
    scope: Sequence[str] = (),
) -> IssuedTokenPair:
    """Trade `refresh_token` for a new pair; InvalidGrant for every refusal."""
    if not opaque.looks_like(opaque.Kind.REFRESH_TOKEN, refresh_token):
        raise InvalidGrant("refresh token unknown")
    digest = opaque.digest(refresh_token)
    child = opaque.derive_secret(opaque.Kind.REFRESH_TOKEN, ctx.grace_key, refresh_token)
    now = ctx.clock.now()
    s = ctx.settings
    events: list[RevocationEventRecord] = []
    async with ctx.store.transaction() as tx:
        found = await tx.refresh_token_with_family(digest)
        if found is None:
            raise InvalidGrant("refresh token unknown")
        token, family = found
        verdict = classify_refresh(
            token, family, now=now, client_id=client_id, grace_seconds=s.refresh_grace_seconds
        )
        if verdict is Refresh.ROTATE and not await tx.mark_refresh_token_used(digest, now):
            # Lost the compare-and-set to a concurrent rotation. On PostgreSQL the UPDATE waited
            # for the winner's commit; judged again as it is now, the token is used, so a retry
            # in flight gets the grace window just as one sent a moment later does (on SQLite
            # one unit runs at a time, and the retry already reads the winner's write).
            verdict = Refresh.REUSE
            if s.refresh_grace_seconds and (found := await tx.refresh_token_with_family(digest)):
                token, family = found
                again = classify_refresh(
                    token,
                    family,
                    now=now,
                    client_id=client_id,
                    grace_seconds=s.refresh_grace_seconds,
                )
                verdict = Refresh.REUSE if again is Refresh.ROTATE else again
        if token.used_at is not None and verdict in (Refresh.GRACE_RETRY, Refresh.NO_AUDIENCE):
            # A used token within the grace window whose child was used too is reuse, in a
            # family without an audience as in any other: reuse comes before that refusal.
            sibling = await tx.refresh_token_with_family(opaque.digest(child))
            if sibling is None or sibling[0].used_at is not None:
                verdict = Refresh.REUSE
        if verdict is Refresh.ROTATE:
            granted = narrow(scope, family.scope)
            idle_expires_at = min(now + s.refresh_idle_ttl, family.expires_at)
            await tx.insert_refresh_token(
                RefreshTokenRecord(
                    family_id=family.family_id,
                    issued_at=now,
                    used_at=None,
                    expires_at=idle_expires_at,
                    token_digest=opaque.digest(child),
                )
            )
            if not await tx.touch_family(family.family_id, now, idle_expires_at):
                # Revoked since it was read ("log out everywhere" committing meanwhile): refuse,
                # and the transaction takes back the compare-and-set and the child with it.
                raise InvalidGrant(_REFUSALS[Refresh.REVOKED])
        elif verdict is Refresh.GRACE_RETRY:
            granted = narrow(scope, family.scope)
        elif verdict is Refresh.REUSE:
            # Concurrent duplicates all end here; only the one that revokes tells the verifiers.
            if await tx.revoke_family(family.family_id, now, "refresh token reuse"):
                events = await append_events(
                    tx,
                    [ctx.revocation_event("family", family.family_id, now)],
                )
            await tx.append_audit(
                "refresh_reuse_detected",
                now,
                subject=family.subject,
                client_id=family.client_id,
                family_id=family.family_id,
                first_used_at=token.used_at,
            )
    if events:
        ctx.feed.published(events)
    if verdict not in (Refresh.ROTATE, Refresh.GRACE_RETRY):
        raise InvalidGrant(_REFUSALS[verdict])
    issued = mint_access_token(
        ctx,
        subject=family.subject,
        client_id=family.client_id,
        scope=granted,
        audience=family.audience,
        family_id=family.family_id,
    )
    return IssuedTokenPair(issued, family, child)
