"""What every domain operation needs, assembled once: settings, store, clock, keys, revocation state."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from authsvc.authenticated_clients import AuthenticatedClients
from authsvc.clock import Clock
from authsvc.config import Settings
from authsvc.events import RevocationFeed
from authsvc.keys.ring import KeyPolicy, KeyRing
from authsvc.keys.sealing import Sealer
from authsvc.login_limits import FailurePolicy, LoginPolicy
from authsvc.passwords import Passwords
from authsvc.revocation_state import RevocationState
from authsvc.storage.records import RevocationEventRecord
from authsvc.storage.sql import SqlStore, Tx


@dataclass
class AuthorityContext:
    settings: Settings
    store: SqlStore
    clock: Clock
    key_ring: KeyRing
    sealer: Sealer = field(repr=False)
    revocations: RevocationState
    feed: RevocationFeed
    passwords: Passwords
    authenticated_clients: AuthenticatedClients
    grace_key: bytes = field(repr=False)
    #: Keys the HMAC digests of usernames and IPs in `login_failures` (`authsvc.login_limits`).
    login_key: bytes = field(repr=False)
    key_purge_listeners: list[Callable[[], None]] = field(default_factory=list)
    #: Reloads of the key ring take turns (`authsvc.keys.rotation.reload_keys`).
    key_reloads: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    def on_keys_purged(self) -> None:
        """A key left the ring: anything that cached a verdict made with it must forget it."""
        for listener in self.key_purge_listeners:
            listener()

    @property
    def key_policy(self) -> KeyPolicy:
        s = self.settings
        return KeyPolicy(
            rotation_interval=s.key_rotation_interval,
            publish_lead=s.jwks_max_age,
            retire_for=s.longest_access_token_life + s.jwks_max_age,
        )

    @property
    def login_policy(self) -> LoginPolicy:
        s = self.settings
        window = float(s.login_failure_window)
        return LoginPolicy(
            account=FailurePolicy(s.login_max_failures_account, window),
            ip=FailurePolicy(s.login_max_failures_ip, window),
        )

    def _revocation_expiry(self, kind: str, at: float) -> float:
        """When verifiers may forget a revocation of `kind` made at `at`: once the last access
        token that could exist at `at` has expired; for a subject or a client, also once no
        sign-in made before it can ask for a code (`Settings.subject_revocation_memory`)."""
        if kind in {"subject", "client"}:
            return at + self.settings.subject_revocation_memory
        return at + self.settings.longest_access_token_life

    def revocation_event(
        self,
        kind: str,
        value: str,
        at: float,
        *,
        not_before: float | None = None,
        expires_at: float | None = None,
    ) -> RevocationEventRecord:
        """An event to append (its cursor is assigned then); by default it covers every access
        token that may exist at `at`, so verifiers may forget it one token lifetime later (a
        subject's or a client's, once no earlier sign-in can use it either)."""
        return RevocationEventRecord(
            cursor=0,
            occurred_at=at,
            expires_at=self._revocation_expiry(kind, at) if expires_at is None else expires_at,
            kind=kind,
            value=value,
            not_before=not_before,
        )


def new_id() -> str:
    """A random identifier for families, token ids and clients (128 bits, base64url)."""
    return secrets.token_urlsafe(16)


async def append_events(
    tx: Tx, events: Sequence[RevocationEventRecord]
) -> list[RevocationEventRecord]:
    """Append `events` in `tx`; those appended, with their cursors, for `feed.published` after
    commit. A `jti` event whose jti the log already holds is not appended (nor returned)."""
    cursors = await tx.append_events(events)
    return [replace(e, cursor=c) for c, e in zip(cursors, events, strict=True) if c is not None]
