"""Key material: generation, RFC 7638 key ids, and the algorithm each key type signs with."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from authsvc_client import ED25519_NAMES
from joserfc.errors import InvalidKeyTypeError
from joserfc.jwk import ECKey, OKPKey

SigningKey = OKPKey | ECKey


@dataclass(frozen=True)
class GeneratedKey:
    """A new key pair: `kid` is the RFC 7638 thumbprint of its public half."""

    kid: str
    alg: str
    public_jwk: str
    private_pem: bytes = field(repr=False)


def generate(alg: str) -> GeneratedKey:
    """A fresh key pair for `alg` (EdDSA and Ed25519 use Ed25519, ES256 uses P-256)."""
    key: SigningKey
    if alg in ED25519_NAMES:
        key = OKPKey.generate_key("Ed25519")
    elif alg == "ES256":
        key = ECKey.generate_key("P-256")
    else:
        raise ValueError(f"unsupported signing algorithm {alg!r}")
    kid = key.thumbprint()
    public = {**key.as_dict(private=False), "kid": kid, "alg": alg, "use": "sig"}
    return GeneratedKey(
        kid=kid,
        alg=alg,
        public_jwk=json.dumps(public, sort_keys=True),
        private_pem=key.as_pem(private=True),
    )


def load_private(pem: bytes) -> SigningKey:
    """The private key from its PEM (after unsealing)."""
    if b"EC PRIVATE" in pem:
        return ECKey.import_key(pem)
    try:
        return OKPKey.import_key(pem)
    except (ValueError, InvalidKeyTypeError):
        # A PKCS#8 "PRIVATE KEY" PEM does not say its type; joserfc tells us it is not OKP.
        return ECKey.import_key(pem)


def load_public(public_jwk: str) -> SigningKey:
    """The public key from its stored JWK."""
    data = json.loads(public_jwk)
    if data["kty"] == "OKP":
        return OKPKey.import_key(data)
    return ECKey.import_key(data)
