"""CSRF protection for the login and consent forms: a signed double-submit cookie.

The browser holds a random nonce in an HttpOnly, SameSite=Lax cookie; the form carries an HMAC
of that nonce under the gateway's session key. A cross-site form post neither carries the cookie
nor can compute the HMAC (OWASP CSRF Prevention Cheat Sheet, "signed double-submit cookie").
Lax, not Strict, so that the cookie comes along when the user arrives from the client's site and
the nonce of other tabs is kept.

The HMAC alone does not stop a nonce planted in the browser by a sibling domain ("cookie
tossing"): the gateway pairs any well-formed nonce with its token, so whoever planted one can
fetch the matching token. Over HTTPS the cookie's name therefore carries the `__Host-` prefix,
which browsers accept only from a Secure, host-only cookie for Path=/ (RFC 6265bis §4.1.3.2): a
sibling domain cannot set it. Plain HTTP (development on loopback) keeps the plain name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

CSRF_COOKIE: Final = "authsvc_csrf"
HOST_ONLY_CSRF_COOKIE: Final = "__Host-" + CSRF_COOKIE
CSRF_FIELD: Final = "csrf_token"
_NONCE = re.compile(r"[A-Za-z0-9_-]{43}")
_DOMAIN: Final = b"authsvc-gateway csrf v1\x00"


@dataclass(frozen=True)
class CsrfCookie:
    """The name and path the nonce's cookie is set with."""

    name: str
    path: str


def csrf_cookie(secure: bool, prefix: str = "") -> CsrfCookie:
    """Over HTTPS (`secure`), the `__Host-` cookie for Path=/ that only this host can set; over
    plain HTTP, which cannot carry that prefix, the plain one for the gateway's paths, under the
    `prefix` the browser reaches them at (`GatewayConfig.browser_path`)."""
    if secure:
        return CsrfCookie(HOST_ONLY_CSRF_COOKIE, "/")
    return CsrfCookie(CSRF_COOKIE, prefix + "/oauth")


@dataclass(frozen=True)
class CsrfPair:
    """The cookie value to set and the token to put in the form."""

    cookie: str = field(repr=False)
    token: str = field(repr=False)


class CsrfVerdict(Enum):
    """Whether a form post passes the CSRF check, and if not, why."""

    PASSED = "passed"
    NO_COOKIE = "no CSRF cookie"
    NO_TOKEN = "no CSRF token in the form"  # noqa: S105 (a reason, not a secret)
    MISMATCH = "the CSRF token does not match the cookie"


def issue_csrf(key: bytes, cookie: str | None) -> CsrfPair:
    """A cookie and form token; an existing well-formed cookie is kept, so two tabs both work."""
    nonce = cookie if cookie is not None and _NONCE.fullmatch(cookie) else secrets.token_urlsafe(32)
    return CsrfPair(cookie=nonce, token=_token(key, nonce))


def check_csrf(key: bytes, cookie: str | None, token: str | None) -> CsrfVerdict:
    """Does the form's token belong to the browser's cookie? Compared in constant time."""
    if not cookie or not _NONCE.fullmatch(cookie):
        return CsrfVerdict.NO_COOKIE
    if not token:
        return CsrfVerdict.NO_TOKEN
    if not hmac.compare_digest(token.encode(), _token(key, cookie).encode()):
        return CsrfVerdict.MISMATCH
    return CsrfVerdict.PASSED


def _token(key: bytes, nonce: str) -> str:
    digest = hmac.new(key, _DOMAIN + nonce.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
