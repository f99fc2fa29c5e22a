"""Authorization codes for the code flow with PKCE (RFC 6749 §4.1, RFC 7636, OAuth 2.1 §4.1).

Codes are single-use, live at most 60 s, and are bound to the client, the exact redirect URI, the
user and an S256 challenge. An authorization request may leave the redirect URI out where the
client registered only one, not a loopback one (OAuth 2.1 §4.1.1), and then its token request may
too. One authorization request, named by its client and PKCE challenge, has one live code: the
same user's consent or sign-in posted again replaces it while it is unused, and gets none once it
is used (until its row is purged, an hour after the code expired). The user's Deny answers it
too (`deny_request`): it voids the unused code, and no code is issued for the request after it. A
second use fails and revokes the family issued from the first (RFC 6749 §4.1.2, RFC 9700 §4.5).
A wrong verifier burns the code, so verifiers cannot be guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from authsvc_client import redirect_uri_allowed

from authsvc import pkce
from authsvc.client_registry import require_grant
from authsvc.context import AuthorityContext, append_events
from authsvc.errors import AccessDenied, InvalidClient, InvalidGrant, InvalidRequest
from authsvc.issuance import IssuedTokenPair, mint_access_token, start_family
from authsvc.revocation_state import RevocationState
from authsvc.scopes import grant, grant_audience, narrow_audience
from authsvc.storage.records import AuthorizationCodeRecord, RevocationEventRecord
from authsvc.storage.sql import Tx
from authsvc.subjects import check_subject
from authsvc.tokens import opaque

REUSED = "authorization code already used; tokens issued from it were revoked"
#: A second code for one authorization request, which its PKCE challenge names, once the first
#: is used or went to another subject (a client reusing its code_verifier, against RFC 7636 §4.1).
ANSWERED = "this authorization request was answered already; start a new one"
MISMATCHED_REDIRECT_URI = "redirect_uri does not match the authorization request"


def authorization_redirect_refusal(
    registered: Sequence[str], redirect_uri: str, *, omitted: bool
) -> str | None:
    """Why a code may not be issued for a response to `redirect_uri`, or None when it may.

    It must be one of the client's `registered` URIs or, where the authorization request named
    none (`omitted`), the one URI a request may then imply (`redirect_uri_allowed`: OAuth 2.1
    §4.1.1, and never a loopback one).
    """
    if not redirect_uri:
        return "redirect_uri is required"
    if redirect_uri_allowed(registered, redirect_uri, sent=not omitted):
        return None
    if omitted:
        return "redirect_uri is required: the client has no single redirect URI to imply"
    return "redirect_uri does not match a registered one"


#: How much later than it was a sign-in's time may come back: it crosses the wire as whole
#: nanoseconds, and back into a float that holds a few tenths of a microsecond, one step later.
SIGN_IN_PRECISION = 1e-6


def sign_in_refusal(
    revocations: RevocationState,
    *,
    subject: str,
    client_id: str,
    authenticated_at: float,
    now: float,
    remembered_for: float,
    leeway: float,
) -> str | None:
    """Why a sign-in at `authenticated_at` may no longer yield a code at `now`, or None.

    A revocation of the subject ("log out everywhere") or of the client ends what was
    authenticated before it, as it ends the codes and tokens issued before it: a consent page
    left open across it must not start a session (RFC 9700 §4.14). `revocations` holds each
    revocation `remembered_for` seconds (`Settings.subject_revocation_memory`: at least a
    consent page's life, `SIGN_IN_LIFETIME`), so an older sign-in cannot be vouched for and is
    refused as well. So is one dated later than `now` by more than the clock `leeway` between
    replicas: authsvc dated it, so a later date is a caller's mistake (a unit, a made-up time),
    and no revocation could ever follow it.
    """
    if authenticated_at - now > leeway:
        return (
            "the sign-in is dated in the future; send AuthenticateUser's authenticated_at "
            "back unchanged"
        )
    if now - authenticated_at > remembered_for:
        return "the sign-in is too old; sign in again"
    # A revocation in the instant of the sign-in counts as after it, even when that instant
    # came back a step later.
    revoked = revocations.revoked_since(subject, client_id, authenticated_at - SIGN_IN_PRECISION)
    if revoked is not None:
        return f"{revoked} since the sign-in; sign in again"
    return None


def token_redirect_refusal(record: AuthorizationCodeRecord, presented: str) -> str | None:
    """Why a token request's redirect URI `presented` may not redeem the code `record`.

    OAuth 2.1 §4.1.3: the URI its response went to, character for character; or none, where
    the authorization request named none either.
    """
    if presented == record.redirect_uri or (not presented and not record.redirect_uri_sent):
        return None
    return MISMATCHED_REDIRECT_URI


@dataclass(frozen=True)
class IssuedCode:
    code: str = field(repr=False)
    expires_in: int


async def create_code(
    ctx: AuthorityContext,
    *,
    client_id: str,
    redirect_uri: str,
    subject: str,
    scope: Sequence[str],
    audience: Sequence[str],
    code_challenge: str,
    code_challenge_method: str,
    device_id: str = "",
    redirect_uri_omitted: bool = False,
    authenticated_at: float | None = None,
) -> IssuedCode:
    """Store a code for a user who has logged in and consented; the response goes to
    `redirect_uri`, which the authorization request named unless `redirect_uri_omitted`.

    `authenticated_at` is when the user signed in (`users.authenticate_user`); a revocation of
    the subject or client since refuses the code (`sign_in_refusal`). None, from a gateway older
    than the field, skips that check: such a gateway worked so before, and its codes still die
    with a revocation made after they exist (`discard_unused_codes`)."""
    check_subject(subject, device_id)
    if code_challenge_method not in pkce.SUPPORTED_METHODS:
        raise InvalidRequest("code_challenge_method must be S256")
    if not pkce.is_valid_challenge(code_challenge):
        raise InvalidRequest("code_challenge is missing or malformed")
    now = ctx.clock.now()
    code = opaque.new_secret(opaque.Kind.AUTHORIZATION_CODE)
    async with ctx.store.transaction() as tx:
        client = await tx.get_client(client_id)
        if client is None or not client.enabled:
            raise InvalidClient("unknown or disabled client")
        require_grant(client, "authorization_code")
        refusal = authorization_redirect_refusal(
            client.redirect_uris, redirect_uri, omitted=redirect_uri_omitted
        )
        if refusal is not None:
            raise InvalidRequest(refusal)
        if authenticated_at is not None:
            # From this replica's state, as Verify decides. A revocation committed after this
            # code discards it (`discard_unused_codes`); one committed just before and not yet
            # applied here (another replica's, until the feed reads it) is missed.
            refusal = sign_in_refusal(
                ctx.revocations,
                subject=subject,
                client_id=client_id,
                authenticated_at=authenticated_at,
                now=now,
                remembered_for=ctx.settings.subject_revocation_memory,
                leeway=ctx.settings.leeway,
            )
            if refusal is not None:
                raise AccessDenied(refusal)
        stored = await tx.insert_code(
            AuthorizationCodeRecord(
                client_id=client_id,
                redirect_uri=redirect_uri,
                subject=subject,
                scope=grant(scope, client.scopes),
                audience=grant_audience(audience, client.audiences),
                device_id=device_id,
                created_at=now,
                expires_at=now + ctx.settings.authorization_code_ttl,
                used_at=None,
                family_id=None,
                code_challenge=code_challenge,
                code_digest=opaque.digest(code),
                redirect_uri_sent=not redirect_uri_omitted,
            )
        )
        if not stored:
            raise InvalidRequest(ANSWERED)
    return IssuedCode(code, ctx.settings.authorization_code_ttl)


async def deny_request(
    ctx: AuthorityContext, *, client_id: str, subject: str, code_challenge: str
) -> None:
    """Record that `subject` denied the authorization request `code_challenge` names (RFC 6749
    §4.1.2.1 access_denied), so that its consent page's Allow, pressed after it (the back
    button, a second tab), gets no code. The answer is a used code that no one holds: it
    replaces an unused one the same subject's earlier Allow got (the last answer stands, as for
    Allow posted twice) and stays, as a redeemed code does, until it is purged an hour after it
    expires, long after the consent page's ticket has. A redeemed code, or another subject's,
    is left alone."""
    check_subject(subject)
    if not pkce.is_valid_challenge(code_challenge):
        raise InvalidRequest("code_challenge is missing or malformed")
    now = ctx.clock.now()
    async with ctx.store.transaction() as tx:
        client = await tx.get_client(client_id)
        if client is None or not client.enabled:
            raise InvalidClient("unknown or disabled client")
        await tx.insert_code(
            AuthorizationCodeRecord(
                client_id=client_id,
                redirect_uri="",
                subject=subject,
                scope=(),
                audience=(),
                device_id="",
                created_at=now,
                expires_at=now + ctx.settings.authorization_code_ttl,
                used_at=now,
                family_id=None,
                code_challenge=code_challenge,
                code_digest=opaque.digest(opaque.new_secret(opaque.Kind.AUTHORIZATION_CODE)),
            )
        )


async def exchange_code(
    ctx: AuthorityContext,
    *,
    client_id: str,
    code: str,
    redirect_uri: str,
    code_verifier: str,
    audience: Sequence[str] = (),
) -> IssuedTokenPair:
    """Redeem a code for a token pair; the client is already authenticated by the caller.

    The access token is for `audience`, each one the code was issued for (RFC 8707 §2.2), or
    for all of the code's when empty; the session keeps all of them, so a refresh is for all.
    Another answers InvalidTarget before the code is used, so a corrected request still works;
    only a request with the right verifier learns that, so a stolen code cannot probe them."""
    if not opaque.looks_like(opaque.Kind.AUTHORIZATION_CODE, code):
        raise InvalidGrant("authorization code unknown")
    if not code_verifier:
        raise InvalidRequest("code_verifier is required (PKCE)")
    digest = opaque.digest(code)
    now = ctx.clock.now()
    events: list[RevocationEventRecord] = []
    refusal: str | None = None
    async with ctx.store.transaction() as tx:
        record = await tx.get_code(digest)
        if record is None or record.client_id != client_id:
            raise InvalidGrant("authorization code unknown")
        if record.used_at is not None:
            events, refusal = await _refuse_reuse(ctx, tx, record, now), REUSED
        elif record.expires_at <= now:
            raise InvalidGrant("authorization code expired")
        elif mismatch := token_redirect_refusal(record, redirect_uri):
            raise InvalidGrant(mismatch)
        elif not await tx.mark_code_used(digest, now):
            # A concurrent redemption marked it first (on PostgreSQL both read it unused): this
            # is a second use all the same. Read again for the family the winner started. Gone
            # instead: its subject or client was revoked meanwhile, which discards it, or the
            # same request's next code replaced it.
            used = await tx.get_code(digest)
            if used is None:
                raise InvalidGrant("authorization code unknown")
            events, refusal = await _refuse_reuse(ctx, tx, used, now), REUSED
        elif not pkce.verifier_matches(code_verifier, record.code_challenge):
            refusal = "code_verifier does not match the code challenge"  # and the code is burnt
        else:
            # Raised inside the transaction, which rolls back: the code stays unused.
            access_audience = narrow_audience(audience, record.audience)
            client = await tx.get_client(client_id)
            if client is None or not client.enabled:
                raise InvalidClient("unknown or disabled client")
            family, refresh_token = await start_family(
                ctx,
                tx,
                client,
                subject=record.subject,
                scope=record.scope,
                # As at its creation: a code made before that refused no audience has none.
                audience=grant_audience((), record.audience),
                device_id=record.device_id,
            )
            await tx.set_code_family(digest, family.family_id)
            await tx.append_audit(
                "token_pair_issued",
                now,
                subject=record.subject,
                client_id=client_id,
                family_id=family.family_id,
                grant="authorization_code",
            )
    if events:
        ctx.feed.published(events)
    if refusal is not None:
        raise InvalidGrant(refusal)
    issued = mint_access_token(
        ctx,
        subject=family.subject,
        client_id=client_id,
        scope=family.scope,
        audience=access_audience,
        family_id=family.family_id,
    )
    return IssuedTokenPair(issued, family, refresh_token)


async def _refuse_reuse(
    ctx: AuthorityContext, tx: Tx, record: AuthorizationCodeRecord, now: float
) -> list[RevocationEventRecord]:
    """A code presented again: revoke the family issued from it, if any (RFC 6749 §4.1.2), and
    record the attempt; the events to publish once the transaction commits."""
    events: list[RevocationEventRecord] = []
    if record.family_id and await tx.revoke_family(record.family_id, now, "code reuse"):
        events = await append_events(tx, [ctx.revocation_event("family", record.family_id, now)])
    await tx.append_audit(
        "authorization_code_reuse_detected",
        now,
        subject=record.subject,
        client_id=record.client_id,
        family_id=record.family_id,
    )
    return events
