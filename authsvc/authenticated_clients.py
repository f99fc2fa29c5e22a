"""Clients that recently proved their secret: the next request with the same secret skips the
database (RFC 6749 §2.3 client authentication, on the token, introspection and revocation paths).

An entry is keyed by the client id and the SHA-256 digest of the secret that was checked against
the stored digest. Only successful authentications are remembered: a wrong secret or an unknown
client still reads the database and pays the same constant-time comparison as before, so the
cache only ever answers a caller who holds the secret, and says nothing about who exists.

An entry never outlives a change to its client:

- a change this process commits (a secret rotated, a client disabled or revoked) appends an event
  in the same transaction, and the feed's `published` drops the client's entries before the call
  that made the change returns;
- a change another process commits (a replica, the CLI) drops them when the revocation feed reads
  its event: at once on PostgreSQL (NOTIFY), within the poll interval on SQLite, the same delay
  with which access-token revocations reach this process;
- an authentication whose database read began before a change and ends after it is not
  remembered (the generation check), so a read of the old secret cannot come back after the drop,
  and it is read again (`client_registry.authenticate`), so a client disabled meanwhile gets no
  token;
- whatever happens to the feed, an entry is forgotten `max_age` seconds after its read. A
  `client_secret` event is kept that long too, so a replica that starts meanwhile replays it.
"""

from __future__ import annotations

from typing import Final

from authsvc.clock import Clock
from authsvc.storage.records import ClientRecord, RevocationEventRecord

#: The events after which a client's remembered authentications are dropped.
CLIENT_CHANGES: Final = frozenset({"client", "client_secret"})
MAX_AGE_SECONDS: Final = 10.0
MAX_ENTRIES: Final = 10_000


class AuthenticatedClients:
    """The cache itself; `generation` moves on every change, see the module docstring."""

    def __init__(
        self,
        clock: Clock,
        *,
        max_age: float = MAX_AGE_SECONDS,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self._clock = clock
        self.max_age = max_age
        self._max_entries = max_entries
        self._entries: dict[tuple[str, bytes], tuple[ClientRecord, float]] = {}
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, client_id: str, secret_digest: bytes) -> ClientRecord | None:
        """The client, if it authenticated with this secret within `max_age` and has not changed."""
        entry = self._entries.get((client_id, secret_digest))
        if entry is None:
            return None
        record, expires_at = entry
        if expires_at <= self._clock.now():
            del self._entries[(client_id, secret_digest)]
            return None
        return record

    def remember(
        self, record: ClientRecord, secret_digest: bytes, *, generation: int, read_at: float
    ) -> None:
        """Keep a successful authentication whose database read began at `read_at`, when no
        client changed since `generation` was read (before that database read)."""
        if generation != self.generation:
            return
        if len(self._entries) >= self._max_entries:
            self._entries.clear()  # bounded memory; one database read per client refills it
        self._entries[(record.client_id, secret_digest)] = (record, read_at + self.max_age)

    def forget(self, event: RevocationEventRecord) -> None:
        """Drop every entry of the client an event changed (a feed listener)."""
        if event.kind not in CLIENT_CHANGES:
            return
        self.generation += 1
        for key in [key for key in self._entries if key[0] == event.value]:
            del self._entries[key]
