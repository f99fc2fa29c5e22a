"""Access tokens signed without joserfc on the hot path still are exactly joserfc's JWS."""

from __future__ import annotations

import base64
import json
import warnings

import jwt
import pytest
from authsvc_client import PublishedKey, verify_access_token
from joserfc import jws

from authsvc.keys.material import generate, load_private, load_public
from authsvc.tokens.access import AccessClaims, AccessTokenSigner

CLAIMS = AccessClaims(
    iss="https://authsvc.example",
    sub="user-1",
    aud=("api", "other-api"),
    exp=1_700_000_600,
    iat=1_700_000_000,
    jti="jti-1",
    client_id="client-1",
    scope=("read", "write"),
    sid="family-1",
)


def _joserfc_compact(alg: str, kid: str, pem: bytes) -> str:
    payload = json.dumps(CLAIMS.as_payload(), separators=(",", ":")).encode()
    header = {"alg": alg, "typ": "at+jwt", "kid": kid}
    with warnings.catch_warnings():
        # joserfc flags EdDSA as deprecated (RFC 9864); the reference output is what matters here.
        warnings.filterwarnings("ignore", message="EdDSA is deprecated", module="joserfc")
        return jws.serialize_compact(header, payload, load_private(pem), algorithms=[alg])


@pytest.mark.parametrize(
    "alg", [pytest.param("EdDSA", id="EdDSA"), pytest.param("Ed25519", id="Ed25519")]
)
def test_ed25519_tokens_are_byte_for_byte_joserfcs(alg: str) -> None:
    key = generate(alg)
    signer = AccessTokenSigner(key.kid, alg, load_private(key.private_pem))
    assert signer.sign(CLAIMS) == _joserfc_compact(alg, key.kid, key.private_pem)


@pytest.mark.parametrize(
    "alg", [pytest.param(alg, id=alg) for alg in ("EdDSA", "Ed25519", "ES256")]
)
def test_tokens_verify_in_authsvc_and_pyjwt(alg: str) -> None:
    key = generate(alg)
    token = AccessTokenSigner(key.kid, alg, load_private(key.private_pem)).sign(CLAIMS)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": alg, "typ": "at+jwt", "kid": key.kid}
    published = {key.kid: PublishedKey(kid=key.kid, key=load_public(key.public_jwk), alg=alg)}
    verified = verify_access_token(
        token, keys=published, issuer=CLAIMS.iss, audience="api", now=CLAIMS.iat, leeway=0
    )
    assert AccessClaims.from_verified(verified.claims) == CLAIMS
    if alg != "Ed25519":  # PyJWT knows only the EdDSA name for Ed25519 keys
        verified = jwt.decode(
            token,
            jwt.PyJWK(json.loads(key.public_jwk)).key,
            algorithms=[alg],
            audience="api",
            options={"verify_exp": False},
        )
        assert verified == CLAIMS.as_payload()


def test_es256_signatures_are_raw_r_and_s() -> None:
    key = generate("ES256")
    token = AccessTokenSigner(key.kid, "ES256", load_private(key.private_pem)).sign(CLAIMS)
    signature = base64.urlsafe_b64decode(token.split(".")[2] + "==")
    assert len(signature) == 64  # RFC 7518 §3.4, not DER


def test_a_key_of_another_kind_than_the_algorithm_is_refused() -> None:
    key = generate("ES256")
    with pytest.raises(ValueError, match="cannot sign EdDSA"):
        AccessTokenSigner(key.kid, "EdDSA", load_private(key.private_pem))
