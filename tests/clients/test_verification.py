"""verify_access_token: every way a token is refused, and the ways it is accepted."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from authsvc_client import (
    InvalidToken,
    UnknownSigningKey,
    parse_jwks,
    verify_access_token,
)

from .conftest import AUDIENCE, ISSUER, NOW, Signer


def verify(token: str, keys: Any, now: float = NOW, leeway: float = 30) -> Any:
    return verify_access_token(
        token, keys=keys, issuer=ISSUER, audience=AUDIENCE, now=now, leeway=leeway
    )


def segment(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_a_valid_token_yields_its_claims(signer: Signer) -> None:
    token = signer.mint()
    verified = verify(token, signer.published())
    claims = verified.claims
    assert verified.kid == signer.kid
    assert (claims.iss, claims.sub, claims.aud, claims.client_id) == (
        ISSUER,
        "alice",
        (AUDIENCE,),
        "web",
    )
    assert claims.scope == {"notes:read", "notes:write"}
    assert claims.sid == "family-1"
    assert claims.exp == NOW + 600


@pytest.mark.parametrize(
    "alg",
    [pytest.param("EdDSA", id="EdDSA"), pytest.param("Ed25519", id="Ed25519-rfc9864"), "ES256"],
)
def test_each_pinned_algorithm_verifies(alg: str) -> None:
    signer = Signer(alg)
    assert verify(signer.mint(), signer.published()).claims.sub == "alice"


def test_typ_may_use_the_media_type_form(signer: Signer) -> None:
    token = signer.mint(header={"typ": "application/at+jwt"})
    assert verify(token, signer.published()).claims.sub == "alice"


def test_a_single_string_audience_is_accepted(signer: Signer) -> None:
    assert verify(signer.mint(aud=AUDIENCE), signer.published()).claims.aud == (AUDIENCE,)


@pytest.mark.parametrize(
    ("now", "accepted"),
    [
        pytest.param(NOW + 600 + 29, True, id="expired-within-leeway"),
        pytest.param(NOW + 600 + 30, False, id="expired-beyond-leeway"),
        pytest.param(NOW - 29, True, id="nbf-within-leeway"),
        pytest.param(NOW - 31, False, id="nbf-beyond-leeway"),
    ],
)
def test_time_claims_allow_the_leeway_and_no_more(
    signer: Signer, now: float, accepted: bool
) -> None:
    token = signer.mint()
    if accepted:
        verify(token, signer.published(), now=now)
    else:
        with pytest.raises(InvalidToken):
            verify(token, signer.published(), now=now)


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"iss": "https://evil.test"}, id="wrong-issuer"),
        pytest.param({"aud": ["orders"]}, id="wrong-audience"),
        pytest.param({"exp": NOW - 60}, id="expired"),
        pytest.param({"iat": NOW + 3600, "nbf": None}, id="issued-in-the-future"),
        pytest.param({"nbf": NOW + 3600}, id="not-yet-valid"),
        pytest.param({"exp": "tomorrow"}, id="exp-not-a-number"),
        pytest.param({"scope": ["notes:read"]}, id="scope-not-a-string"),
        *(
            pytest.param({name: None}, id=f"missing-{name}")
            for name in ("iss", "sub", "aud", "exp", "iat", "jti", "client_id")
        ),
    ],
)
def test_bad_claims_are_refused(signer: Signer, claims: dict[str, Any]) -> None:
    with pytest.raises(InvalidToken):
        verify(signer.mint(**claims), signer.published())


@pytest.mark.parametrize(
    "header",
    [
        pytest.param({"typ": "JWT"}, id="typ-JWT"),
        pytest.param({"typ": None}, id="typ-missing"),
        pytest.param({"kid": None}, id="kid-missing"),
        pytest.param({"jku": "https://evil.test/jwks"}, id="jku"),
        pytest.param({"x5u": "https://evil.test/cert"}, id="x5u"),
        pytest.param({"x5c": ["MIIB"]}, id="x5c"),
    ],
)
def test_bad_headers_are_refused(signer: Signer, header: dict[str, Any]) -> None:
    with pytest.raises(InvalidToken):
        verify(signer.mint(header=header), signer.published())


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"crit": ["exp"], "exp": 1}, id="crit"),
        pytest.param({"b64": False, "crit": ["b64"]}, id="unencoded-payload"),
        pytest.param({"x-unknown": 1}, id="unregistered-header"),
    ],
)
def test_critical_and_unknown_headers_are_refused(signer: Signer, extra: dict[str, Any]) -> None:
    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": signer.kid, **extra}
    with pytest.raises(InvalidToken):
        verify(signer.forge(header, signer.claims()), signer.published())


def test_forge_makes_tokens_that_verify_when_the_header_is_fine(signer: Signer) -> None:
    # Guards the test above: its tokens fail for their header, not for a broken signature.
    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": signer.kid}
    assert verify(signer.forge(header, signer.claims()), signer.published()).claims.sub == "alice"


def test_an_embedded_jwk_is_refused_even_when_it_signed_the_token() -> None:
    attacker = Signer()
    token = attacker.mint(header={"jwk": attacker.jwk()})
    with pytest.raises(InvalidToken, match="jwk"):
        verify(token, attacker.published())


@pytest.mark.parametrize(
    "alg", [pytest.param("none", id="alg-none"), "HS256", "RS256", pytest.param(None, id="no-alg")]
)
def test_unpinned_algorithms_are_refused_before_any_key_is_used(signer: Signer, alg: Any) -> None:
    header = {"alg": alg, "typ": "at+jwt", "kid": signer.kid}
    header = {k: v for k, v in header.items() if v is not None}
    token = f"{segment(header)}.{segment(signer.claims())}.c2ln"
    with pytest.raises(InvalidToken, match="algorithm"):
        verify(token, signer.published())


def test_an_algorithm_other_than_the_keys_is_refused(signer: Signer) -> None:
    # An EdDSA key published for EdDSA must not verify a token claiming the RFC 9864 name.
    token = signer.mint(header={"alg": "Ed25519"})
    with pytest.raises(InvalidToken, match="algorithm"):
        verify(token, signer.published())


def test_an_unknown_kid_says_so_so_the_caller_may_refresh(signer: Signer) -> None:
    with pytest.raises(UnknownSigningKey):
        verify(signer.mint(header={"kid": "not-a-key"}), signer.published())


def test_a_foreign_key_with_our_kid_fails_the_signature(signer: Signer) -> None:
    foreign = Signer()
    token = foreign.mint(header={"kid": signer.kid})
    with pytest.raises(InvalidToken, match="signature"):
        verify(token, signer.published())


def test_a_tampered_payload_fails_the_signature(signer: Signer) -> None:
    header, _, signature = signer.mint().split(".")
    forged = segment(signer.claims(scope="notes:read notes:write admin"))
    with pytest.raises(InvalidToken, match="signature"):
        verify(f"{header}.{forged}.{signature}", signer.published())


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("abc", id="one-part"),
        pytest.param("a.b", id="two-parts"),
        pytest.param("a.b.c.d", id="four-parts"),
        pytest.param("!!!.e30.c2ln", id="header-not-base64"),
        pytest.param(f"{segment([1, 2])}.e30.c2ln", id="header-not-an-object"),
        pytest.param("bm90IGpzb24.e30.c2ln", id="header-not-json"),
    ],
)
def test_malformed_tokens_are_refused(signer: Signer, token: str) -> None:
    with pytest.raises(InvalidToken):
        verify(token, signer.published())


def test_oversized_tokens_are_refused_before_parsing(signer: Signer) -> None:
    token = signer.mint(padding="x" * 9000)
    with pytest.raises(InvalidToken, match="too large"):
        verify(token, signer.published())


def test_jwks_parsing_skips_what_could_never_verify_our_tokens(signer: Signer) -> None:
    jwks = {
        "keys": [
            signer.jwk(),
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},
            {**Signer().key.as_dict(private=True), "kid": "private", "alg": "EdDSA"},
            {**Signer().jwk(), "kid": "encryption", "use": "enc"},
            {**Signer().jwk(), "kid": None},
            "not a key",
        ]
    }
    assert list(parse_jwks(jwks)) == [signer.kid]
    assert list(parse_jwks(json.dumps(jwks))) == [signer.kid]
