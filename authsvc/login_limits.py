"""The failed-login limits, per account and per client IP, as pure rules.

Every replica reads and writes the same failures in the database (`Tx.lock_login_failures`), so
the budget is the deployment's, not each process's. A key is never the username or IP itself but
an HMAC of it under a key derived from the KEK: the table reveals neither, and every replica (which
shares the KEK) computes the same digest.

`decide` says whether one key may try again. Only the newest `max_failures` failures of a key
matter: it is blocked while the oldest of them is younger than the window. An attempt is counted
as a failure before its password is checked (`with_failure`), so parallel guesses cannot all pass
the check at once; a correct password takes that failure back (`without_failure`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from authsvc.errors import InvalidRequest

#: Longer than any textual IPv6 address with a zone; anything longer is not an address.
MAX_CLIENT_IP_CHARS: Final = 64
#: One IPv6 client is one /64: the prefix a single host or LAN is given (RFC 7421).
IPV6_CLIENT_PREFIX: Final = 64


@dataclass(frozen=True)
class FailurePolicy:
    """At most `max_failures` failures within `window` seconds."""

    max_failures: int
    window: float


@dataclass(frozen=True)
class LoginPolicy:
    """The limit of each kind of key (AUTHSVC_LOGIN_* settings)."""

    account: FailurePolicy
    ip: FailurePolicy


@dataclass(frozen=True)
class Allowed:
    """The attempt may go ahead."""


@dataclass(frozen=True)
class Blocked:
    """Too many recent failures: try again in `retry_after` seconds (RFC 9110 §10.2.3)."""

    retry_after: int


@dataclass(frozen=True)
class LimitKey:
    """One counter an attempt is checked against: its digest and the policy for its kind."""

    digest: bytes = field(repr=False)
    policy: FailurePolicy


def decide(failures: Sequence[float], now: float, policy: FailurePolicy) -> Allowed | Blocked:
    """May another attempt be made, given the times of the key's failures (oldest first)?"""
    recent = [at for at in failures if now - at < policy.window]
    if len(recent) < policy.max_failures:
        return Allowed()
    # The attempt is allowed again once enough failures have aged out of the window.
    frees_at = recent[len(recent) - policy.max_failures] + policy.window
    return Blocked(retry_after=max(1, math.ceil(frees_at - now)))


def decide_all(
    checks: Iterable[tuple[Sequence[float], FailurePolicy]], now: float
) -> Allowed | Blocked:
    """Blocked when any key is, for the longest of their waits."""
    waits = [
        verdict.retry_after
        for failures, policy in checks
        if isinstance(verdict := decide(failures, now, policy), Blocked)
    ]
    return Blocked(max(waits)) if waits else Allowed()


def with_failure(failures: Sequence[float], at: float, policy: FailurePolicy) -> tuple[float, ...]:
    """The failures to keep after one more at `at`: those still in the window, the newest
    `max_failures` of them (the older ones can no longer change a verdict)."""
    recent = sorted([*(f for f in failures if at - f < policy.window), at])
    return tuple(recent[-policy.max_failures :])


def without_failure(failures: Sequence[float], at: float) -> tuple[float, ...]:
    """`failures` less one at `at`: an attempt counted in advance whose password was right."""
    kept = list(failures)
    if at in kept:
        kept.remove(at)
    return tuple(kept)


def expires_at(failures: Sequence[float], policy: FailurePolicy, now: float) -> float:
    """When the last of `failures` leaves the window, and its row may be purged."""
    return max(failures, default=now - policy.window) + policy.window


def login_keys(
    secret: bytes, policy: LoginPolicy, username: str, client_ip: str
) -> tuple[LimitKey, LimitKey | None]:
    """The account's key and, when the caller named one, the client IP's.

    The account is the username exactly as it is looked up (users are matched exactly, so "Alice"
    is another account than "alice"), whether or not it exists: an unknown user is limited
    exactly like a known one, and no other user's correct login can clear this account's count.
    A malformed IP is refused (InvalidRequest); the text never goes into the message.
    """
    account = LimitKey(_digest(secret, b"account", username), policy.account)
    if not client_ip:
        return account, None
    return account, LimitKey(_digest(secret, b"ip", client_of(client_ip)), policy.ip)


def client_of(client_ip: str) -> str:
    """What one client's budget is counted against, in one spelling: an IPv4 address (also when
    it arrives IPv4-mapped, `::ffff:203.0.113.9`, as a dual-stack listener reports IPv4 peers;
    RFC 4291 §2.5.5.2), or the /64 of an IPv6 one, since a host picks the low 64 bits of its own
    address and privacy addresses change them by design (RFC 8981)."""
    if len(client_ip) > MAX_CLIENT_IP_CHARS:
        raise InvalidRequest("client_ip is not an IP address")
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        raise InvalidRequest("client_ip is not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False))
    return str(address)


def _digest(secret: bytes, kind: bytes, value: str) -> bytes:
    return hmac.new(secret, kind + b"\0" + value.encode(), hashlib.sha256).digest()
