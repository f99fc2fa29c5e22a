"""RFC 9068 JWT access tokens: their claims, and minting them.

Checking them is not here: every rule a token must pass (RFC 8725, RFC 9068 §4) is written once,
in `authsvc_client.verify_access_token`, which authsvc's Verify runs like every other verifier
(see `authsvc.verification`). `AccessClaims.from_verified` turns its result into authsvc's claims.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from authsvc_client import ED25519_NAMES, Claims
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from authsvc.keys.material import SigningKey

TOKEN_TYPE = "at+jwt"  # noqa: S105 (a media type)


@dataclass(frozen=True)
class AccessClaims:
    """The claims of an RFC 9068 access token (§2.2)."""

    iss: str
    sub: str
    aud: tuple[str, ...]
    exp: int
    iat: int
    jti: str
    client_id: str
    scope: tuple[str, ...]
    sid: str = ""
    nbf: int = 0

    def as_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "iss": self.iss,
            "sub": self.sub,
            "aud": list(self.aud),
            "exp": self.exp,
            "iat": self.iat,
            "jti": self.jti,
            "client_id": self.client_id,
            "scope": " ".join(self.scope),
        }
        if self.sid:
            payload["sid"] = self.sid
        if self.nbf:
            payload["nbf"] = self.nbf
        return payload

    @classmethod
    def from_verified(cls, claims: Claims) -> AccessClaims:
        """authsvc's claims of a token `authsvc_client.verify_access_token` accepted. Scopes keep
        the token's order (Verify and introspection answer them in it); no `nbf` is 0."""
        return cls(
            iss=claims.iss,
            sub=claims.sub,
            aud=claims.aud,
            exp=claims.exp,
            iat=claims.iat,
            jti=claims.jti,
            client_id=claims.client_id,
            scope=tuple(claims.raw.get("scope", "").split()),
            sid=claims.sid,
            nbf=claims.nbf or 0,
        )


class AccessTokenSigner:
    """Signs access tokens with one key: a compact JWS with `typ: at+jwt` and `kid` (RFC 9068 §2.1).

    The protected header is the same for every token of a key, so its segment is encoded once, as
    joserfc encodes it (compact JSON, ASCII); the signature comes from the `cryptography` key
    directly. Going through `jws.serialize_compact` per token cost about 30 µs of registry lookups,
    header checks and re-encoding on top of the 37 µs of the Ed25519 signature itself. The output
    is byte for byte what joserfc produces (Ed25519 signatures are deterministic; a test compares).
    """

    def __init__(self, kid: str, alg: str, key: SigningKey) -> None:
        header = {"alg": alg, "typ": TOKEN_TYPE, "kid": kid}
        self._signing_prefix = _b64encode(json.dumps(header, separators=(",", ":")).encode())
        self._signature = _signature_function(alg, key)

    def sign(self, claims: AccessClaims) -> str:
        """The compact JWS of `claims`."""
        payload = json.dumps(claims.as_payload(), separators=(",", ":")).encode()
        signing_input = self._signing_prefix + b"." + _b64encode(payload)
        return (signing_input + b"." + _b64encode(self._signature(signing_input))).decode()


def _b64encode(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _signature_function(alg: str, key: SigningKey) -> Callable[[bytes], bytes]:
    """The JWS signature of a signing input for `alg` (RFC 7518 §3.4, RFC 8037 §3.1)."""
    private = key.get_op_key("sign")
    if alg in ED25519_NAMES and isinstance(private, Ed25519PrivateKey):
        return private.sign
    if alg == "ES256" and isinstance(private, ec.EllipticCurvePrivateKey):
        curve = private.curve

        def es256(signing_input: bytes) -> bytes:
            # JWS wants R || S, each 32 bytes big-endian, not the DER sequence (RFC 7518 §3.4).
            r, s = decode_dss_signature(private.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")

        if isinstance(curve, ec.SECP256R1):
            return es256
    raise ValueError(f"a {type(private).__name__} cannot sign {alg}")
