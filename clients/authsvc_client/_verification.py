"""Local verification of an authsvc access token: a pure function of the token, the trusted keys,
the expected issuer and audience, and the time.

Order matters and follows RFC 8725 §3 and RFC 9068 §4: size, then the header (pinned algorithms,
`typ`, `kid`, no key-carrying or critical headers), then the signature with the one key the `kid`
names, and only then the claims (`iss`, `aud`, `exp`, `nbf`, `iat` with leeway). Nothing in the
token ever makes us fetch or trust a key we did not already hold.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwt import JWTClaimsRegistry

from ._errors import InvalidToken, UnknownSigningKey
from ._jwks import PublishedKey

__all__ = [
    "ACCESS_TOKEN_TYPES",
    "FORBIDDEN_HEADERS",
    "MAX_TOKEN_BYTES",
    "PINNED_ALGORITHMS",
    "Claims",
    "VerifiedToken",
    "verify_access_token",
]

#: The only algorithms accepted: Ed25519 under its common (`EdDSA`) and its RFC 9864 (`Ed25519`)
#: name, and ES256 for verifiers without EdDSA. Never `none`, never HMAC (RFC 8725 §3.1).
PINNED_ALGORITHMS = frozenset({"EdDSA", "Ed25519", "ES256"})

#: Tokens longer than this are refused before any parsing; ours are well under 2 KiB.
MAX_TOKEN_BYTES = 8192

#: Header parameters that would let the token choose its own key or demand extensions we do not
#: implement (RFC 8725 §3.10, RFC 7515 §4.1.11). Refused outright, never followed. authsvc's own
#: verification uses this same set: the rule is written once, here.
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit", "b64"})

#: RFC 9068 §4: the `typ` header of an access token.
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})

# joserfc's RFC 9864 deprecation warning for `EdDSA` changes the process-wide warning filters
# while it is silenced; this lock keeps two verifying threads from restoring each other's state.
_WARNINGS_LOCK = threading.Lock()


@dataclass(frozen=True)
class Claims:
    """The verified claims of an RFC 9068 access token (§2.2).

    `scope` is the set of granted scopes (the token carries them space-separated), `sid` the
    family (session) id, empty for client-credentials tokens, and `raw` every claim as signed.
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
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def has_scopes(self, required: Iterable[str]) -> bool:
        """Whether every scope in `required` was granted."""
        return self.scope.issuperset(required)


@dataclass(frozen=True)
class VerifiedToken:
    """A token that passed verification: its claims and the `kid` of the key that signed it."""

    claims: Claims
    kid: str


def verify_access_token(
    token: str,
    *,
    keys: Mapping[str, PublishedKey],
    issuer: str,
    audience: str,
    now: float,
    leeway: float = 30.0,
) -> VerifiedToken:
    """Verify an access token against trusted `keys` and return its claims.

    Raises `UnknownSigningKey` when the `kid` is not among `keys` (a key refresh may help) and
    `InvalidToken` for every other failure, with a short description safe to send to the caller.
    Revocation is not checked here; see `RevocationSet`.
    """
    if len(token) > MAX_TOKEN_BYTES:
        raise InvalidToken("token too large")
    header = _header(token)
    key = keys.get(header["kid"])
    if key is None:
        raise UnknownSigningKey("unknown signing key")
    alg = header["alg"]
    if key.alg and key.alg != alg:
        raise InvalidToken("algorithm does not match the key")
    payload = _verify_signature(token, key, alg)
    claims = _validated_claims(payload, issuer=issuer, audience=audience, now=now, leeway=leeway)
    return VerifiedToken(claims=claims, kid=key.kid)


def _header(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise InvalidToken("malformed token")
    header = _json_segment(parts[0])
    if not isinstance(header, dict):
        raise InvalidToken("malformed token")
    forbidden = FORBIDDEN_HEADERS.intersection(header)
    if forbidden:
        raise InvalidToken(f"header parameter not allowed: {sorted(forbidden)[0]}")
    if header.get("alg") not in PINNED_ALGORITHMS:
        raise InvalidToken("algorithm not allowed")
    if header.get("typ") not in ACCESS_TOKEN_TYPES:
        raise InvalidToken("not an access token (typ)")
    if not isinstance(header.get("kid"), str) or not header["kid"]:
        raise InvalidToken("missing kid")
    return header


def _json_segment(segment: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken("malformed token") from exc


def _verify_signature(token: str, key: PublishedKey, alg: str) -> bytes:
    registry = jws.JWSRegistry(algorithms=[alg], strict_check_header=True)
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            # RFC 9864 deprecates the polymorphic `EdDSA` name; we keep it for interop (DESIGN.md)
            # and our keys pin the curve to Ed25519, so the ambiguity it warns about cannot arise.
            warnings.filterwarnings("ignore", "EdDSA is deprecated", SecurityWarning)
            signed = jws.deserialize_compact(token, key.key, algorithms=[alg], registry=registry)
    except JoseError as exc:
        raise InvalidToken("invalid signature") from exc
    except (ValueError, TypeError) as exc:
        raise InvalidToken("malformed token") from exc
    if signed.payload is None:
        raise InvalidToken("malformed token")
    return signed.payload


def _validated_claims(
    payload: bytes, *, issuer: str, audience: str, now: float, leeway: float
) -> Claims:
    try:
        raw = json.loads(payload)
    except ValueError as exc:
        raise InvalidToken("malformed claims") from exc
    if not isinstance(raw, dict):
        raise InvalidToken("malformed claims")
    # RFC 9068 §2.2: iss, sub, aud, exp, iat, jti and client_id are always present.
    registry = JWTClaimsRegistry(
        now=int(now),
        leeway=int(leeway),
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": audience},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
        jti={"essential": True},
        client_id={"essential": True},
    )
    try:
        registry.validate(raw)
    except JoseError as exc:
        raise InvalidToken(_claim_failure(exc)) from exc
    return _claims(raw)


def _claim_failure(exc: JoseError) -> str:
    # joserfc names the claim in `description` (e.g. "Invalid claim: 'aud'"); keep it short.
    text = getattr(exc, "description", "") or exc.error
    if exc.error == "expired_token":
        return "token expired"
    return f"claims rejected: {text}"


def _claims(raw: dict[str, Any]) -> Claims:
    scope = raw.get("scope", "")
    sid = raw.get("sid", "")
    aud = raw["aud"]
    client_id = raw["client_id"]
    nbf = raw.get("nbf")
    if not isinstance(scope, str) or not isinstance(sid, str) or not isinstance(client_id, str):
        raise InvalidToken("malformed claims")
    return Claims(
        iss=raw["iss"],
        sub=raw["sub"],
        aud=(aud,) if isinstance(aud, str) else tuple(aud),
        exp=int(raw["exp"]),
        iat=int(raw["iat"]),
        nbf=None if nbf is None else int(nbf),
        jti=raw["jti"],
        client_id=client_id,
        scope=frozenset(scope.split()),
        sid=sid,
        raw=raw,
    )
