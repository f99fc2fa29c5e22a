"""The key ring: pending → active → retired → purged (DESIGN "Keys").

`plan_rotation` is the pure decision of what moves; `KeyRing` holds the in-memory view every
request reads (the signing key, the verification keys, the JWK Set) and is rebuilt from storage
whenever a key changes anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from authsvc_client import PublishedKey

from authsvc.keys.material import SigningKey, load_private, load_public
from authsvc.keys.sealing import Sealer
from authsvc.storage.records import KeyRecord
from authsvc.tokens.access import AccessTokenSigner

PENDING, ACTIVE, RETIRED, PURGED = "pending", "active", "retired", "purged"


@dataclass(frozen=True)
class KeyPolicy:
    """How keys move. All durations in seconds."""

    rotation_interval: int
    publish_lead: (
        int  # a key is published at least this long (one JWKS cache lifetime) before it signs
    )
    retire_for: int  # a retired key stays published this long (longest token life + cache lifetime)


@dataclass(frozen=True)
class RotationPlan:
    """What to do to the ring now. Empty when nothing is due."""

    publish_new: bool = False
    activate: str | None = None
    retire: tuple[str, ...] = ()
    purge: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.publish_new or self.activate or self.retire or self.purge)


def plan_rotation(
    keys: Sequence[KeyRecord],
    now: float,
    policy: KeyPolicy,
    *,
    due: bool = False,
    immediate: bool = False,
    compromised: bool = False,
) -> RotationPlan:
    """Decide the ring's next moves.

    - A pending key becomes active only after it has been published for `publish_lead`, unless
      `immediate` (an emergency: signing with a fresh key beats a verifier's cache miss).
    - Rotation is due on demand (`due`) or when the active key has signed for `rotation_interval`.
    - An empty ring, or one with nothing active, activates at once: nobody can have cached it yet.
    - After the plan there is always exactly one pending key waiting.
    - A retired key is purged once every token it signed has expired.
    - `compromised` (implies `immediate`): the keys that stop signing are purged at once instead
      of retired, since a retired key still verifies for `retire_for` and the attacker who holds
      it mints tokens as they please. Nothing is purged unless a fresh key takes over.
    """
    immediate = immediate or compromised
    active = [k for k in keys if k.state == ACTIVE]
    pending = sorted((k for k in keys if k.state == PENDING), key=lambda k: k.published_at)
    current = max(active, key=lambda k: k.activated_at or 0.0, default=None)
    retire = [k.kid for k in active if k is not current]
    activate: str | None = None

    rotation_due = (
        due
        or immediate
        or current is None
        or (current.activated_at or 0.0) + policy.rotation_interval <= now
    )
    if rotation_due and pending:
        ready = pending[0].published_at + policy.publish_lead <= now
        if ready or immediate or current is None:
            activate = pending[0].kid
    if activate is not None and current is not None:
        retire.append(current.kid)
    remaining_pending = [k for k in pending if k.kid != activate]
    publish_new = not remaining_pending
    purge = tuple(
        k.kid
        for k in keys
        if k.state == RETIRED and (k.retired_at or 0.0) + policy.retire_for <= now
    )
    if compromised and activate is not None:
        return RotationPlan(publish_new, activate, (), (*retire, *purge))
    return RotationPlan(publish_new, activate, tuple(retire), purge)


@dataclass(frozen=True)
class Signer:
    """The active key, and the access-token signer built on it once."""

    kid: str
    alg: str
    key: SigningKey = field(repr=False)
    access_tokens: AccessTokenSigner = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "access_tokens", AccessTokenSigner(self.kid, self.alg, self.key))


class KeyRing:
    """The in-memory view of the keys: swapped whole on reload, so readers never see half a ring."""

    def __init__(self, sealer: Sealer, jwks_max_age: int) -> None:
        self._sealer = sealer
        self._max_age = jwks_max_age
        self._signer: Signer | None = None
        self._published: dict[str, PublishedKey] = {}
        self._records: tuple[KeyRecord, ...] = ()
        self._jwks_json = '{"keys":[]}'

    def load(self, records: Sequence[KeyRecord]) -> None:
        """Replace the view with `records` (every key not purged)."""
        published = {
            r.kid: PublishedKey(kid=r.kid, key=load_public(r.public_jwk), alg=r.alg)
            for r in records
        }
        active = [r for r in records if r.state == ACTIVE]
        signer = None
        if active:
            current = max(active, key=lambda r: r.activated_at or 0.0)
            if self._signer is not None and self._signer.kid == current.kid:
                signer = self._signer
            else:
                pem = self._sealer.unseal(current.kid, current.sealed_private)
                signer = Signer(current.kid, current.alg, load_private(pem))
        jwks = {"keys": [json.loads(r.public_jwk) for r in records]}
        self._records = tuple(records)
        self._published = published
        self._signer = signer
        self._jwks_json = json.dumps(jwks, separators=(",", ":"), sort_keys=True)

    @property
    def signer(self) -> Signer:
        if self._signer is None:
            raise RuntimeError("the key ring has no active key; run the key rotation first")
        return self._signer

    @property
    def verification_keys(self) -> dict[str, PublishedKey]:
        return self._published

    @property
    def records(self) -> tuple[KeyRecord, ...]:
        return self._records

    @property
    def jwks_json(self) -> str:
        return self._jwks_json

    @property
    def max_age(self) -> int:
        return self._max_age
