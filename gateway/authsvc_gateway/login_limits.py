"""Rate limiting of failed logins, per account and per client IP.

`decide` is the pure rule; `FailureLimiter` keeps the recent failures per key in bounded memory,
reading time from an injected monotonic clock. Only the newest `max_failures` failures of a key
matter: the key is blocked while the oldest of them is younger than the window.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

#: Distinct keys remembered at most; the least recently failed are forgotten first.
MAX_KEYS: Final = 100_000


@dataclass(frozen=True)
class FailurePolicy:
    """At most `max_failures` failures within `window` seconds."""

    max_failures: int
    window: float


@dataclass(frozen=True)
class Allowed:
    """The attempt may go ahead."""


@dataclass(frozen=True)
class Blocked:
    """Too many recent failures: try again in `retry_after` seconds (RFC 9110 §10.2.3)."""

    retry_after: int


def decide(failures: Sequence[float], now: float, policy: FailurePolicy) -> Allowed | Blocked:
    """May another attempt be made, given the times of the key's failures (oldest first)?"""
    recent = [at for at in failures if now - at < policy.window]
    if len(recent) < policy.max_failures:
        return Allowed()
    # The attempt is allowed again once enough failures have aged out of the window.
    frees_at = recent[len(recent) - policy.max_failures] + policy.window
    return Blocked(retry_after=max(1, math.ceil(frees_at - now)))


class FailureLimiter:
    """Remembers the newest failures of each key and answers `decide` for it."""

    def __init__(
        self,
        policy: FailurePolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def verdict(self, key: str) -> Allowed | Blocked:
        """Whether `key` may try again now."""
        return decide(self._failures.get(key, ()), self._clock(), self._policy)

    def record_failure(self, key: str) -> None:
        """Count one failed attempt for `key` now."""
        failures = self._failures.pop(key, None)
        if failures is None:
            failures = deque(maxlen=self._policy.max_failures)
        failures.append(self._clock())
        self._failures[key] = failures
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)

    def forget(self, key: str) -> None:
        """Clear `key`'s failures (after a successful login to that account)."""
        self._failures.pop(key, None)
