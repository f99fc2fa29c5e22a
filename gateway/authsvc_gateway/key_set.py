"""The JWK Set of /.well-known/jwks.json, held briefly so verifiers do not each reach authsvc.

authsvc publishes a key at least `max_age_seconds` before it signs with it, so a verifier whose
copy is at most that old always knows the signing key. A copy held here for `hold` seconds is
served with the max-age reduced by its own age, so the total never exceeds that bound.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from authsvc_client.v1 import authsvc_pb2 as pb

from authsvc_gateway.backend import AuthorityBackend


@dataclass(frozen=True)
class PublishedKeys:
    """A JWK Set as JSON and how long a client may still cache it."""

    jwks_json: str
    max_age: int


class KeySetCache:
    """PublishKeys answers, reused for at most `hold` seconds (monotonic clock injected)."""

    def __init__(
        self,
        backend: AuthorityBackend,
        *,
        hold: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backend = backend
        self._hold = hold
        self._clock = clock
        self._reply: pb.PublishKeysResponse | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def current(self) -> PublishedKeys:
        """The key set with the honest remaining max-age."""
        reply, fetched_at = self._reply, self._fetched_at
        if reply is None or self._clock() - fetched_at >= min(self._hold, reply.max_age_seconds):
            async with self._lock:
                if self._reply is reply:
                    fetched_at = self._clock()
                    self._reply = await self._backend.publish_keys(pb.PublishKeysRequest())
                    self._fetched_at = fetched_at
                reply, fetched_at = self._reply, self._fetched_at
        assert reply is not None
        age = int(self._clock() - fetched_at + 0.999)
        return PublishedKeys(reply.jwks_json, max(0, reply.max_age_seconds - age))
