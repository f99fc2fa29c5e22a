"""RFC 9068 access tokens, the pure part: signing, and every check a token must pass (RFC 8725)."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import pytest

from authsvc.errors import InvalidToken
from authsvc.keys import material
from authsvc.tokens.access import (
    MAX_TOKEN_BYTES,
    AccessClaims,
    AccessTokenSigner,
    PublishedKey,
    check_access_token,
    check_header,
    check_times,
    parse_claims,
    read_header,
)

ISSUER = "https://auth.example.com"


def sign(claims: AccessClaims, kid: str, alg: str, key: Any) -> str:
    return AccessTokenSigner(kid, alg, key).sign(claims)


NOW = 1_800_000_000


def _keypair(alg: str) -> tuple[PublishedKey, Any]:
    generated = material.generate(alg)
    public = PublishedKey(generated.kid, alg, material.load_public(generated.public_jwk))
    return public, material.load_private(generated.private_pem)


ED_PUBLIC, ED_PRIVATE = _keypair("EdDSA")
ES_PUBLIC, ES_PRIVATE = _keypair("ES256")
KEYS = {ED_PUBLIC.kid: ED_PUBLIC, ES_PUBLIC.kid: ES_PUBLIC}

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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(value: Any) -> str:
    return _b64(json.dumps(value).encode())


def test_sign_then_check_round_trip() -> None:
    token = sign(CLAIMS, ED_PUBLIC.kid, "EdDSA", ED_PRIVATE)
    assert check_access_token(token, KEYS, issuer=ISSUER, now=NOW, leeway=30) == CLAIMS


@pytest.mark.parametrize("alg", ["EdDSA", "Ed25519", "ES256"])
def test_every_configurable_algorithm_round_trips(alg: str) -> None:
    public, private = _keypair(alg)
    token = sign(CLAIMS, public.kid, alg, private)
    header = read_header(token)
    assert header == {"alg": alg, "typ": "at+jwt", "kid": public.kid}
    keys = {public.kid: public}
    assert check_access_token(token, keys, issuer=ISSUER, now=NOW, leeway=0) == CLAIMS


def test_payload_is_rfc_9068_shaped() -> None:
    token = sign(replace(CLAIMS, nbf=NOW), ED_PUBLIC.kid, "EdDSA", ED_PRIVATE)
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert payload == {
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
    token = sign(replace(CLAIMS, sid=""), ED_PUBLIC.kid, "EdDSA", ED_PRIVATE)
    assert "sid" not in json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


GOOD_HEADER = {"alg": "EdDSA", "typ": "at+jwt", "kid": ED_PUBLIC.kid}


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        pytest.param({**GOOD_HEADER, "alg": "none"}, "algorithm not accepted", id="alg-none"),
        pytest.param({**GOOD_HEADER, "alg": "None"}, "algorithm not accepted", id="alg-None"),
        pytest.param({**GOOD_HEADER, "alg": "HS256"}, "algorithm not accepted", id="alg-hs256"),
        pytest.param({**GOOD_HEADER, "alg": "RS256"}, "algorithm not accepted", id="alg-rs256"),
        pytest.param({**GOOD_HEADER, "alg": "eddsa"}, "algorithm not accepted", id="alg-case"),
        pytest.param(
            {k: v for k, v in GOOD_HEADER.items() if k != "alg"}, "algorithm", id="no-alg"
        ),
        pytest.param({**GOOD_HEADER, "alg": ["EdDSA"]}, "algorithm not accepted", id="alg-list"),
        pytest.param(
            {**GOOD_HEADER, "alg": {"EdDSA": 1}}, "algorithm not accepted", id="alg-object"
        ),
        pytest.param({**GOOD_HEADER, "alg": 1}, "algorithm not accepted", id="alg-number"),
        pytest.param({**GOOD_HEADER, "jku": "https://evil/jwks"}, "header not accepted", id="jku"),
        pytest.param({**GOOD_HEADER, "x5u": "https://evil/cert"}, "header not accepted", id="x5u"),
        pytest.param({**GOOD_HEADER, "jwk": {"kty": "OKP"}}, "header not accepted", id="jwk"),
        pytest.param({**GOOD_HEADER, "x5c": ["MII"]}, "header not accepted", id="x5c"),
        pytest.param({**GOOD_HEADER, "crit": ["exp"]}, "header not accepted", id="crit"),
        pytest.param({**GOOD_HEADER, "x5t": "AAAA"}, "header not accepted", id="x5t"),
        pytest.param({**GOOD_HEADER, "x5t#S256": "AAAA"}, "header not accepted", id="x5t-S256"),
        pytest.param({**GOOD_HEADER, "b64": False}, "header not accepted", id="b64"),
        pytest.param({**GOOD_HEADER, "typ": "JWT"}, "typ", id="typ-jwt"),
        pytest.param({k: v for k, v in GOOD_HEADER.items() if k != "typ"}, "typ", id="no-typ"),
        pytest.param({**GOOD_HEADER, "typ": ["at+jwt"]}, "typ", id="typ-list"),
        pytest.param({**GOOD_HEADER, "kid": "unknown"}, "unknown signing key", id="kid-unknown"),
        pytest.param({k: v for k, v in GOOD_HEADER.items() if k != "kid"}, "unknown", id="no-kid"),
        pytest.param({**GOOD_HEADER, "kid": [ED_PUBLIC.kid]}, "unknown", id="kid-list"),
        pytest.param({**GOOD_HEADER, "alg": "ES256"}, "does not match its key", id="alg-vs-key"),
        pytest.param(
            {**GOOD_HEADER, "alg": "EdDSA", "kid": ES_PUBLIC.kid},
            "does not match",
            id="ec-key-eddsa",
        ),
    ],
)
def test_check_header_refuses(header: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidToken, match=reason):
        check_header(header, KEYS)


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(GOOD_HEADER, id="eddsa"),
        pytest.param({**GOOD_HEADER, "alg": "Ed25519"}, id="rfc9864-ed25519-on-eddsa-key"),
        pytest.param({**GOOD_HEADER, "typ": "application/at+jwt"}, id="typ-media-type"),
        pytest.param({**GOOD_HEADER, "typ": "AT+JWT"}, id="typ-case-insensitive"),
    ],
)
def test_check_header_accepts(header: dict[str, Any]) -> None:
    assert check_header(header, KEYS) is ED_PUBLIC


@pytest.mark.parametrize(
    ("claims", "now", "reason"),
    [
        pytest.param(CLAIMS, NOW + 600 + 30, "expired", id="expired-at-exp-plus-leeway"),
        pytest.param(CLAIMS, NOW + 10_000, "expired", id="long-expired"),
        pytest.param(replace(CLAIMS, nbf=NOW + 31), NOW, "not yet valid", id="nbf-beyond-leeway"),
        pytest.param(replace(CLAIMS, iat=NOW + 31), NOW, "issued in the future", id="iat-future"),
    ],
)
def test_check_times_refuses(claims: AccessClaims, now: float, reason: str) -> None:
    with pytest.raises(InvalidToken, match=reason):
        check_times(claims, now=now, leeway=30)


@pytest.mark.parametrize(
    ("claims", "now"),
    [
        pytest.param(CLAIMS, NOW, id="fresh"),
        pytest.param(CLAIMS, NOW + 629, id="expired-within-leeway"),
        pytest.param(replace(CLAIMS, nbf=NOW + 30), NOW, id="nbf-within-leeway"),
        pytest.param(replace(CLAIMS, iat=NOW + 30), NOW, id="iat-within-leeway"),
    ],
)
def test_check_times_accepts(claims: AccessClaims, now: float) -> None:
    check_times(claims, now=now, leeway=30)


PAYLOAD = CLAIMS.as_payload()


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({k: v for k, v in PAYLOAD.items() if k != name}, id=f"no-{name}")
        for name in ("iss", "sub", "aud", "exp", "iat", "jti", "client_id")
    ]
    + [
        pytest.param({**PAYLOAD, "exp": "soon"}, id="exp-string"),
        pytest.param({**PAYLOAD, "exp": True}, id="exp-bool"),
        pytest.param({**PAYLOAD, "iat": None}, id="iat-null"),
        pytest.param({**PAYLOAD, "nbf": "now"}, id="nbf-string"),
        pytest.param({**PAYLOAD, "aud": 5}, id="aud-number"),
        pytest.param({**PAYLOAD, "aud": ["api", 5]}, id="aud-list-with-number"),
        pytest.param({**PAYLOAD, "sub": ""}, id="sub-empty"),
        pytest.param({**PAYLOAD, "scope": ["read"]}, id="scope-list"),
        pytest.param({**PAYLOAD, "sid": 7}, id="sid-number"),
    ],
)
def test_parse_claims_refuses(payload: dict[str, Any]) -> None:
    with pytest.raises(InvalidToken, match="claim"):
        parse_claims(payload)


def test_parse_claims_accepts_a_single_string_audience() -> None:
    assert parse_claims({**PAYLOAD, "aud": "api"}).aud == ("api",)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        pytest.param("a.b", "malformed token", id="two-parts"),
        pytest.param("a.b.c.d", "malformed token", id="four-parts"),
        pytest.param("", "malformed token", id="empty"),
        pytest.param("!!!.e30.sig", "malformed token header", id="header-not-base64"),
        pytest.param(
            _b64(b"not json") + ".e30.sig", "malformed token header", id="header-not-json"
        ),
        pytest.param(_segment(["alg"]) + ".e30.sig", "malformed token header", id="header-list"),
        pytest.param(
            _b64(b"\xff\xfe") + ".e30.sig", "malformed token header", id="header-not-utf8"
        ),
        pytest.param("é.e30.sig", "malformed token header", id="header-non-ascii"),
        pytest.param("a" * (MAX_TOKEN_BYTES + 1), "too large", id="oversized"),
    ],
)
def test_read_header_refuses(token: str, reason: str) -> None:
    with pytest.raises(InvalidToken, match=reason):
        read_header(token)


def _with_header(header: dict[str, Any], token: str) -> str:
    """The token's payload and signature under another header (so the signature breaks too)."""
    _, payload, signature = token.split(".")
    return f"{_segment(header)}.{payload}.{signature}"


TOKEN = sign(CLAIMS, ED_PUBLIC.kid, "EdDSA", ED_PRIVATE)


@pytest.mark.parametrize(
    ("token", "issuer", "audience", "reason"),
    [
        pytest.param(TOKEN, "https://other.example", None, "issuer", id="wrong-issuer"),
        pytest.param(TOKEN, ISSUER, "other-api", "audience", id="wrong-audience"),
        pytest.param(TOKEN[:-4] + "AAAA", ISSUER, None, "signature", id="tampered-signature"),
        pytest.param(
            TOKEN.split(".")[0]
            + "."
            + _segment({**PAYLOAD, "sub": "mallory"})
            + "."
            + TOKEN.split(".")[2],
            ISSUER,
            None,
            "signature",
            id="tampered-payload",
        ),
        pytest.param(TOKEN.rsplit(".", 1)[0] + ".", ISSUER, None, "signature", id="no-signature"),
        pytest.param(
            _with_header({**GOOD_HEADER, "alg": "Ed25519", "kid": ES_PUBLIC.kid}, TOKEN),
            ISSUER,
            None,
            "does not match",
            id="kid-swapped-to-ec-key",
        ),
    ],
)
def test_check_access_token_refuses(
    token: str, issuer: str, audience: str | None, reason: str
) -> None:
    with pytest.raises(InvalidToken, match=reason):
        check_access_token(token, KEYS, issuer=issuer, now=NOW, leeway=30, audience=audience)


def test_signature_of_another_key_with_same_kid_is_refused() -> None:
    _, other_private = _keypair("EdDSA")
    forged = sign(CLAIMS, ED_PUBLIC.kid, "EdDSA", other_private)
    with pytest.raises(InvalidToken, match="signature"):
        check_access_token(forged, KEYS, issuer=ISSUER, now=NOW, leeway=30)


def test_signed_non_object_payload_is_refused() -> None:
    header = _segment(GOOD_HEADER)
    payload = _segment(["not", "claims"])
    signature = _b64(ED_PRIVATE.private_key.sign(f"{header}.{payload}".encode()))
    with pytest.raises(InvalidToken, match="malformed token claims"):
        check_access_token(
            f"{header}.{payload}.{signature}", KEYS, issuer=ISSUER, now=NOW, leeway=30
        )
