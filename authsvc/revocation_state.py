"""What this replica knows is revoked, in memory, so `Verify` never queries the database.

Fed by revocation events (from this replica's own writes at once, and from the event feed for every
other writer). Each entry is kept only until every token it covers has expired, so the state stays
bounded by what was revoked within one access-token lifetime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from authsvc.storage.records import RevocationEventRecord
from authsvc.tokens.access import AccessClaims

RevocationReason = Literal["family revoked", "subject revoked", "client revoked", "token revoked"]


@dataclass
class _NotBefore:
    not_before: float
    expires_at: float
    #: When the latest revocation of this subject or client was made (`occurred_at`).
    revoked_at: float


class RevocationState:
    """Revoked families, jtis, and subject/client "not before" times, each with an expiry."""

    def __init__(self) -> None:
        self._families: dict[str, float] = {}
        self._jtis: dict[str, float] = {}
        self._subjects: dict[str, _NotBefore] = {}
        self._clients: dict[str, _NotBefore] = {}
        self._latest_issued_after = 0  # the latest `issued_after` any entry has given
        self.cursor = 0

    def __len__(self) -> int:
        return len(self._families) + len(self._jtis) + len(self._subjects) + len(self._clients)

    def apply(self, event: RevocationEventRecord) -> None:
        """Record one event; applying the same event twice changes nothing."""
        if event.kind == "family":
            self._families[event.value] = max(event.expires_at, self._families.get(event.value, 0))
        elif event.kind == "jti":
            self._jtis[event.value] = max(event.expires_at, self._jtis.get(event.value, 0))
        elif event.kind in {"subject", "client"}:
            table = self._subjects if event.kind == "subject" else self._clients
            not_before = event.not_before or event.occurred_at
            entry = table.setdefault(
                event.value, _NotBefore(not_before, event.expires_at, event.occurred_at)
            )
            # Events may arrive out of order (from other replicas): keep the latest of each.
            entry.not_before = max(entry.not_before, not_before)
            entry.expires_at = max(entry.expires_at, event.expires_at)
            entry.revoked_at = max(entry.revoked_at, event.occurred_at)
            self._latest_issued_after = max(self._latest_issued_after, int(not_before) + 1)
        self.cursor = max(self.cursor, event.cursor)

    def revoked(self, claims: AccessClaims) -> RevocationReason | None:
        """Why a token with `claims` is revoked, or None. Pure lookup, no I/O."""
        if claims.sid and claims.sid in self._families:
            return "family revoked"
        if claims.jti in self._jtis:
            return "token revoked"
        subject = self._subjects.get(claims.sub)
        if subject is not None and claims.iat <= subject.not_before:
            return "subject revoked"
        client = self._clients.get(claims.client_id)
        if client is not None and claims.iat <= client.not_before:
            return "client revoked"
        return None

    def revoked_since(
        self, subject: str, client_id: str, at: float
    ) -> Literal["subject revoked", "client revoked"] | None:
        """Why what `subject` did through `client_id` at `at` (a sign-in) is revoked, or None: a
        revocation of either made at `at` or later. Its exact order against `at` unknown, a
        revocation in the same instant counts as later. Pure lookup, no I/O; an entry is held one
        access-token lifetime after its revocation, so only an `at` within that is answered for."""
        subject_entry = self._subjects.get(subject)
        if subject_entry is not None and subject_entry.revoked_at >= at:
            return "subject revoked"
        client_entry = self._clients.get(client_id)
        if client_entry is not None and client_entry.revoked_at >= at:
            return "client revoked"
        return None

    def issued_after(self, subject: str, client_id: str) -> int | None:
        """The earliest whole-second `iat` that no subject or client revocation covers, when one
        covers the present second; None when no revocation of either is held."""
        marks = [
            entry.not_before
            for entry in (self._subjects.get(subject), self._clients.get(client_id))
            if entry is not None
        ]
        return int(max(marks)) + 1 if marks else None

    def not_before_for(self, now: float) -> float:
        """The "not before" of a subject or client revocation made at `now`: `now`, or later when
        an earlier revocation in this second has moved new tokens' `iat` to the next second
        (`issued_after`), so that this one covers the tokens minted between the two too."""
        return max(now, float(self._latest_issued_after))

    def prune(self, now: float) -> int:
        """Forget entries whose tokens have all expired; how many were dropped."""
        dropped = 0
        for table in (self._families, self._jtis):
            for key in [k for k, expires_at in table.items() if expires_at <= now]:
                del table[key]
                dropped += 1
        for nb_table in (self._subjects, self._clients):
            for key in [k for k, entry in nb_table.items() if entry.expires_at <= now]:
                del nb_table[key]
                dropped += 1
        return dropped
