"""User passwords: argon2id at or above OWASP's minimum (m=19 MiB, t=2, p=1).

Hashing runs in a worker thread so a login never stalls the event loop. An unknown user costs the
same work as a known one (a verify against a fixed dummy hash), so timing does not reveal which
usernames exist. A hash made with weaker parameters is upgraded on the next successful login.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

OWASP_MEMORY_KIB = 19 * 1024
OWASP_TIME_COST = 2
OWASP_PARALLELISM = 1


@dataclass(frozen=True)
class Argon2Parameters:
    memory_kib: int = OWASP_MEMORY_KIB
    time_cost: int = OWASP_TIME_COST
    parallelism: int = OWASP_PARALLELISM


@dataclass(frozen=True)
class PasswordCheck:
    ok: bool
    # Set when the stored hash should be replaced. A password hash is a secret: no repr.
    new_hash: str | None = field(default=None, repr=False)


class Passwords:
    """Hashes and checks passwords; never logs or returns one."""

    def __init__(self, parameters: Argon2Parameters | None = None) -> None:
        p = parameters or Argon2Parameters()
        if p.memory_kib < OWASP_MEMORY_KIB or p.time_cost < OWASP_TIME_COST:
            raise ValueError("argon2id parameters below OWASP's minimum")
        self._hasher = PasswordHasher(
            time_cost=p.time_cost,
            memory_cost=p.memory_kib,
            parallelism=p.parallelism,
            type=Type.ID,
        )
        self._dummy = self._hasher.hash("authsvc-timing-equaliser")

    def hash_now(self, password: str) -> str:
        return self._hasher.hash(password)

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def check(self, password: str, stored_hash: str | None) -> PasswordCheck:
        """Check `password` against `stored_hash`; None (unknown user) does the same work and fails."""
        return await asyncio.to_thread(self._check, password, stored_hash)

    def _check(self, password: str, stored_hash: str | None) -> PasswordCheck:
        try:
            self._hasher.verify(stored_hash or self._dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return PasswordCheck(ok=False)
        if stored_hash is None:
            return PasswordCheck(ok=False)
        if self._hasher.check_needs_rehash(stored_hash):
            return PasswordCheck(ok=True, new_hash=self._hasher.hash(password))
        return PasswordCheck(ok=True)
