"""Opaque secrets: shape, prefixes, digests, derivation for the grace window."""

from __future__ import annotations

import hashlib

import pytest

from authsvc.tokens import opaque
from authsvc.tokens.opaque import Kind


@pytest.mark.parametrize(
    ("kind", "prefix"),
    [
        pytest.param(Kind.REFRESH_TOKEN, "asrt_", id="refresh-token"),
        pytest.param(Kind.CLIENT_SECRET, "asc_", id="client-secret"),
        pytest.param(Kind.AUTHORIZATION_CODE, "asac_", id="authorization-code"),
    ],
)
def test_new_secret_shape(kind: Kind, prefix: str) -> None:
    secret = opaque.new_secret(kind)
    assert secret.startswith(prefix)
    assert len(secret) == len(prefix) + 43  # 256 bits, base64url, unpadded
    assert "=" not in secret
    assert opaque.looks_like(kind, secret)


def test_new_secrets_differ() -> None:
    assert len({opaque.new_secret(Kind.REFRESH_TOKEN) for _ in range(1000)}) == 1000


GOOD = opaque.new_secret(Kind.REFRESH_TOKEN)


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        pytest.param(Kind.CLIENT_SECRET, GOOD, id="other-prefix"),
        pytest.param(Kind.REFRESH_TOKEN, GOOD[:-1], id="one-char-short"),
        pytest.param(Kind.REFRESH_TOKEN, GOOD + "A", id="one-char-long"),
        pytest.param(Kind.REFRESH_TOKEN, GOOD[:-1] + "=", id="padding"),
        pytest.param(Kind.REFRESH_TOKEN, GOOD[:-1] + "+", id="plus"),
        pytest.param(Kind.REFRESH_TOKEN, GOOD[:-1] + "é", id="non-ascii"),
        pytest.param(Kind.REFRESH_TOKEN, "ASRT_" + GOOD[5:], id="prefix-case"),
        pytest.param(Kind.REFRESH_TOKEN, GOOD[5:] + "asrt_", id="prefix-at-end"),
        pytest.param(Kind.REFRESH_TOKEN, "", id="empty"),
        pytest.param(Kind.REFRESH_TOKEN, "eyJhbGciOiJFZERTQSJ9.e30.c2ln", id="a-jwt"),
    ],
)
def test_looks_like_refuses(kind: Kind, value: str) -> None:
    assert not opaque.looks_like(kind, value)


def test_digest_is_sha256_of_the_text() -> None:
    assert opaque.digest(GOOD) == hashlib.sha256(GOOD.encode()).digest()


def test_matches() -> None:
    stored = opaque.digest(GOOD)
    assert opaque.matches(GOOD, stored)
    assert not opaque.matches(GOOD[:-1] + ("A" if GOOD[-1] != "A" else "B"), stored)
    assert not opaque.matches("", stored)


def test_derive_secret_is_deterministic_per_key_and_parent() -> None:
    key, other_key = b"k" * 32, b"K" * 32
    child = opaque.derive_secret(Kind.REFRESH_TOKEN, key, GOOD)
    assert child == opaque.derive_secret(Kind.REFRESH_TOKEN, key, GOOD)
    assert opaque.looks_like(Kind.REFRESH_TOKEN, child)
    assert child != GOOD
    assert child != opaque.derive_secret(Kind.REFRESH_TOKEN, other_key, GOOD)
    assert child != opaque.derive_secret(Kind.REFRESH_TOKEN, key, child)
