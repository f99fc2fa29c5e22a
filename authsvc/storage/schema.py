"""The database schema, as SQLAlchemy Core tables. Alembic migrations must match it (a test checks).

Portable types only, so one set of migrations serves SQLite and PostgreSQL. Times are seconds since
the Unix epoch as double precision: the domain works in epoch seconds (JWT NumericDate) and a float
compares and indexes the same way on both databases. Secrets are stored only as SHA-256 digests.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    literal_column,
    true,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

clients = Table(
    "clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("secret_digest", LargeBinary(32), nullable=True),  # NULL for public clients
    Column("public", Boolean, nullable=False, default=False),
    Column("first_party", Boolean, nullable=False, default=False),
    Column("grant_types", Text, nullable=False),  # space-separated
    Column("redirect_uris", Text, nullable=False),  # JSON list
    Column("scopes", Text, nullable=False),  # space-separated
    Column("audiences", Text, nullable=False),  # space-separated
    Column("created_at", Double, nullable=False),
    Column("disabled_at", Double, nullable=True),
)

users = Table(
    "users",
    metadata,
    Column("subject", String(64), primary_key=True),
    Column("username", String(200), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),
    Column("created_at", Double, nullable=False),
)

families = Table(
    "families",
    metadata,
    Column("family_id", String(32), primary_key=True),
    Column("subject", String(200), nullable=False),
    Column("client_id", String(64), ForeignKey("clients.client_id"), nullable=False),
    Column("device_id", String(200), nullable=False),
    Column("scope", Text, nullable=False),
    Column("audience", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("last_used_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("idle_expires_at", Double, nullable=False),
    Column("revoked_at", Double, nullable=True),
    Column("revoke_reason", String(200), nullable=True),
    Index(None, "subject"),
    Index(None, "client_id"),
    Index(None, "expires_at"),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_digest", LargeBinary(32), primary_key=True),
    Column("family_id", String(32), ForeignKey("families.family_id"), nullable=False),
    Column("issued_at", Double, nullable=False),
    Column("used_at", Double, nullable=True),
    Column("expires_at", Double, nullable=False),
    Index(None, "family_id"),
    Index(None, "expires_at"),
)

authorization_codes = Table(
    "authorization_codes",
    metadata,
    Column("code_digest", LargeBinary(32), primary_key=True),
    Column("client_id", String(64), ForeignKey("clients.client_id"), nullable=False),
    Column("redirect_uri", Text, nullable=False),  # where the response went
    # False where the authorization request named none (OAuth 2.1 §4.1.1): the token request
    # may then leave it out too (§4.1.3).
    Column("redirect_uri_sent", Boolean, nullable=False, server_default=true()),
    Column("subject", String(200), nullable=False),
    Column("scope", Text, nullable=False),
    Column("audience", Text, nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("device_id", String(200), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("used_at", Double, nullable=True),
    Column("family_id", String(32), nullable=True),  # the family the code was exchanged for
    Index(None, "expires_at"),
    # One live code per authorization request, which its PKCE challenge names (RFC 7636 §4.1: a
    # verifier per request), until its row is purged an hour after it expires: a consent or a
    # sign-in posted again replaces the code while it is unused, and gets none once it is used.
    Index("uq_authorization_codes_challenge", "client_id", "code_challenge", unique=True),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("alg", String(16), nullable=False),
    Column("state", String(16), nullable=False),  # pending, active, retired (purged rows go)
    Column("public_jwk", Text, nullable=False),
    Column("sealed_private", LargeBinary, nullable=False),
    Column("published_at", Double, nullable=False),
    Column("activated_at", Double, nullable=True),
    Column("retired_at", Double, nullable=True),
)

revocation_events = Table(
    "revocation_events",
    metadata,
    Column("cursor", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("occurred_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("kind", String(16), nullable=False),  # family, subject, jti, client, key
    Column("value", String(200), nullable=False),  # the family id, subject, jti, client id or kid
    Column("not_before", Double, nullable=True),  # subject and client revocations
    Column("state", String(16), nullable=True),  # key events
    Index(None, "expires_at"),
)
# One event per revoked access token, however often or concurrently it is revoked (RFC 7009 §2.2:
# revoking it again succeeds and changes nothing). Every other kind may repeat: a subject, a
# client or a key has several events over time, each saying something new. The predicate is a
# literal, not a bound parameter, so that an ON CONFLICT clause repeating it names this index.
JTI_EVENTS = revocation_events.c.kind == literal_column("'jti'")
Index(
    "uq_revocation_events_jti",
    revocation_events.c.value,
    unique=True,
    sqlite_where=JTI_EVENTS,
    postgresql_where=JTI_EVENTS,
)

# One row: the identity of this database's sequence of revocation events, and where it stands.
# `stream_id` is random, chosen by the first authsvc that opens the database (empty until then), so
# two databases never share it; a subscriber's cursor means something only in the stream it came
# from. `last_cursor` is the newest cursor ever assigned: events take their cursors from it, so
# purging the newest events never hands their cursors out again. A restore from a backup brings
# back an older `last_cursor`, which is how a cursor from after the backup is recognised
# (`authsvc.events.classify_cursor`).
event_stream = Table(
    "event_stream",
    metadata,
    Column("stream_id", String(32), primary_key=True),
    Column("last_cursor", BigInteger, nullable=False),
)

# The recent failed logins of one account or one client IP, shared by every replica. The key is an
# HMAC of the username or IP (`authsvc.login_limits`), never the value itself; `failures` holds at
# most the policy's number of times, and `expires_at` is when the newest leaves the window.
login_failures = Table(
    "login_failures",
    metadata,
    Column("key_digest", LargeBinary(32), primary_key=True),
    Column("failures", Text, nullable=False),  # JSON list of times, oldest first
    Column("expires_at", Double, nullable=False),
    Index(None, "expires_at"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("occurred_at", Double, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("subject", String(200), nullable=True),
    Column("client_id", String(64), nullable=True),
    Column("family_id", String(32), nullable=True),
    Column("detail", Text, nullable=False),  # JSON, never a secret
    Index(None, "occurred_at"),
    Index(None, "family_id"),
)
