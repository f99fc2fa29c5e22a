"""Keys derived from the key-encryption key, one per purpose (HKDF-SHA256, RFC 5869).

Every replica of a deployment holds the same KEK, so a key derived from it is shared by all of
them without being configured, stored or sent anywhere. Each purpose has its own `info` label, so
the keys are independent of each other and of the KEK, which only ever seals private keys
(`authsvc.keys.sealing`). A label names its version: changing one invalidates what its key
signed, so a label is never edited, only replaced by a new version.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: Derives refresh-token children in the grace window (`authsvc.rotation`).
REFRESH_GRACE = b"authsvc refresh grace v1"
#: Signs the embedded gateway's CSRF tokens and consent tickets (`authsvc_gateway`).
GATEWAY_SESSION = b"authsvc gateway session v1"
#: Keys the digests of usernames and client IPs in `login_failures` (`authsvc.login_limits`).
LOGIN_LIMITS = b"authsvc login limits v1"


def derive_key(kek: bytes, purpose: bytes) -> bytes:
    """The 32-byte key for `purpose` (one of the labels above) under `kek`."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(kek)
