"""Key material: every configurable signing algorithm survives its PEM round trip."""

from __future__ import annotations

import pytest
from joserfc.jwk import ECKey, OKPKey

from authsvc.config import SIGNING_ALGORITHMS
from authsvc.keys.material import generate, load_private


@pytest.mark.parametrize("alg", [pytest.param(alg, id=alg) for alg in SIGNING_ALGORITHMS])
def test_a_generated_private_key_loads_back(alg: str) -> None:
    key = generate(alg)
    loaded = load_private(key.private_pem)
    assert isinstance(loaded, ECKey if alg == "ES256" else OKPKey)
    assert loaded.thumbprint() == key.kid
