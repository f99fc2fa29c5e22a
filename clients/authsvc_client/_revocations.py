"""The local view of what authsvc has revoked, fed by `WatchRevocations`.

Four kinds of entry, each kept only while a token it covers could still be accepted: revoked
families (`sid`), subjects revoked as of a time, revoked `jti`s, and clients revoked as of a
time. Every event says when the last token it covers expires (`expires_at`); the entry is dropped
after that plus the verifier's leeway, so the set stays as small as the revocations in force.

The set also knows how long ago the stream last spoke while caught up, which is what the "stream
down longer than the bound" rule is decided on, and where to resume it: the cursor, and the stream
id of the database the cursor counts in. A stream replays the events after our cursor first and
then sends a heartbeat (authsvc's `RevocationFeed._deliver`): until that heartbeat the set lacks
revocations the authority holds, so the events of the replay apply but do not count as the stream
being alive, on the first connection and after every reconnection (`stream_opened`).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from ._clock import Clock
from ._verification import Claims
from .v1 import authsvc_pb2

__all__ = ["Backoff", "RevocationSet"]


@dataclass
class _AsOf:
    """Tokens issued up to `not_before` are revoked; forget this at `forget_at`."""

    not_before: int
    forget_at: float


class RevocationSet:
    """Bounded, thread-safe revocation state with the stream's resumable cursor."""

    def __init__(self, clock: Clock, *, leeway: float = 30.0) -> None:
        self._clock = clock
        self._leeway = leeway
        self._lock = threading.Lock()
        self._families: dict[str, float] = {}
        self._jtis: dict[str, float] = {}
        self._subjects: dict[str, _AsOf] = {}
        self._clients: dict[str, _AsOf] = {}
        self._cursor = 0
        self._stream_id = ""
        # Never heard from: stale from the start, so a verifier whose stream has not yet
        # delivered holds no revocations and applies `when_stale` until it does, rather than
        # counting as fresh for a whole staleness bound.
        self._last_heard_at = float("-inf")
        self._caught_up = False  # has the stream sent its heartbeat since it (re)connected?
        self._next_prune_at = float("-inf")

    @property
    def cursor(self) -> int:
        """The cursor of the last event applied; resume the stream from here."""
        return self._cursor

    @property
    def stream_id(self) -> str:
        """The event stream the cursor counts in, as authsvc named it; empty until a server
        that names its stream has spoken."""
        return self._stream_id

    def __len__(self) -> int:
        return len(self._families) + len(self._jtis) + len(self._subjects) + len(self._clients)

    @property
    def caught_up(self) -> bool:
        """Whether the stream has sent its heartbeat since it (re)connected: every revocation
        the authority held then is applied here."""
        return self._caught_up

    def stream_opened(self) -> None:
        """A stream is about to deliver, from our cursor: its replay comes first, and until its
        heartbeat the silence goes on counting."""
        with self._lock:
            self._caught_up = False

    def apply(self, event: authsvc_pb2.RevocationEvent) -> None:
        """Apply one event from the stream. Replayed events (cursor not beyond ours) are ignored.
        Every event names its stream; a heartbeat says the stream has caught up, and from then on
        every event, heartbeats included, counts as the stream being alive."""
        now = self._clock.now()
        with self._lock:
            kind = event.WhichOneof("event")
            if kind == "heartbeat":
                self._caught_up = True
            if self._caught_up:
                self._last_heard_at = now
            if event.stream_id:
                self._stream_id = event.stream_id
            if kind in (None, "heartbeat") or event.cursor <= self._cursor:
                return
            self._cursor = event.cursor
            forget_at = _seconds(event.expires_at) + self._leeway
            if kind == "family_revoked":
                _extend(self._families, event.family_revoked, forget_at)
            elif kind == "jti_revoked":
                _extend(self._jtis, event.jti_revoked, forget_at)
            elif kind == "subject_revoked":
                revoked = event.subject_revoked
                _raise_as_of(self._subjects, revoked.subject, revoked.not_before, forget_at)
            elif kind == "client_revoked":
                revoked_client = event.client_revoked
                _raise_as_of(
                    self._clients, revoked_client.client_id, revoked_client.not_before, forget_at
                )
        self._prune_if_due(now)

    def start_over(self) -> int:
        """Resume from the very start next time: authsvc's database no longer has our cursor
        (it was reset, replaced or restored). Every revocation held stays until its tokens
        expire, since the database now behind authsvc may not know it. How many are held."""
        with self._lock:
            self._cursor = 0
            self._stream_id = ""
        return len(self)

    def mark_alive(self) -> None:
        """Record that the stream is connected and caught up."""
        with self._lock:
            self._caught_up = True
            self._last_heard_at = self._clock.now()

    def revocation_of(self, claims: Claims) -> str | None:
        """Why the token with these claims is revoked, or None if it is not (as far as we know)."""
        now = self._clock.now()
        self._prune_if_due(now)
        if claims.sid and claims.sid in self._families:
            return "session revoked"
        if claims.jti in self._jtis:
            return "token revoked"
        # `iat` and `not_before` are whole seconds: a token issued in the second of the
        # revocation counts as issued before it, as authsvc itself decides.
        subject = self._subjects.get(claims.sub)
        if subject is not None and claims.iat <= subject.not_before:
            return "subject revoked"
        client = self._clients.get(claims.client_id)
        if client is not None and claims.iat <= client.not_before:
            return "client revoked"
        return None

    def silent_for(self) -> float:
        """Seconds since the stream last spoke while caught up; infinite before it first has."""
        return self._clock.now() - self._last_heard_at

    def prune(self) -> None:
        """Drop every entry whose tokens have all expired."""
        now = self._clock.now()
        with self._lock:
            for table in (self._families, self._jtis):
                for key in [k for k, at in table.items() if at <= now]:
                    del table[key]
            for as_of in (self._subjects, self._clients):
                for key in [k for k, entry in as_of.items() if entry.forget_at <= now]:
                    del as_of[key]
            self._next_prune_at = now + 1.0

    def _prune_if_due(self, now: float) -> None:
        # Pruning walks every entry; once a second is plenty and keeps lookups O(1).
        if now >= self._next_prune_at:
            self.prune()


def _seconds(timestamp: object) -> float:
    seconds = getattr(timestamp, "seconds", 0)
    nanos = getattr(timestamp, "nanos", 0)
    return float(seconds) + float(nanos) / 1e9


def _extend(table: dict[str, float], key: str, forget_at: float) -> None:
    if key:
        table[key] = max(table.get(key, forget_at), forget_at)


def _raise_as_of(table: dict[str, _AsOf], key: str, not_before: int, forget_at: float) -> None:
    if not key:
        return
    entry = table.get(key)
    if entry is None:
        table[key] = _AsOf(not_before=not_before, forget_at=forget_at)
    else:
        entry.not_before = max(entry.not_before, not_before)
        entry.forget_at = max(entry.forget_at, forget_at)


class Backoff:
    """Jittered exponential backoff for reconnecting: a uniform delay below the current ceiling,
    which doubles per failure up to `maximum`. `jitter` is the share of the ceiling drawn at
    random: 1 ("full jitter", the default) draws from zero up, 0.5 ("equal jitter") from half the
    ceiling up, for callers to whom a near-zero delay costs as much as a failure."""

    def __init__(
        self,
        initial: float = 0.05,
        maximum: float = 5.0,
        *,
        jitter: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 <= jitter <= 1:
            raise ValueError("jitter is a share of the delay, in [0, 1]")
        self._initial = initial
        self._maximum = maximum
        self._ceiling = initial
        self._jitter = jitter
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret

    def next_delay(self) -> float:
        """The delay before the next attempt; raises the ceiling for the one after."""
        delay = self._rng.uniform(self._ceiling * (1 - self._jitter), self._ceiling)
        self._ceiling = min(self._maximum, self._ceiling * 2)
        return delay

    def reset(self) -> None:
        """Back to the shortest delay, after a connection delivered something."""
        self._ceiling = self._initial
