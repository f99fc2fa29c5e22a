"""Verification of an authsvc access token: the one implementation of the checks every access
token must pass, used by the interceptors here and by authsvc's own `Verify`.

A pure function of the token, the trusted keys, the expected issuer and audience, and the time.
Order matters and follows RFC 8725 §3 and RFC 9068 §4: size and shape, then the header (pinned
algorithms, no key-carrying or critical headers, `typ`, `kid`), then the signature with the one
key the `kid` names, and only then the claims (types, `iss`, `exp`, `nbf`, `iat` with leeway,
`aud`). Nothing in the token ever makes us fetch or trust a key we did not already hold.

Every refusal's description goes over the wire: fixed short text, never a part of the token.
"""

from __future__ import annotations

import base64
import json
import math
import threading
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from joserfc import jws
from joserfc.errors import (
    DecodeError,
    ExceededSizeError,
    InvalidHeaderValueError,
    JoseError,
    SecurityWarning,
    UnsupportedHeaderError,
)

from ._errors import InvalidToken, UnknownSigningKey
from ._frozen import FrozenDict, freeze
from ._jwks import PublishedKey

__all__ = [
    "ACCESS_TOKEN_TYPES",
    "AUDIENCE_NOT_ACCEPTED",
    "ED25519_NAMES",
    "FORBIDDEN_HEADERS",
    "MAX_TOKEN_BYTES",
    "PINNED_ALGORITHMS",
    "Claims",
    "VerifiedToken",
    "check_claims",
    "verify_access_token",
]

#: The only algorithms accepted: Ed25519 under its common (`EdDSA`) and its RFC 9864 (`Ed25519`)
#: name, and ES256 for verifiers without EdDSA. Never `none`, never HMAC (RFC 8725 §3.1).
PINNED_ALGORITHMS = frozenset({"EdDSA", "Ed25519", "ES256"})

#: RFC 9864 renamed the Ed25519 use of `EdDSA` to `Ed25519`: one algorithm under two names, so a
#: key published under either verifies a token naming the other (the key type is still checked).
#: authsvc signs, generates keys and validates its configuration by these same two sets.
ED25519_NAMES = frozenset({"EdDSA", "Ed25519"})

#: Tokens longer than this are refused before any parsing; ours are well under 2 KiB.
MAX_TOKEN_BYTES = 8192
# joserfc refuses a longer protected header segment (base64url characters) before it checks the
# signature; ours are about 120. Refused here first, as too large rather than as a bad signature.
_MAX_HEADER_BYTES = jws.JWSRegistry.max_header_length
#: The refusal of a token for another audience; callers that know what was wanted add to it.
AUDIENCE_NOT_ACCEPTED = "token audience not accepted"

#: Header parameters that would let the token choose its own key or demand extensions we do not
#: implement (RFC 8725 §3.10, RFC 7515 §4.1.11, RFC 7797). Refused outright, never followed.
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit", "b64"})

#: RFC 9068 §4: the `typ` header of an access token, compared case-insensitively (RFC 7515
#: §4.1.9: media type values are).
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})

# joserfc is told each token's one algorithm; its registries are built once, not per token.
_REGISTRIES = {alg: jws.JWSRegistry(algorithms=[alg]) for alg in PINNED_ALGORITHMS}

# joserfc's RFC 9864 deprecation warning for `EdDSA` changes the process-wide warning filters
# while it is silenced; this lock keeps two verifying threads from restoring each other's state.
_WARNINGS_LOCK = threading.Lock()


@dataclass(frozen=True)
class Claims:
    """The verified claims of an RFC 9068 access token (§2.2).

    `scope` is the set of granted scopes (the token carries them space-separated), `sid` the
    family (session) id, empty for client-credentials tokens, and `raw` every claim as signed:
    read-only, because a cached verification hands the same claims to every call with the token
    (`FrozenDict`; `dict(claims.raw)` is a copy of its top level to change).
    """

    iss: str
    sub: str
    aud: tuple[str, ...]
    exp: int
    iat: int
    jti: str
    client_id: str
    scope: frozenset[str] = frozenset()
    nbf: int | None = None
    sid: str = ""
    raw: Mapping[str, Any] = field(default_factory=FrozenDict, repr=False, compare=False)

    def has_scopes(self, required: Iterable[str]) -> bool:
        """Whether every scope in `required` was granted."""
        return self.scope.issuperset(required)


@dataclass(frozen=True)
class VerifiedToken:
    """A token that passed verification: its claims and the `kid` of the key that signed it."""

    claims: Claims
    kid: str


class _CheckableClaims(Protocol):
    """What `check_claims` reads: a `Claims`, or a caller's own record of verified claims."""

    @property
    def iss(self) -> str: ...
    @property
    def aud(self) -> tuple[str, ...]: ...
    @property
    def exp(self) -> int: ...
    @property
    def nbf(self) -> int | None: ...
    @property
    def iat(self) -> int: ...


def verify_access_token(
    token: str,
    *,
    keys: Mapping[str, PublishedKey],
    issuer: str,
    audience: str | None,
    now: float,
    leeway: float = 30.0,
) -> VerifiedToken:
    """Verify an access token against trusted `keys` and return its claims.

    `audience=None` skips the audience check, for a caller that checks it later or not at all
    (authsvc's introspection reports `aud` instead). Raises `UnknownSigningKey` when the `kid`
    is not among `keys` (a key refresh may help) and `InvalidToken` for every other failure,
    with a short description safe to send to the caller. Revocation is not checked here; see
    `RevocationSet`.
    """
    header = _header(token)
    key = _signing_key(header, keys)
    claims = _claims(_signed_payload(token, key, header["alg"]))
    check_claims(claims, issuer=issuer, audience=audience, now=now, leeway=leeway)
    return VerifiedToken(claims=claims, kid=key.kid)


def check_claims(
    claims: _CheckableClaims, *, issuer: str, audience: str | None, now: float, leeway: float
) -> None:
    """The rules on verified claims that depend on the caller and the time: `iss` (RFC 9068 §4),
    `exp`, `nbf` and `iat` with `leeway` seconds of clock skew (RFC 7519 §4.1.4-4.1.6), and `aud`
    unless `audience` is None (RFC 7519 §4.1.3).

    Part of `verify_access_token`; call it alone on claims verified earlier (a cache hit), so a
    remembered verification never outlives its token. Raises `InvalidToken`.
    """
    if claims.iss != issuer:
        raise InvalidToken("token issuer not accepted")
    if claims.exp + leeway <= now:
        raise InvalidToken("token expired")
    if claims.nbf is not None and claims.nbf - leeway > now:
        raise InvalidToken("token not yet valid")
    if claims.iat - leeway > now:
        raise InvalidToken("token issued in the future")
    if audience is not None and audience not in claims.aud:
        raise InvalidToken(AUDIENCE_NOT_ACCEPTED)


def _header(token: str) -> dict[str, Any]:
    """The protected header, refused unless it asks for exactly what we accept (RFC 8725 §3.1,
    §3.10, §3.11; RFC 9068 §4). Parsed, not trusted: nothing here is signed yet."""
    if len(token) > MAX_TOKEN_BYTES:
        raise InvalidToken("token too large")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts) or not token.isascii():
        raise InvalidToken("malformed token")
    head = parts[0]
    if len(head) > _MAX_HEADER_BYTES:
        raise InvalidToken("token header too large")
    try:
        # Lenient base64 is enough to decide: joserfc decodes this segment again, strictly,
        # before it checks the signature over it, so no header it reads otherwise can pass.
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)).decode())
    except (ValueError, RecursionError):  # binascii.Error is a ValueError; deep nesting recurses
        raise InvalidToken("malformed token header") from None
    if not isinstance(header, dict):
        raise InvalidToken("malformed token header")
    alg = header.get("alg")
    # isinstance first: the header is attacker-controlled JSON, and a list or object is unhashable.
    if not isinstance(alg, str) or alg not in PINNED_ALGORITHMS:
        raise InvalidToken("token algorithm not accepted")
    forbidden = FORBIDDEN_HEADERS.intersection(header)
    if forbidden:
        raise InvalidToken(f"token header not accepted: {min(forbidden)}")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES:
        raise InvalidToken("not an access token (typ)")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidToken("token kid missing or malformed")
    return header


def _signing_key(header: Mapping[str, Any], keys: Mapping[str, PublishedKey]) -> PublishedKey:
    """The one trusted key the `kid` names, if it was published for the token's algorithm (RFC
    8725 §3.1: a key is used with one algorithm; a key published without one verifies nothing)."""
    key = keys.get(header["kid"])
    if key is None:
        raise UnknownSigningKey("unknown signing key")
    alg = header["alg"]
    if alg != key.alg and not {alg, key.alg} <= ED25519_NAMES:
        raise InvalidToken("token algorithm does not match its key")
    return key


def _signed_payload(token: str, key: PublishedKey, alg: str) -> bytes:
    """The payload, once joserfc has verified the signature with exactly `alg` and `key`."""
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            # RFC 9864 deprecates the polymorphic `EdDSA` name; we keep it for interop (DESIGN.md)
            # and our keys pin the curve to Ed25519, so the ambiguity it warns about cannot arise.
            warnings.filterwarnings("ignore", "EdDSA is deprecated", SecurityWarning)
            signed = jws.deserialize_compact(token, key.key, registry=_REGISTRIES[alg])
    except (DecodeError, ExceededSizeError) as exc:
        # ExceededSizeError: a segment longer than joserfc reads (a signature beyond 1 KiB; ours
        # are 86 characters), not a signature it checked.
        raise InvalidToken("malformed token") from exc
    except (UnsupportedHeaderError, InvalidHeaderValueError) as exc:
        # joserfc admits only registered header parameters, each of its registered type.
        raise InvalidToken("token header not accepted") from exc
    except JoseError as exc:
        raise InvalidToken("token signature is invalid") from exc
    return signed.payload


def _claims(payload: bytes) -> Claims:
    """The typed claims; RFC 9068 §2.2: iss, sub, aud, exp, iat, jti and client_id are always
    present, and every claim present has its registered type (RFC 7519 §4.1)."""
    try:
        raw = freeze(json.loads(payload.decode()))
    except (ValueError, RecursionError):
        raise InvalidToken("malformed token claims") from None
    if not isinstance(raw, dict):
        raise InvalidToken("malformed token claims")
    return Claims(
        iss=_string(raw, "iss"),
        sub=_string(raw, "sub"),
        aud=_audiences(raw),
        exp=_numeric_date(raw, "exp"),
        iat=_numeric_date(raw, "iat"),
        nbf=_numeric_date(raw, "nbf") if "nbf" in raw else None,
        jti=_string(raw, "jti"),
        client_id=_string(raw, "client_id"),
        scope=frozenset(_string(raw, "scope", required=False).split()),
        sid=_string(raw, "sid", required=False),
        raw=raw,
    )


def _malformed(name: str) -> InvalidToken:
    return InvalidToken(f"claim {name} missing or malformed")


def _string(raw: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    """A string claim; a required one must not be empty, an optional one may be absent."""
    value = raw.get(name, None if required else "")
    if not isinstance(value, str) or (required and not value):
        raise _malformed(name)
    return value


MAX_NUMERIC_DATE = 2**53


def _numeric_date(raw: Mapping[str, Any], name: str) -> int:
    """RFC 7519 §2 NumericDate: a JSON number. Not a bool (an int in Python), not NaN or
    infinity, which never compare as expired, and not beyond ±2^53 seconds (JSON's exact
    integers, 285 million years), where an int no longer compares with the clock's float.

    And whole seconds, which is all authsvc mints: RFC 7519 allows a fraction, but no rounding
    of one fails closed for every claim. Rounded down, an `nbf` or `iat` lets a token in up to a
    second early; rounded up, an `iat` escapes a revocation that covers `iat <= not_before`
    (whole seconds, like the tokens). So a fraction is refused, not rounded."""
    value = raw.get(name)
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    ):
        raise _malformed(name)
    if not -MAX_NUMERIC_DATE <= value <= MAX_NUMERIC_DATE:
        raise _malformed(name)
    if isinstance(value, float) and not value.is_integer():
        raise InvalidToken(f"claim {name} not in whole seconds")
    return int(value)


def _audiences(raw: Mapping[str, Any]) -> tuple[str, ...]:
    """RFC 7519 §4.1.3: one string or an array of strings; none of them empty."""
    aud = raw.get("aud")
    audiences = (aud,) if isinstance(aud, str) else tuple(aud) if isinstance(aud, list) else ()
    if not audiences or not all(isinstance(a, str) and a for a in audiences):
        raise _malformed("aud")
    return audiences
