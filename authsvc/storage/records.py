"""Rows as the domain sees them: frozen dataclasses, secrets kept out of repr."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ClientRecord:
    client_id: str
    name: str
    public: bool
    first_party: bool
    grant_types: tuple[str, ...]
    redirect_uris: tuple[str, ...]
    scopes: tuple[str, ...]
    audiences: tuple[str, ...]
    created_at: float
    disabled_at: float | None
    secret_digest: bytes | None = field(default=None, repr=False)

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None


@dataclass(frozen=True)
class UserRecord:
    subject: str
    username: str
    created_at: float
    password_hash: str = field(repr=False)


@dataclass(frozen=True)
class FamilyRecord:
    """One login session on one device; every refresh token belongs to one."""

    family_id: str
    subject: str
    client_id: str
    device_id: str
    scope: tuple[str, ...]
    audience: tuple[str, ...]
    created_at: float
    last_used_at: float
    expires_at: float
    idle_expires_at: float
    revoked_at: float | None
    revoke_reason: str | None


@dataclass(frozen=True)
class RefreshTokenRecord:
    family_id: str
    issued_at: float
    used_at: float | None
    expires_at: float
    token_digest: bytes = field(repr=False)


@dataclass(frozen=True)
class AuthorizationCodeRecord:
    client_id: str
    redirect_uri: str
    subject: str
    scope: tuple[str, ...]
    audience: tuple[str, ...]
    device_id: str
    created_at: float
    expires_at: float
    used_at: float | None
    family_id: str | None
    code_challenge: str = field(repr=False)
    code_digest: bytes = field(repr=False)
    #: False where the authorization request named no redirect URI (OAuth 2.1 §4.1.1).
    redirect_uri_sent: bool = True


@dataclass(frozen=True)
class KeyRecord:
    kid: str
    alg: str
    state: str
    public_jwk: str
    published_at: float
    activated_at: float | None
    retired_at: float | None
    sealed_private: bytes = field(repr=False)


@dataclass(frozen=True)
class RevocationEventRecord:
    """One change local verifiers must learn; `cursor` orders them."""

    cursor: int
    occurred_at: float
    expires_at: float
    kind: str  # family, subject, jti, client, key; client_secret (for authsvc itself only)
    value: str
    not_before: float | None = None
    state: str | None = None


@dataclass(frozen=True)
class EventStreamRecord:
    """The sequence the revocation events of one database form: its identity, and the newest
    cursor ever assigned in it (purges never lower it; restoring a backup does)."""

    stream_id: str
    last_cursor: int
