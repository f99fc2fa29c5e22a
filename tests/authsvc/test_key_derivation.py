"""Keys derived from the KEK: fixed per purpose, independent across purposes and KEKs."""

from __future__ import annotations

import pytest

from authsvc.keys.derivation import GATEWAY_SESSION, REFRESH_GRACE, derive_key

KEK = bytes(range(32))


def test_the_refresh_grace_key_is_the_one_earlier_releases_derived() -> None:
    # Children minted in the grace window before an upgrade must still be found after it.
    assert derive_key(KEK, REFRESH_GRACE).hex() == (
        "2aab5b4ad95ccbc7b9a60d1becc01e4b65d150729df54d6eabbb350e0c4dd250"
    )


def test_each_purpose_has_its_own_key() -> None:
    keys = {derive_key(KEK, purpose) for purpose in (REFRESH_GRACE, GATEWAY_SESSION)}
    assert len(keys) == 2
    assert KEK not in keys


@pytest.mark.parametrize("purpose", [REFRESH_GRACE, GATEWAY_SESSION])
def test_another_kek_derives_another_key(purpose: bytes) -> None:
    assert derive_key(KEK, purpose) != derive_key(bytes(32), purpose)
    assert len(derive_key(KEK, purpose)) == 32
