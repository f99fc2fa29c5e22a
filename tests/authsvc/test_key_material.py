"""Key material: generation per algorithm, RFC 7638 kids, and the PEM round trip through sealing."""

from __future__ import annotations

import json

import pytest
from joserfc.jwk import ECKey, OKPKey

from authsvc.keys import material


@pytest.mark.parametrize(
    ("alg", "key_type", "jwk_members"),
    [
        pytest.param("EdDSA", OKPKey, {"kty": "OKP", "crv": "Ed25519"}, id="EdDSA"),
        pytest.param("Ed25519", OKPKey, {"kty": "OKP", "crv": "Ed25519"}, id="Ed25519"),
        pytest.param("ES256", ECKey, {"kty": "EC", "crv": "P-256"}, id="ES256"),
    ],
)
def test_generated_key_round_trips(alg: str, key_type: type, jwk_members: dict[str, str]) -> None:
    generated = material.generate(alg)
    private = material.load_private(generated.private_pem)
    public = material.load_public(generated.public_jwk)
    assert isinstance(private, key_type)
    assert isinstance(public, key_type)
    assert private.thumbprint() == public.thumbprint() == generated.kid  # RFC 7638
    jwk = json.loads(generated.public_jwk)
    assert jwk.items() >= {**jwk_members, "kid": generated.kid, "alg": alg, "use": "sig"}.items()
    assert "d" not in jwk


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        material.generate("RS256")


def test_repr_hides_the_private_key() -> None:
    generated = material.generate("EdDSA")
    assert generated.private_pem.decode() not in repr(generated)
    assert "PRIVATE" not in repr(generated)
