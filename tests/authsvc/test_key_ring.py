"""The key ring: plan_rotation (one case per rule) and the in-memory KeyRing view."""

from __future__ import annotations

import json

import pytest

from authsvc.keys import material
from authsvc.keys.ring import KeyPolicy, KeyRing, RotationPlan, plan_rotation
from authsvc.keys.sealing import Sealer
from authsvc.storage.records import KeyRecord

POLICY = KeyPolicy(rotation_interval=1000, publish_lead=100, retire_for=500)


def key(
    kid: str,
    state: str,
    published: float = 0.0,
    activated: float | None = None,
    retired: float | None = None,
) -> KeyRecord:
    if state in {"active", "retired"} and activated is None:
        activated = published
    return KeyRecord(kid, "EdDSA", state, "{}", published, activated, retired, b"")


ACTIVE = key("A", "active", published=0, activated=0)
PENDING = key("P", "pending", published=0)


@pytest.mark.parametrize(
    ("keys", "now", "flags", "plan"),
    [
        pytest.param([], 0, {}, RotationPlan(publish_new=True), id="empty-ring-publishes"),
        pytest.param([ACTIVE, PENDING], 50, {}, RotationPlan(), id="steady-state-nothing-due"),
        pytest.param([ACTIVE], 50, {}, RotationPlan(publish_new=True), id="no-pending-publishes"),
        pytest.param(
            [ACTIVE, key("P", "pending", published=0)],
            99,
            {"due": True},
            RotationPlan(),
            id="due-but-pending-not-published-long-enough",
        ),
        pytest.param(
            [ACTIVE, PENDING],
            100,
            {"due": True},
            RotationPlan(publish_new=True, activate="P", retire=("A",)),
            id="due-and-pending-ready-rotates",
        ),
        pytest.param(
            [ACTIVE, key("P", "pending", published=50)],
            50,
            {"immediate": True},
            RotationPlan(publish_new=True, activate="P", retire=("A",)),
            id="immediate-ignores-publish-lead",
        ),
        pytest.param(
            [ACTIVE, key("P", "pending", published=50), key("R", "retired", retired=40)],
            50,
            {"compromised": True},
            RotationPlan(publish_new=True, activate="P", purge=("A",)),
            id="compromised-purges-the-active-key-at-once",
        ),
        pytest.param(
            [ACTIVE],
            50,
            {"compromised": True},
            RotationPlan(publish_new=True),
            id="compromised-purges-nothing-until-a-key-can-take-over",
        ),
        pytest.param(
            [ACTIVE, PENDING],
            1000,
            {},
            RotationPlan(publish_new=True, activate="P", retire=("A",)),
            id="scheduled-after-rotation-interval",
        ),
        pytest.param(
            [ACTIVE, PENDING], 999, {}, RotationPlan(), id="not-scheduled-before-rotation-interval"
        ),
        pytest.param(
            [ACTIVE, key("P", "pending", published=950)],
            1000,
            {},
            RotationPlan(),
            id="scheduled-but-waits-for-publish-lead",
        ),
        pytest.param(
            [key("P", "pending", published=10)],
            10,
            {},
            RotationPlan(publish_new=True, activate="P"),
            id="nothing-active-activates-at-once",
        ),
        pytest.param(
            [ACTIVE, key("P1", "pending", published=0), key("P2", "pending", published=50)],
            100,
            {"due": True},
            RotationPlan(activate="P1", retire=("A",)),
            id="oldest-pending-first-and-one-still-waits",
        ),
        pytest.param(
            [key("A", "active", activated=0), key("B", "active", activated=10), PENDING],
            20,
            {},
            RotationPlan(retire=("A",)),
            id="two-active-retires-the-older",
        ),
        pytest.param(
            [ACTIVE, PENDING, key("R", "retired", retired=0)],
            500,
            {},
            RotationPlan(purge=("R",)),
            id="retired-purged-after-retire-for",
        ),
        pytest.param(
            [ACTIVE, PENDING, key("R", "retired", retired=0)],
            499,
            {},
            RotationPlan(),
            id="retired-kept-until-retire-for",
        ),
    ],
)
def test_plan_rotation(
    keys: list[KeyRecord], now: float, flags: dict[str, bool], plan: RotationPlan
) -> None:
    assert plan_rotation(keys, now, POLICY, **flags) == plan


def test_empty_plan_is_empty() -> None:
    assert RotationPlan().empty
    assert not RotationPlan(purge=("R",)).empty


# KeyRing


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(b"\x01" * 32)


def stored(sealer: Sealer, state: str, at: float) -> KeyRecord:
    generated = material.generate("EdDSA")
    return KeyRecord(
        kid=generated.kid,
        alg="EdDSA",
        state=state,
        public_jwk=generated.public_jwk,
        published_at=at,
        activated_at=at if state in {"active", "retired"} else None,
        retired_at=at if state == "retired" else None,
        sealed_private=sealer.seal(generated.kid, generated.private_pem),
    )


def test_ring_signs_with_newest_active_and_publishes_every_key(sealer: Sealer) -> None:
    older, newer = stored(sealer, "active", 1), stored(sealer, "active", 2)
    retired, pending = stored(sealer, "retired", 0), stored(sealer, "pending", 3)
    ring = KeyRing(sealer, jwks_max_age=300)
    ring.load([retired, older, newer, pending])
    assert ring.signer.kid == newer.kid
    assert set(ring.verification_keys) == {older.kid, newer.kid, retired.kid, pending.kid}
    jwks = json.loads(ring.jwks_json)
    assert [k["kid"] for k in jwks["keys"]] == [retired.kid, older.kid, newer.kid, pending.kid]
    assert all(set(k) == {"kty", "crv", "x", "kid", "alg", "use"} for k in jwks["keys"])
    assert ring.max_age == 300


def test_ring_without_active_key_cannot_sign(sealer: Sealer) -> None:
    ring = KeyRing(sealer, jwks_max_age=300)
    ring.load([stored(sealer, "pending", 0)])
    with pytest.raises(RuntimeError, match="no active key"):
        _ = ring.signer


def test_reload_drops_purged_keys(sealer: Sealer) -> None:
    active, retired = stored(sealer, "active", 1), stored(sealer, "retired", 0)
    ring = KeyRing(sealer, jwks_max_age=300)
    ring.load([retired, active])
    ring.load([active])
    assert set(ring.verification_keys) == {active.kid}
    assert retired.kid not in ring.jwks_json


def test_ring_refuses_keys_sealed_under_another_kek(sealer: Sealer) -> None:
    from authsvc.keys.sealing import UnsealError

    ring = KeyRing(Sealer(b"\x02" * 32), jwks_max_age=300)
    with pytest.raises(UnsealError):
        ring.load([stored(sealer, "active", 1)])
