"""RFC 9068 access tokens, authsvc's part: their claims, minting them, and turning what
authsvc_client verified back into them. Every check a token must pass is tested once, in
tests/clients/test_verification.py."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import pytest
from authsvc_client import PublishedKey, verify_access_token

from authsvc.keys import material
from authsvc.tokens.access import AccessClaims, AccessTokenSigner

ISSUER = "https://auth.example.com"
NOW = 1_800_000_000
GENERATED = material.generate("EdDSA")
SIGNER = AccessTokenSigner(GENERATED.kid, "EdDSA", material.load_private(GENERATED.private_pem))
KEYS = {
    GENERATED.kid: PublishedKey(
        kid=GENERATED.kid, key=material.load_public(GENERATED.public_jwk), alg="EdDSA"
    )
}

CLAIMS = AccessClaims(
    iss=ISSUER,
    sub="alice",
    aud=("api",),
    exp=NOW + 600,
    iat=NOW,
    jti="jti-1",
    client_id="app",
    scope=("read", "write"),
    sid="family-1",
)


def payload_of(token: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    return result


def round_trip(claims: AccessClaims) -> AccessClaims:
    """Signed by authsvc, verified by authsvc_client, converted back as authsvc's Verify does."""
    verified = verify_access_token(
        SIGNER.sign(claims), keys=KEYS, issuer=ISSUER, audience=None, now=NOW, leeway=30
    )
    return AccessClaims.from_verified(verified.claims)


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param(CLAIMS, id="user-token"),
        pytest.param(replace(CLAIMS, nbf=NOW), id="with-nbf"),
        pytest.param(replace(CLAIMS, sid=""), id="client-credentials-no-sid"),
        pytest.param(replace(CLAIMS, scope=()), id="no-scopes"),
        pytest.param(replace(CLAIMS, scope=("write", "read", "admin")), id="scopes-keep-order"),
        pytest.param(replace(CLAIMS, aud=("api", "other-api")), id="two-audiences"),
    ],
)
def test_verified_claims_convert_back_to_what_was_signed(claims: AccessClaims) -> None:
    assert round_trip(claims) == claims


def test_payload_is_rfc_9068_shaped() -> None:
    token = SIGNER.sign(replace(CLAIMS, nbf=NOW))
    assert payload_of(token) == {
        "iss": ISSUER,
        "sub": "alice",
        "aud": ["api"],
        "exp": NOW + 600,
        "iat": NOW,
        "nbf": NOW,
        "jti": "jti-1",
        "client_id": "app",
        "scope": "read write",
        "sid": "family-1",
    }


def test_client_credentials_token_has_no_sid() -> None:
    assert "sid" not in payload_of(SIGNER.sign(replace(CLAIMS, sid="")))
