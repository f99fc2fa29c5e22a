"""Revocation: one family, one token (RFC 7009), every family of a subject (and, for
`client_registry.revoke_client`, the events of every family of a client).

Each writes a revocation event in the same transaction as the change, then applies it to this
replica's state before returning, so a `Verify` right after the reply already says revoked. Revoking
a family or a token that is revoked already writes nothing: no second event, no second audit row.
"""

from __future__ import annotations

from collections.abc import Sequence

import authsvc_client
from authsvc_client import verify_access_token

from authsvc.context import AuthorityContext, append_events
from authsvc.errors import InvalidRequest
from authsvc.storage.records import FamilyRecord, RevocationEventRecord
from authsvc.storage.sql import Tx
from authsvc.subjects import check_named_subject
from authsvc.tokens import opaque

MAX_REASON = 200

#: The events of a bulk revocation are built and appended this many at a time. A bulk
#: transaction runs its statements on the driver's thread (SQLite) or awaits the server
#: (PostgreSQL), so the event loop serves other calls between two statements; the Python that
#: builds 40,000 events and their rows in one go held it for half a second.
BULK_EVENTS = 1000


def bounded_reason(reason: str, default: str) -> str:
    """The reason to record: the caller's, at most `MAX_REASON` characters, or `default`."""
    if len(reason) > MAX_REASON:
        raise InvalidRequest(f"reason is at most {MAX_REASON} characters")
    return reason or default


async def append_family_events(
    ctx: AuthorityContext, tx: Tx, family_ids: Sequence[str], at: float
) -> list[RevocationEventRecord]:
    """An event for each family of a bulk revocation, besides the subject's or the client's "not
    before": a token minted for one of them after the revocation reached the replica (a rotation
    that read its family just before, or a login earlier in the same second, whose `iat` was moved
    past an earlier revocation's second) would escape a check by `iat` alone. Appended
    `BULK_EVENTS` at a time."""
    events: list[RevocationEventRecord] = []
    for start in range(0, len(family_ids), BULK_EVENTS):
        chunk = family_ids[start : start + BULK_EVENTS]
        events += await append_events(
            tx, [ctx.revocation_event("family", family_id, at) for family_id in chunk]
        )
    return events


async def revoke_family(
    ctx: AuthorityContext, family_id: str, *, reason: str = "", client_id: str = ""
) -> bool:
    """Revoke one family; False when it was already revoked, unknown, or (with `client_id`)
    belongs to another client."""
    reason = bounded_reason(reason, "revoked")
    now = ctx.clock.now()
    async with ctx.store.transaction() as tx:
        family: FamilyRecord | None = await tx.get_family(family_id) if family_id else None
        if family is None or (client_id and family.client_id != client_id):
            return False
        if not await tx.revoke_family(family_id, now, reason):
            revoked_at = family.revoked_at
            if revoked_at is None:  # revoked by a transaction that committed after our read
                revoked_at = now
            # Revoked already, perhaps on another replica whose event this one's feed has not
            # read yet: nothing new to write, but a Verify here right after must say revoked.
            ctx.revocations.apply(ctx.revocation_event("family", family_id, revoked_at))
            return False
        events = await append_events(tx, [ctx.revocation_event("family", family_id, now)])
        await tx.append_audit(
            "family_revoked",
            now,
            subject=family.subject,
            client_id=family.client_id,
            family_id=family_id,
            reason=reason,
        )
    ctx.feed.published(events)
    return True


async def revoke_subject(ctx: AuthorityContext, subject: str, *, reason: str = "") -> int:
    """ "Log out everywhere": every live family, every access token issued up to now, and every
    authorization code not yet redeemed, which would otherwise start a new session after it.
    Each revoked family gets an event of its own (`append_family_events` says why)."""
    check_named_subject(subject)
    reason = bounded_reason(reason, "subject revoked")
    now = ctx.clock.now()
    # A bulk transaction: a subject may have thousands of families (BULK_EVENTS says why).
    async with ctx.store.transaction(bulk=True) as tx:
        # Codes first: a redemption in flight holds its code's row, so this waits for it to
        # commit, and the families read next include the one it started.
        await tx.discard_unused_codes(subject=subject)
        revoked = await tx.revoke_families_where(now, reason, subject=subject)
        not_before = ctx.revocations.not_before_for(now)
        events = await append_events(
            tx, [ctx.revocation_event("subject", subject, now, not_before=not_before)]
        )
        events += await append_family_events(ctx, tx, revoked, now)
        await tx.append_audit("subject_revoked", now, subject=subject, families=len(revoked))
    ctx.feed.published(events)
    return len(revoked)


async def revoke_token(
    ctx: AuthorityContext, token: str, *, client_id: str = "", token_type_hint: str = ""
) -> None:
    """RFC 7009 §2.1: revoke a refresh token (and its family) or an access token (by jti).

    Unknown, invalid or foreign tokens succeed silently (§2.2): the caller learns nothing.
    """
    if token_type_hint not in {"", "access_token", "refresh_token"}:
        token_type_hint = ""  # §2.1: an unknown hint is ignored
    if opaque.looks_like(opaque.Kind.REFRESH_TOKEN, token):
        async with ctx.store.transaction(readonly=True) as tx:
            found = await tx.refresh_token_with_family(opaque.digest(token))
        if found is not None:
            await revoke_family(
                ctx, found[1].family_id, reason="refresh token revoked", client_id=client_id
            )
        return
    now = ctx.clock.now()
    try:
        claims = verify_access_token(
            token,
            keys=ctx.key_ring.verification_keys,
            issuer=ctx.settings.issuer,
            audience=None,
            now=now,
            leeway=ctx.settings.leeway,
        ).claims
    except authsvc_client.InvalidToken:
        return  # §2.2: nothing to revoke, and the caller is not told why
    if client_id and claims.client_id != client_id:
        return
    expires_at = claims.exp + ctx.settings.leeway
    event = ctx.revocation_event("jti", claims.jti, now, expires_at=expires_at)
    async with ctx.store.transaction() as tx:
        events = await append_events(tx, [event])
        if events:
            await tx.append_audit(
                "access_token_revoked",
                now,
                subject=claims.sub,
                client_id=claims.client_id,
                jti=claims.jti,
            )
    if events:
        ctx.feed.published(events)
    else:
        # Revoked already: the same answer (§2.2), and nothing new to stream or audit. Perhaps on
        # another replica, whose event this one's feed may not have read yet: learn it now.
        ctx.revocations.apply(event)


async def list_sessions(ctx: AuthorityContext, subject: str) -> list[FamilyRecord]:
    """A subject's live families, oldest first."""
    check_named_subject(subject)
    async with ctx.store.transaction(readonly=True) as tx:
        return await tx.live_families(subject, ctx.clock.now())
