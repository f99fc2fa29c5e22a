"""verify_access_token and check_claims: the one suite of the rules every access token must pass
(RFC 8725, RFC 9068 §4, RFC 7519 §4.1), for authsvc_client's interceptors and authsvc's Verify
alike (authsvc runs every row of REFUSALS through its adapter too).

Each refusal is one row: a token flawed in exactly one way and the description the caller is
told. Where an attack needs a valid signature the token is forged here with a key the verifier
trusts, so it fails for the flaw it names, not for a broken signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, replace
from typing import Any

import pytest
from authsvc_client import (
    MAX_TOKEN_BYTES,
    Claims,
    InvalidToken,
    UnknownSigningKey,
    VerifiedToken,
    check_claims,
    parse_jwks,
    verify_access_token,
)
from joserfc import jws

from .conftest import AUDIENCE, ISSUER, NOW, Signer

ED = Signer("EdDSA")
ED_RFC9864 = Signer("Ed25519")
ES = Signer("ES256")
NO_ALG = Signer("EdDSA")  # published without an `alg`
KEYS = {
    **ED.published(),
    **ED_RFC9864.published(),
    **ES.published(),
    **parse_jwks({"keys": [{k: v for k, v in NO_ALG.jwk().items() if k != "alg"}]}),
}


def verify(
    token: str, *, audience: str | None = AUDIENCE, now: float = NOW, leeway: float = 30
) -> VerifiedToken:
    return verify_access_token(
        token, keys=KEYS, issuer=ISSUER, audience=audience, now=now, leeway=leeway
    )


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def segment(value: Any) -> str:
    return b64(json.dumps(value).encode())


def header(signer: Signer = ED, **changes: Any) -> dict[str, Any]:
    """The header `signer` puts on its tokens, changed as given (None removes a parameter)."""
    values = {"alg": signer.alg, "typ": "at+jwt", "kid": signer.kid, **changes}
    return {k: v for k, v in values.items() if v is not None}


def forged(header_changes: dict[str, Any] | None = None, /, **claim_changes: Any) -> str:
    """A token validly signed by ED, its header and claims changed as given (None removes)."""
    return ED.forge(header(**(header_changes or {})), ED.claims(**claim_changes))


def with_signature(token: str, signature: str) -> str:
    return token.rsplit(".", 1)[0] + "." + signature


def flipped_signature(token: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token.rsplit(".", 1)[1] + "=="))
    raw[0] ^= 0x01
    return with_signature(token, b64(bytes(raw)))


def hs256(secret: bytes) -> str:
    """RFC 8725 §2.1: an HMAC token keyed with something the attacker knows of our key."""
    signing_input = f"{segment(header(alg='HS256'))}.{segment(ED.claims())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def header_padded_to(length: int) -> dict[str, Any]:
    """ED's header with a `cty` padded so that its segment is as long as it can be without
    exceeding `length` characters."""
    padded = {}
    for n in range(length):
        candidate = header(cty="x" * n)
        if len(segment(candidate)) > length:
            return padded
        padded = candidate
    raise AssertionError("unreachable")


def signed_payload(raw: bytes) -> str:
    return ED.sign_segments(segment(header()), b64(raw))


MAX_HEADER = jws.JWSRegistry.max_header_length
TOKEN = forged()
HEAD, BODY, SIGNATURE = TOKEN.split(".")
MALFORMED, HEADER_MALFORMED = "malformed token", "malformed token header"
ALG, TYP, KID = (
    "token algorithm not accepted",
    "not an access token (typ)",
    "token kid missing or malformed",
)
KEY_ALG, SIG = "token algorithm does not match its key", "token signature is invalid"
CLAIMS_MALFORMED = "malformed token claims"


def claim(name: str) -> str:
    return f"claim {name} missing or malformed"


def whole_seconds(name: str) -> str:
    return f"claim {name} not in whole seconds"


def header_param(name: str) -> str:
    return f"token header not accepted: {name}"


REFUSALS = [
    # Size and shape, before anything is decoded (RFC 8725 §3.x; RFC 7515 §7.1).
    pytest.param("a" * (MAX_TOKEN_BYTES + 1), "token too large", id="oversized"),
    pytest.param(forged(padding="x" * 9000), "token too large", id="oversized-signed"),
    pytest.param("", MALFORMED, id="empty"),
    pytest.param("garbage", MALFORMED, id="one-part"),
    pytest.param("a.b", MALFORMED, id="two-parts"),
    pytest.param("a.b.c.d", MALFORMED, id="four-parts"),
    pytest.param("...", MALFORMED, id="dots"),
    pytest.param(f".{BODY}.{SIGNATURE}", MALFORMED, id="empty-header"),
    pytest.param(f"{HEAD}..{SIGNATURE}", MALFORMED, id="empty-payload-detached"),
    pytest.param(with_signature(TOKEN, ""), MALFORMED, id="empty-signature"),
    pytest.param("é.e30.c2ln", MALFORMED, id="non-ascii"),
    # The header, parsed but not trusted (RFC 7515 §5.2).
    pytest.param("a.b.c", HEADER_MALFORMED, id="header-bad-base64-length"),
    pytest.param("!!!.e30.c2ln", HEADER_MALFORMED, id="header-not-base64url"),
    pytest.param(f"{HEAD}==.{BODY}.{SIGNATURE}", MALFORMED, id="header-padded"),
    pytest.param(
        ED.sign_segments(b64(json.dumps(header()).encode("utf-16")), BODY),
        HEADER_MALFORMED,
        id="header-utf16",
    ),
    pytest.param(f"{b64(b'not json')}.e30.c2ln", HEADER_MALFORMED, id="header-not-json"),
    pytest.param(f"{b64(bytes([255, 254]))}.e30.c2ln", HEADER_MALFORMED, id="header-not-utf8"),
    pytest.param(f"{segment(['alg'])}.e30.c2ln", HEADER_MALFORMED, id="header-list"),
    pytest.param(f"{segment('alg')}.e30.c2ln", HEADER_MALFORMED, id="header-string"),
    pytest.param(f"{b64(b'[' * 384)}.e30.c2ln", HEADER_MALFORMED, id="header-nested"),
    # joserfc reads at most 512 characters of header and 1024 of signature: beyond, the token is
    # too large or malformed, not badly signed, and no unknown kid in it sends anyone for keys.
    pytest.param(
        ED.forge(header_padded_to(MAX_HEADER + 2), ED.claims()),
        "token header too large",
        id="header-beyond-joserfcs-limit",
    ),
    pytest.param(forged({"kid": "k" * 600}), "token header too large", id="header-huge-kid"),
    # Nested too deep for json.loads: too large to be read at all.
    pytest.param(f"{b64(b'[' * 5000)}.e30.c2ln", "token header too large", id="header-nested-deep"),
    pytest.param(with_signature(TOKEN, "A" * 1100), MALFORMED, id="signature-beyond-1-kib"),
    # Pinned algorithms (RFC 8725 §3.1, §3.2): never none, never HMAC, exact names only.
    pytest.param(forged({"alg": "none"}).rsplit(".", 1)[0] + ".", MALFORMED, id="alg-none"),
    pytest.param(forged({"alg": "none"}), ALG, id="alg-none-with-signature"),
    pytest.param(forged({"alg": "None"}), ALG, id="alg-None"),
    pytest.param(hs256(base64.urlsafe_b64decode(ED.jwk()["x"] + "=")), ALG, id="hs256-public-key"),
    pytest.param(hs256(ED.key.as_pem(private=False)), ALG, id="hs256-public-pem"),
    pytest.param(hs256(json.dumps(ED.jwk()).encode()), ALG, id="hs256-public-jwk"),
    pytest.param(forged({"alg": "RS256"}), ALG, id="alg-rs256"),
    pytest.param(forged({"alg": "eddsa"}), ALG, id="alg-case"),
    pytest.param(forged({"alg": None}), ALG, id="no-alg"),
    pytest.param(ED.forge({**header(), "alg": None}, ED.claims()), ALG, id="alg-null"),
    pytest.param(forged({"alg": ["EdDSA"]}), ALG, id="alg-list"),
    pytest.param(forged({"alg": {"EdDSA": 1}}), ALG, id="alg-object"),
    pytest.param(forged({"alg": 1}), ALG, id="alg-number"),
    # Headers that would choose the key or change the rules (RFC 8725 §3.10, RFC 7515 §4.1.11).
    pytest.param(forged({"jku": "https://evil.test/jwks"}), header_param("jku"), id="jku"),
    pytest.param(forged({"x5u": "https://evil.test/cert"}), header_param("x5u"), id="x5u"),
    pytest.param(forged({"jwk": {"kty": "OKP", "crv": "Ed25519"}}), header_param("jwk"), id="jwk"),
    pytest.param(forged({"jwk": ED.jwk()}), header_param("jwk"), id="jwk-of-the-signing-key"),
    pytest.param(forged({"x5c": ["MIIB"]}), header_param("x5c"), id="x5c"),
    pytest.param(forged({"x5t": "AAAA"}), header_param("x5t"), id="x5t"),
    pytest.param(forged({"x5t#S256": "AAAA"}), header_param("x5t#S256"), id="x5t-S256"),
    pytest.param(forged({"crit": ["exp"], "exp": 1}), header_param("crit"), id="crit"),
    pytest.param(forged({"b64": False}), header_param("b64"), id="b64"),
    pytest.param(forged({"b64": False, "crit": ["b64"]}), header_param("b64"), id="unencoded"),
    pytest.param(forged({"x-unknown": 1}), "token header not accepted", id="unregistered"),
    pytest.param(forged({"cty": 5}), "token header not accepted", id="cty-not-a-string"),
    # RFC 9068 §4: typ says access token.
    pytest.param(forged({"typ": "JWT"}), TYP, id="typ-jwt"),
    pytest.param(forged({"typ": "application/jwt"}), TYP, id="typ-media-type-jwt"),
    pytest.param(forged({"typ": None}), TYP, id="typ-missing"),
    pytest.param(forged({"typ": ["at+jwt"]}), TYP, id="typ-list"),
    # The kid names the key; nothing else may (an unknown kid: see below).
    pytest.param(forged({"kid": None}), KID, id="kid-missing"),
    pytest.param(forged({"kid": ""}), KID, id="kid-empty"),
    pytest.param(forged({"kid": [ED.kid]}), KID, id="kid-list"),
    pytest.param(forged({"kid": 7}), KID, id="kid-number"),
    # One algorithm per key (RFC 8725 §3.1); Ed25519's two names are one algorithm.
    pytest.param(forged({"alg": "ES256"}), KEY_ALG, id="es256-on-ed25519-key"),
    pytest.param(forged({"kid": ES.kid}), KEY_ALG, id="eddsa-on-ec-key"),
    pytest.param(forged({"alg": "Ed25519", "kid": ES.kid}), KEY_ALG, id="ed25519-on-ec-key"),
    pytest.param(NO_ALG.forge(header(NO_ALG), NO_ALG.claims()), KEY_ALG, id="key-without-alg"),
    # The signature, by joserfc, with exactly the key the kid names.
    pytest.param(flipped_signature(TOKEN), SIG, id="tampered-signature"),
    pytest.param(
        TOKEN[:-4] + ("AAAA" if TOKEN[-4:] != "AAAA" else "BBBB"), SIG, id="tampered-tail"
    ),
    pytest.param(
        f"{HEAD}.{segment(ED.claims(scope='admin'))}.{SIGNATURE}", SIG, id="tampered-payload"
    ),
    pytest.param(Signer().forge(header(), ED.claims()), SIG, id="our-kid-their-key"),
    pytest.param(with_signature(TOKEN, "!!!!"), SIG, id="signature-not-base64url"),
    pytest.param(ED.sign_segments(HEAD, "!!!!"), MALFORMED, id="payload-not-base64url"),
    # Claims: a JSON object (RFC 7519 §7.2) with RFC 9068 §2.2's claims, each of its type.
    pytest.param(signed_payload(b"not json"), CLAIMS_MALFORMED, id="payload-not-json"),
    pytest.param(signed_payload(b'["not", "claims"]'), CLAIMS_MALFORMED, id="payload-list"),
    pytest.param(
        signed_payload(json.dumps(ED.claims()).encode("utf-16")),
        CLAIMS_MALFORMED,
        id="payload-utf16",
    ),
    pytest.param(signed_payload(b"[" * 5000), CLAIMS_MALFORMED, id="payload-nested-deep"),
    *(
        pytest.param(forged(**{name: None}), claim(name), id=f"no-{name}")
        for name in ("iss", "sub", "aud", "exp", "iat", "jti", "client_id")
    ),
    pytest.param(forged(iss=5), claim("iss"), id="iss-number"),
    pytest.param(forged(sub=""), claim("sub"), id="sub-empty"),
    pytest.param(forged(jti=7), claim("jti"), id="jti-number"),
    pytest.param(forged(client_id=""), claim("client_id"), id="client_id-empty"),
    pytest.param(forged(aud=5), claim("aud"), id="aud-number"),
    pytest.param(forged(aud=[AUDIENCE, 5]), claim("aud"), id="aud-list-with-number"),
    pytest.param(forged(aud=[]), claim("aud"), id="aud-empty-list"),
    pytest.param(forged(aud=""), claim("aud"), id="aud-empty-string"),
    pytest.param(forged(aud={AUDIENCE: 1}), claim("aud"), id="aud-object"),
    pytest.param(forged(exp="tomorrow"), claim("exp"), id="exp-string"),
    pytest.param(forged(exp=True), claim("exp"), id="exp-bool"),
    pytest.param(forged(exp=float("nan")), claim("exp"), id="exp-nan"),
    pytest.param(forged(exp=float("inf")), claim("exp"), id="exp-infinity"),
    pytest.param(forged(exp=10**400), claim("exp"), id="exp-beyond-any-float"),
    pytest.param(forged(exp=2**53 + 1), claim("exp"), id="exp-beyond-json-integers"),
    pytest.param(forged(iat=-(10**400)), claim("iat"), id="iat-beyond-any-float"),
    pytest.param(forged(nbf=1e300), claim("nbf"), id="nbf-huge-float"),
    pytest.param(ED.forge(header(), {**ED.claims(), "iat": None}), claim("iat"), id="iat-null"),
    pytest.param(forged(iat=True), claim("iat"), id="iat-bool"),
    pytest.param(forged(nbf="now"), claim("nbf"), id="nbf-string"),
    pytest.param(ED.forge(header(), {**ED.claims(), "nbf": None}), claim("nbf"), id="nbf-null"),
    pytest.param(forged(nbf=False), claim("nbf"), id="nbf-bool"),
    # Whole seconds only: truncated, an nbf or iat beyond the leeway by a fraction got in.
    pytest.param(forged(nbf=NOW + 30.5), whole_seconds("nbf"), id="nbf-with-a-fraction"),
    pytest.param(forged(iat=NOW + 30.5, nbf=None), whole_seconds("iat"), id="iat-with-a-fraction"),
    pytest.param(forged(exp=NOW + 0.5), whole_seconds("exp"), id="exp-with-a-fraction"),
    pytest.param(forged(iat=NOW - 0.5, nbf=None), whole_seconds("iat"), id="iat-fraction-past"),
    pytest.param(forged(scope=["notes:read"]), claim("scope"), id="scope-list"),
    pytest.param(forged(sid=7), claim("sid"), id="sid-number"),
    # Whose token, for whom, and when (RFC 9068 §4; RFC 7519 §4.1.3-4.1.6, leeway 30 s).
    pytest.param(forged(iss="https://evil.test"), "token issuer not accepted", id="wrong-issuer"),
    pytest.param(forged(aud=["orders"]), "token audience not accepted", id="wrong-audience"),
    pytest.param(forged(exp=NOW - 30), "token expired", id="expired-at-exp-plus-leeway"),
    pytest.param(forged(exp=NOW - 10_000), "token expired", id="long-expired"),
    pytest.param(forged(nbf=NOW + 31), "token not yet valid", id="nbf-beyond-leeway"),
    pytest.param(forged(nbf=NOW + 3600), "token not yet valid", id="nbf-far-future"),
    pytest.param(
        forged(iat=NOW + 31, nbf=None), "token issued in the future", id="iat-beyond-leeway"
    ),
    pytest.param(
        forged(iat=NOW + 3600, exp=NOW + 7200), "token issued in the future", id="iat-far-future"
    ),
]


@pytest.mark.parametrize(("token", "description"), REFUSALS)
def test_refused(token: str, description: str) -> None:
    with pytest.raises(InvalidToken) as refused:
        verify(token)
    assert refused.value.description == description
    # Only an unknown kid may send the interceptor to fetch keys again.
    assert type(refused.value) is InvalidToken


@pytest.mark.parametrize(
    ("token", "keys"),
    [
        pytest.param(Signer().mint(), KEYS, id="kid-unknown"),
        pytest.param(forged({"kid": "kid-nobody-published"}), KEYS, id="kid-made-up"),
        pytest.param(TOKEN, {k: v for k, v in KEYS.items() if k != ED.kid}, id="key-purged"),
    ],
)
def test_an_unknown_kid_says_so_so_the_caller_may_refresh(token: str, keys: Any) -> None:
    with pytest.raises(UnknownSigningKey, match=r"^unknown signing key$"):
        verify_access_token(token, keys=keys, issuer=ISSUER, audience=AUDIENCE, now=NOW)


ACCEPTED = [
    pytest.param(ED.mint(), id="eddsa"),
    pytest.param(ED_RFC9864.mint(), id="ed25519-rfc9864"),
    pytest.param(ES.mint(), id="es256"),
    pytest.param(forged({"alg": "Ed25519"}), id="ed25519-header-on-eddsa-key"),
    pytest.param(
        ED_RFC9864.forge(header(ED_RFC9864, alg="EdDSA"), ED.claims()), id="eddsa-on-ed25519-key"
    ),
    pytest.param(forged({"typ": "application/at+jwt"}), id="typ-media-type"),
    pytest.param(forged({"typ": "AT+JWT"}), id="typ-case-insensitive"),
    pytest.param(forged({"typ": "Application/At+Jwt"}), id="typ-media-type-mixed-case"),
    pytest.param(forged(aud=AUDIENCE), id="aud-single-string"),
    pytest.param(forged(aud=["orders", AUDIENCE]), id="aud-among-several"),
    pytest.param(forged(nbf=None), id="no-nbf"),
    pytest.param(forged(scope=None, sid=None), id="client-credentials-no-scope-no-sid"),
    pytest.param(forged(cnf={"x5t#S256": "AAAA"}), id="other-claims"),
    pytest.param(ED.forge(header_padded_to(MAX_HEADER), ED.claims()), id="header-at-the-limit"),
    pytest.param(forged(exp=float(NOW + 600), iat=float(NOW)), id="whole-seconds-as-floats"),
    pytest.param(forged(exp=NOW - 29), id="expired-within-leeway"),
    pytest.param(forged(nbf=NOW + 30), id="nbf-within-leeway"),
    pytest.param(forged(iat=NOW + 30, nbf=None), id="iat-within-leeway"),
]


@pytest.mark.parametrize("token", ACCEPTED)
def test_accepted(token: str) -> None:
    assert verify(token).claims.sub == "alice"


def test_forging_works() -> None:
    # Guards REFUSALS: its forged tokens fail for their one flaw, not because forging is broken.
    assert verify(forged()).kid == ED.kid
    assert verify(signed_payload(json.dumps(ED.claims()).encode())).kid == ED.kid


def test_a_valid_token_yields_its_claims() -> None:
    claims = ED.claims()
    verified = verify(ED.forge(header(), claims))
    assert verified == VerifiedToken(
        Claims(
            iss=ISSUER,
            sub="alice",
            aud=(AUDIENCE,),
            exp=NOW + 600,
            iat=NOW,
            nbf=NOW,
            jti=claims["jti"],
            client_id="web",
            scope=frozenset({"notes:read", "notes:write"}),
            sid="family-1",
        ),
        kid=ED.kid,
    )
    assert verified.claims.raw == claims


def test_the_verified_claims_are_read_only_at_every_depth() -> None:
    # A cached verification hands these same claims to every later call with the token.
    claims = ED.claims(aud=[AUDIENCE, "orders"], cnf={"jkt": "thumb"}, roles=[{"name": "admin"}])
    token = ED.forge(header(), claims)
    raw = verify(token).claims.raw
    with pytest.raises(TypeError, match="read-only"):
        raw["sub"] = "mallory"  # type: ignore[index]
    with pytest.raises(TypeError, match="read-only"):
        raw["aud"].append("billing")
    with pytest.raises(TypeError, match="read-only"):
        raw["cnf"].pop("jkt")
    with pytest.raises(TypeError, match="read-only"):
        raw["roles"][0]["name"] = "root"
    assert raw == verify(token).claims.raw == claims
    assert json.loads(json.dumps(raw)) == claims


def test_without_an_audience_any_audience_is_accepted() -> None:
    # authsvc's Verify checks the audience per call on cached claims; introspection reports it.
    assert verify(forged(aud=["orders"]), audience=None).claims.aud == ("orders",)


@pytest.mark.parametrize(
    ("now", "accepted"),
    [
        pytest.param(NOW + 600.4, True, id="exp-within-a-fractional-leeway"),
        pytest.param(NOW + 600.5, False, id="exp-plus-fractional-leeway"),
        pytest.param(NOW - 0.5, True, id="nbf-within-a-fractional-leeway"),
        pytest.param(NOW - 0.6, False, id="nbf-beyond-a-fractional-leeway"),
    ],
)
def test_the_leeway_may_be_a_fraction_of_a_second(now: float, accepted: bool) -> None:
    token = forged(exp=NOW + 600, nbf=NOW)
    if accepted:
        verify(token, now=now, leeway=0.5)
    else:
        with pytest.raises(InvalidToken):
            verify(token, now=now, leeway=0.5)


@dataclass(frozen=True)
class RememberedClaims:
    """Claims as a caller might cache them: `nbf` 0 for none, as authsvc's AccessClaims."""

    iss: str = ISSUER
    aud: tuple[str, ...] = (AUDIENCE,)
    exp: int = NOW + 600
    iat: int = NOW
    nbf: int = 0


@pytest.mark.parametrize(
    ("claims", "audience", "now", "description"),
    [
        pytest.param(RememberedClaims(), AUDIENCE, NOW + 630, "token expired", id="expired-since"),
        pytest.param(RememberedClaims(), "orders", NOW, "token audience not accepted", id="aud"),
        pytest.param(
            RememberedClaims(iss="https://evil.test"),
            None,
            NOW,
            "token issuer not accepted",
            id="iss",
        ),
        pytest.param(
            RememberedClaims(iat=NOW + 60),
            None,
            NOW,
            "token issued in the future",
            id="clock-stepped-back",
        ),
        pytest.param(RememberedClaims(), None, NOW + 629, None, id="still-valid-any-audience"),
    ],
)
def test_check_claims_on_claims_verified_earlier(
    claims: RememberedClaims, audience: str | None, now: float, description: str | None
) -> None:
    if description is None:
        check_claims(claims, issuer=ISSUER, audience=audience, now=now, leeway=30)
        return
    with pytest.raises(InvalidToken) as refused:
        check_claims(claims, issuer=ISSUER, audience=audience, now=now, leeway=30)
    assert refused.value.description == description


def test_check_claims_is_the_check_verification_applies() -> None:
    verified = verify(TOKEN)
    later = replace(verified.claims, exp=NOW - 30)
    with pytest.raises(InvalidToken, match=r"^token expired$"):
        check_claims(later, issuer=ISSUER, audience=AUDIENCE, now=NOW, leeway=30)


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
