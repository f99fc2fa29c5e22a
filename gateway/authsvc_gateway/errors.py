"""OAuth errors as the gateway answers them over HTTP, and the one table that maps them.

Each error is one class whose only job is to carry its RFC error code; what the caller reads is the
code and a short description (RFC 6749 §5.2), while the cause travels to the logs with
`raise … from`. `HTTP_STATUS` is the single place a code becomes an HTTP status.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar, Final

from starlette.responses import Response

from authsvc_gateway.replies import NoStoreReply

# RFC 6749 §5.2: error_description is limited to %x20-21 / %x23-5B / %x5D-7E.
_NOT_DESCRIPTION_CHARACTER = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


class OAuthError(Exception):
    """An OAuth protocol error: its RFC code (`error`) and a description safe to show the caller."""

    error: ClassVar[str] = "server_error"

    def __init__(self, description: str = "", *, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.description = _NOT_DESCRIPTION_CHARACTER.sub("?", description)[:200]
        #: Seconds authsvc asked the caller to wait (RFC 9110 §10.2.3), when it said.
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r})"


class InvalidRequest(OAuthError):
    """RFC 6749 §5.2: malformed, missing or repeated parameter, or an unsupported body."""

    error = "invalid_request"


class InvalidClient(OAuthError):
    """RFC 6749 §5.2: client authentication failed."""

    error = "invalid_client"


class InvalidGrant(OAuthError):
    """RFC 6749 §5.2: the code, refresh token or user credentials are invalid, expired or used."""

    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    """RFC 6749 §5.2: the client may not use this grant or response type."""

    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    """RFC 6749 §5.2: the grant type does not exist here (password and implicit among them)."""

    error = "unsupported_grant_type"


class InvalidScope(OAuthError):
    """RFC 6749 §5.2: a requested scope is unknown or not allowed for the client."""

    error = "invalid_scope"


class InvalidTarget(OAuthError):
    """RFC 8707 §2: a requested resource is malformed or not one the client may have tokens for."""

    error = "invalid_target"


class UnsupportedResponseType(OAuthError):
    """RFC 6749 §4.1.2.1: only `response_type=code` exists here."""

    error = "unsupported_response_type"


class AccessDenied(OAuthError):
    """RFC 6749 §4.1.2.1: the user (or authsvc) refused the request."""

    error = "access_denied"


class UnsupportedTokenType(OAuthError):
    """RFC 7009 §2.2.1: the server cannot revoke this kind of token."""

    error = "unsupported_token_type"


class InvalidToken(OAuthError):
    """RFC 6750 §3.1: a bearer token is invalid, expired or revoked."""

    error = "invalid_token"


class InsufficientScope(OAuthError):
    """RFC 6750 §3.1: a bearer token lacks a scope the call needs."""

    error = "insufficient_scope"


class TemporarilyUnavailable(OAuthError):
    """RFC 6749 §4.1.2.1: authsvc cannot be reached or is overloaded; try again later."""

    error = "temporarily_unavailable"


class TooManyAttempts(OAuthError):
    """Failed logins over authsvc's limit for the account or the client IP. Not an OAuth code:
    the sign-in form answers it with its own page, 429 and `Retry-After`."""

    error = "too_many_attempts"


class ServerError(OAuthError):
    """RFC 6749 §4.1.2.1: something unexpected failed; the details are in the logs."""

    error = "server_error"


#: Every error class by its code, for turning a code received from authsvc back into an error.
#: authsvc's `not_found` (an unknown client for GetClient) is not an OAuth code; over HTTP it is
#: a request naming something that does not exist.
ERRORS: Final[Mapping[str, type[OAuthError]]] = MappingProxyType(
    {cls.error: cls for cls in OAuthError.__subclasses__()} | {"not_found": InvalidRequest}
)

#: The one table from OAuth error code to HTTP status. RFC 6749 §5.2 answers 400 except for
#: invalid_client (401); RFC 6750 §3.1 gives invalid_token 401 and insufficient_scope 403.
HTTP_STATUS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "invalid_request": 400,
        "invalid_client": 401,
        "invalid_grant": 400,
        "unauthorized_client": 400,
        "unsupported_grant_type": 400,
        "invalid_scope": 400,
        "invalid_target": 400,
        "unsupported_response_type": 400,
        "access_denied": 403,
        "unsupported_token_type": 400,
        "invalid_token": 401,
        "insufficient_scope": 403,
        "temporarily_unavailable": 503,
        "too_many_attempts": 429,
        "server_error": 500,
    }
)


def error_from_code(
    code: str, description: str = "", *, retry_after: int | None = None
) -> OAuthError:
    """The error for an OAuth code received from authsvc; an unknown code is a server error."""
    cls = ERRORS.get(code)
    if cls is None:
        return ServerError("authsvc answered with an unknown error")
    return cls(description, retry_after=retry_after)


def error_body(error: OAuthError) -> dict[str, str]:
    """The RFC 6749 §5.2 JSON members of an error."""
    body = {"error": error.error}
    if error.description:
        body["error_description"] = error.description
    return body


def error_response(error: OAuthError, *, www_authenticate: str | None = None) -> Response:
    """The RFC 6749 §5.2 JSON reply for an error, with its status from `http_status`.

    `www_authenticate` is the challenge for an `invalid_client` when the client tried (or should
    try) HTTP Basic authentication: RFC 6749 §5.2 requires it then.
    """
    headers = {}
    if www_authenticate is not None:
        headers["WWW-Authenticate"] = www_authenticate
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    elif error.error == "temporarily_unavailable":
        headers["Retry-After"] = "5"
    return NoStoreReply(
        json.dumps(error_body(error)).encode(),
        http_status(error, challenged=www_authenticate is not None),
        headers=headers,
    )


def http_status(error: OAuthError, *, challenged: bool) -> int:
    """The status of an error reply: `HTTP_STATUS`, except that an `invalid_client` without a
    challenge is 400. A 401 must carry a WWW-Authenticate challenge (RFC 9110 §15.5.2), and RFC
    6749 §5.2 answers invalid_client with 401 only to name the schemes that work; a client that
    failed with client_secret_post or as a public client gets 400, and no browser dialog."""
    if error.error == "invalid_client" and not challenged:
        return 400
    return HTTP_STATUS[error.error]
