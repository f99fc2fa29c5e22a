"""Registered OAuth clients: registration, authentication (RFC 6749 §2.3), grants they may use."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from authsvc.context import AuthorityContext, append_events
from authsvc.errors import (
    InvalidClient,
    InvalidRequest,
    NotFound,
    TemporarilyUnavailable,
    UnauthorizedClient,
)
from authsvc.revocation import append_family_events, bounded_reason
from authsvc.storage.records import ClientRecord
from authsvc.storage.sql import Tx
from authsvc.tokens import opaque

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
MAX_CLIENT_NAME = 200  # the column's length
ADMIN_SCOPES = (
    "authsvc:admin",
    "authsvc:issue",
    "authsvc:introspect",
    "authsvc:revoke",
    "authsvc:sessions",
    "authsvc:gateway",
)
# Compared against when the client is unknown, so both paths do the same work.
_DUMMY_DIGEST = hashlib.sha256(b"authsvc-unknown-client").digest()


@dataclass(frozen=True)
class RegisteredClient:
    """A client as just created: the secret is shown once and never stored."""

    client_id: str
    client_secret: str = field(repr=False)
    record: ClientRecord | None = field(default=None, repr=False)


def new_client_id() -> str:
    """A random client id: 80 bits in lowercase base32, safe in URLs, shells and argv."""
    return base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()


def require_grant(client: ClientRecord, grant_type: str) -> None:
    """UnauthorizedClient unless the client is registered for `grant_type` (RFC 6749 §5.2)."""
    if grant_type not in client.grant_types:
        raise UnauthorizedClient(f"client is not registered for the {grant_type} grant")


async def authenticate_client(tx: Tx, client_id: str, client_secret: str) -> ClientRecord:
    """The client, if `client_secret` is its secret (or empty for a public client).

    One generic invalid_client for every failure; the secret is compared in constant time, and an
    unknown client costs the same comparison as a known one.
    """
    client = await tx.get_client(client_id) if client_id else None
    stored = client.secret_digest if client is not None else None
    if client is not None and client.public:
        ok = not client_secret
    else:
        ok = hmac.compare_digest(opaque.digest(client_secret), stored or _DUMMY_DIGEST)
        ok = ok and stored is not None
    if client is None or not ok or not client.enabled:
        raise InvalidClient("client authentication failed")
    return client


def _check_redirect_uri(uri: str) -> None:
    """OAuth 2.1 §2.3.1 / RFC 9700 §2.1: absolute, no fragment; http only for loopback."""
    parts = urlsplit(uri)
    if not parts.scheme or parts.fragment or "#" in uri:
        raise InvalidRequest(f"redirect URI must be absolute and carry no fragment: {uri}")
    if parts.scheme == "http" and parts.hostname not in {"127.0.0.1", "localhost", "::1"}:
        raise InvalidRequest(f"redirect URI must use https unless it is loopback: {uri}")
    if parts.scheme in {"javascript", "data", "file"}:
        raise InvalidRequest(f"redirect URI scheme not allowed: {uri}")


async def create_client(
    ctx: AuthorityContext,
    *,
    name: str,
    grant_types: Sequence[str],
    scopes: Sequence[str],
    audiences: Sequence[str],
    redirect_uris: Sequence[str] = (),
    public: bool = False,
    first_party: bool = False,
    client_id: str | None = None,
) -> RegisteredClient:
    """Register a client. Confidential clients get a 256-bit secret, returned here only.

    Its id, generated unless `client_id` chooses one, is no user's subject, and `start_family`
    gives no user a client's id as subject: a client's own tokens carry its id as `sub`, and a
    resource server must not take a user for a service or a service for a user (RFC 9068 §5).
    """
    if not name.strip() or len(name) > MAX_CLIENT_NAME:
        raise InvalidRequest(f"a client needs a name, at most {MAX_CLIENT_NAME} characters")
    unknown = set(grant_types) - set(GRANT_TYPES)
    if unknown or not grant_types:
        raise InvalidRequest(f"grant types must be among {', '.join(GRANT_TYPES)}")
    if public and "client_credentials" in grant_types:
        raise InvalidRequest("a public client cannot use client credentials")
    if "authorization_code" in grant_types and not redirect_uris:
        raise InvalidRequest("the authorization_code grant needs at least one redirect URI")
    for uri in redirect_uris:
        _check_redirect_uri(uri)
    audiences = tuple(dict.fromkeys(a for value in audiences for a in value.split()))
    if not audiences:
        # Every grant issues access tokens, and RFC 9068 §2.2 requires their `aud`.
        raise InvalidRequest("a client needs at least one audience: the APIs its tokens are for")
    secret = "" if public else opaque.new_secret(opaque.Kind.CLIENT_SECRET)
    record = ClientRecord(
        client_id=client_id or new_client_id(),
        name=name,
        public=public,
        first_party=first_party,
        grant_types=tuple(dict.fromkeys(grant_types)),
        redirect_uris=tuple(redirect_uris),
        scopes=tuple(dict.fromkeys(s for value in scopes for s in value.split())),
        audiences=audiences,
        created_at=ctx.clock.now(),
        disabled_at=None,
        secret_digest=opaque.digest(secret) if secret else None,
    )
    async with ctx.store.transaction() as tx:
        if await tx.get_client(record.client_id) is not None:
            raise InvalidRequest(f"client {record.client_id} already exists")
        if client_id:
            # A chosen id may be a subject a family is being started for in this instant;
            # a generated one cannot, as nobody knows it before this commits.
            await tx.lock_new_families()
        if await tx.is_subject(record.client_id):
            # RFC 9068 §5: this client's own tokens will carry its id as `sub`.
            raise InvalidRequest(
                f"client id {record.client_id} is a user's subject, and a client's tokens carry "
                "its id as sub: choose another id"
            )
        await tx.insert_client(record)
        await tx.append_audit("client_created", record.created_at, client_id=record.client_id)
    return RegisteredClient(record.client_id, secret, record)


async def get_client(ctx: AuthorityContext, client_id: str) -> ClientRecord:
    async with ctx.store.transaction(readonly=True) as tx:
        client = await tx.get_client(client_id)
    if client is None or not client.enabled:
        raise NotFound("unknown or disabled client")
    return client


async def list_clients(ctx: AuthorityContext) -> list[ClientRecord]:
    async with ctx.store.transaction(readonly=True) as tx:
        return await tx.list_clients()


#: Database reads an authentication makes, at most, while clients keep changing under it.
AUTHENTICATION_READS = 3


async def authenticate(ctx: AuthorityContext, client_id: str, client_secret: str) -> ClientRecord:
    """`authenticate_client` through the cache of recent successful authentications
    (`authsvc.authenticated_clients` says why an entry never outlives a change to its client).

    A read during which a client changed (its event reached this replica while the read was in
    flight, on PostgreSQL) may have seen the client as it was before: disabled meanwhile, its
    caller would still get a token, signed after the revocation and so past its "not before". It
    is read again, up to `AUTHENTICATION_READS` times; a read that begins after the event sees
    the change, which committed before its event was published. Overtaken every time (clients
    change so fast that no read ends before the next change), it answers temporarily_unavailable
    rather than a read that may be stale."""
    remembered = ctx.authenticated_clients
    secret_digest = opaque.digest(client_secret)
    client = remembered.get(client_id, secret_digest)
    if client is not None:
        return client
    for _ in range(AUTHENTICATION_READS):
        generation, read_at = remembered.generation, ctx.clock.now()
        async with ctx.store.transaction(readonly=True) as tx:
            read = await authenticate_client(tx, client_id, client_secret)
        if generation == remembered.generation:
            remembered.remember(read, secret_digest, generation=generation, read_at=read_at)
            return read
    raise TemporarilyUnavailable("clients are being changed; retry later")


async def rotate_secret(ctx: AuthorityContext, client_id: str) -> RegisteredClient:
    """A new secret for a confidential client; the old one stops working at once, here and (within
    the revocation feed's delay) on every replica: the `client_secret` event drops what their
    caches of authenticated clients remember."""
    secret = opaque.new_secret(opaque.Kind.CLIENT_SECRET)
    now = ctx.clock.now()
    async with ctx.store.transaction() as tx:
        if not await tx.set_client_secret(client_id, opaque.digest(secret)):
            raise NotFound("unknown client, or a public client (which has no secret)")
        # Kept as long as a cache entry may live, so a replica starting meanwhile replays it.
        event = ctx.revocation_event(
            "client_secret", client_id, now, expires_at=now + ctx.authenticated_clients.max_age
        )
        events = await append_events(tx, [event])
        await tx.append_audit("client_secret_rotated", now, client_id=client_id)
    ctx.feed.published(events)
    return RegisteredClient(client_id, secret)


async def revoke_client(
    ctx: AuthorityContext, client_id: str, *, reason: str, disable: bool
) -> int:
    """Revoke every family and access token of a client, and its authorization codes not yet
    redeemed; optionally disable it. Families revoked. Each revoked family gets an event of its
    own, as for `revocation.revoke_subject` (`revocation.append_family_events` says why)."""
    reason = bounded_reason(reason, "client revoked")
    now = ctx.clock.now()
    # A bulk transaction, as for `revoke_subject`: a client may have a family per user.
    async with ctx.store.transaction(bulk=True) as tx:
        if await tx.get_client(client_id) is None:
            raise NotFound("unknown client")
        if disable:
            await tx.disable_client(client_id, now)
        # Codes first, as in revoke_subject: a redemption in flight is waited for, and its
        # family is then among those revoked.
        await tx.discard_unused_codes(client_id=client_id)
        revoked = await tx.revoke_families_where(now, reason, client_id=client_id)
        # Also covers the tokens minted after an earlier revocation in this second.
        not_before = ctx.revocations.not_before_for(now)
        event = ctx.revocation_event("client", client_id, now, not_before=not_before)
        events = await append_events(tx, [event])
        events += await append_family_events(ctx, tx, revoked, now)
        await tx.append_audit(
            "client_disabled" if disable else "client_revoked",
            now,
            client_id=client_id,
            families=len(revoked),
            reason=reason,
        )
    ctx.feed.published(events)
    return len(revoked)
