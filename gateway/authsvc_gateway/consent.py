"""The consent step: who must see it, and the signed ticket that carries a login to it.

After a successful login the gateway does not keep a session. Instead the consent form carries a
ticket: the authenticated subject and the validated authorization request, with an expiry, under
an HMAC of the gateway's session key. Tampering or age makes the ticket worthless. The ticket also
names the browser it was shown to (a digest of its CSRF nonce, `browser_binding`), so a ticket
copied out of one browser is refused in another (RFC 9700 §4.7).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any, Final

from authsvc_client.v1 import authsvc_pb2 as pb

from authsvc.config import SIGN_IN_LIFETIME

#: No longer than authsvc remembers the revocations that end a sign-in: a page older than that
#: would only get access_denied.
CONSENT_TICKET_LIFETIME: Final = SIGN_IN_LIFETIME
_DOMAIN: Final = b"authsvc-gateway consent v1\x00"


def needs_consent(client: pb.Client, *, first_party_skip_consent: bool) -> bool:
    """Third-party clients always ask the user; first-party ones only when configured to."""
    return not (client.first_party and first_party_skip_consent)


def browser_binding(csrf_nonce: str) -> str:
    """What a ticket records of the browser's CSRF nonce: a digest, never the nonce itself."""
    digest = hashlib.sha256(_DOMAIN + b"browser\x00" + csrf_nonce.encode()).digest()
    return _b64(digest)


def bound_to(payload: Mapping[str, Any], csrf_nonce: str | None) -> bool:
    """Whether an opened ticket was shown to the browser that holds `csrf_nonce`."""
    sealed = payload.get("browser")
    return (
        isinstance(sealed, str)
        and csrf_nonce is not None
        and hmac.compare_digest(sealed, browser_binding(csrf_nonce))
    )


def seal_ticket(key: bytes, payload: Mapping[str, Any], *, now: int, lifetime: int) -> str:
    """`payload` with an expiry, signed: `base64url(json) "." base64url(hmac)`."""
    body = json.dumps({**payload, "exp": now + lifetime}, sort_keys=True, separators=(",", ":"))
    encoded = _b64(body.encode())
    return f"{encoded}.{_b64(_mac(key, encoded))}"


def open_ticket(key: bytes, ticket: str, *, now: int) -> dict[str, Any] | None:
    """The payload of a ticket this gateway sealed and that has not expired, else None."""
    encoded, _, signature = ticket.partition(".")
    try:
        if not hmac.compare_digest(_unb64(signature), _mac(key, encoded)):
            return None
        payload = json.loads(_unb64(encoded))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
        return None
    if payload["exp"] <= now:
        return None
    return payload


def _mac(key: bytes, encoded: str) -> bytes:
    return hmac.new(key, _DOMAIN + encoded.encode("ascii", "replace"), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
