"""One error hierarchy for the client side, and the one place gRPC errors are mapped onto it.

Every error carries the OAuth code it stands for (RFC 6749 §5.2, RFC 6750 §3.1, RFC 7009 §2.2.1)
and, for errors raised by the interceptors, the gRPC status the caller sees. The proto header of
authsvc.v1 fixes which code travels with which status; `GRPC_STATUS` is that table.
"""

from __future__ import annotations

from typing import ClassVar

import grpc

__all__ = [
    "GRPC_STATUS",
    "AccessDenied",
    "AuthError",
    "InsufficientScope",
    "InvalidClient",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "InvalidTarget",
    "InvalidToken",
    "NotFound",
    "ServerError",
    "TemporarilyUnavailable",
    "TooManyAttempts",
    "UnauthorizedClient",
    "UnknownSigningKey",
    "UnsupportedGrantType",
    "UnsupportedTokenType",
    "from_rpc_error",
    "refuses_bearer",
]


class AuthError(Exception):
    """Base of every authsvc_client error.

    `error` is the OAuth error code, `description` the short text meant for the caller (never a
    secret), `status` the gRPC status the call ended with (or will end with, when a server
    interceptor rejects a call), and `retry_after` the seconds the server asked the caller to
    wait before trying again, when it said.
    """

    code: ClassVar[str] = "server_error"

    def __init__(
        self,
        description: str = "",
        *,
        error: str | None = None,
        status: grpc.StatusCode | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(description or self.code)
        self.error = error or self.code
        self.description = description
        self.status = status or _status_for(type(self))
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}(error={self.error!r}, description={self.description!r})"


class InvalidRequest(AuthError):
    """RFC 6749 §5.2: the request is missing a parameter or is otherwise malformed."""

    code = "invalid_request"


class InvalidClient(AuthError):
    """RFC 6749 §5.2: client authentication failed."""

    code = "invalid_client"


class InvalidGrant(AuthError):
    """RFC 6749 §5.2: the grant (refresh token, code) is invalid, expired, revoked or reused."""

    code = "invalid_grant"


class UnauthorizedClient(AuthError):
    """RFC 6749 §5.2: the client may not use this grant."""

    code = "unauthorized_client"


class UnsupportedGrantType(AuthError):
    """RFC 6749 §5.2: the server does not support this grant type."""

    code = "unsupported_grant_type"


class InvalidScope(AuthError):
    """RFC 6749 §5.2: a requested scope is unknown or not allowed for the client."""

    code = "invalid_scope"


class InvalidTarget(AuthError):
    """RFC 8707 §2: a requested resource is not one the client or the grant may have."""

    code = "invalid_target"


class InvalidToken(AuthError):
    """RFC 6750 §3.1: the access token is expired, revoked, malformed or not ours."""

    code = "invalid_token"


class UnknownSigningKey(InvalidToken):
    """The token names a `kid` the local key cache does not hold; a key refresh may help."""


class InsufficientScope(AuthError):
    """RFC 6750 §3.1: the token lacks a scope the method requires."""

    code = "insufficient_scope"


class AccessDenied(AuthError):
    """RFC 6749 §4.1.2.1: the resource owner or the server denied the request."""

    code = "access_denied"


class UnsupportedTokenType(AuthError):
    """RFC 7009 §2.2.1: the server cannot revoke or introspect this type of token."""

    code = "unsupported_token_type"


class TemporarilyUnavailable(AuthError):
    """RFC 6749 §4.1.2.1: the server cannot answer now; the caller may retry later."""

    code = "temporarily_unavailable"


class TooManyAttempts(AuthError):
    """Too many failed logins for the account or the client IP; `retry_after` says how long to
    wait. Not an OAuth code: gRPC RESOURCE_EXHAUSTED."""

    code = "too_many_attempts"


class ServerError(AuthError):
    """RFC 6749 §4.1.2.1: an unexpected condition on the server."""

    code = "server_error"


class NotFound(AuthError):
    """The named object (a client, a family) does not exist. Not an OAuth code: gRPC NOT_FOUND."""

    code = "not_found"


#: The transport status of each error, as the authsvc.v1 proto header lays it down. An
#: `invalid_token` raised here is always about the caller's own bearer token, so UNAUTHENTICATED.
GRPC_STATUS: dict[type[AuthError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidScope: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidTarget: grpc.StatusCode.INVALID_ARGUMENT,
    UnsupportedGrantType: grpc.StatusCode.INVALID_ARGUMENT,
    UnsupportedTokenType: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidGrant: grpc.StatusCode.FAILED_PRECONDITION,
    InvalidClient: grpc.StatusCode.UNAUTHENTICATED,
    InvalidToken: grpc.StatusCode.UNAUTHENTICATED,
    UnknownSigningKey: grpc.StatusCode.UNAUTHENTICATED,
    InsufficientScope: grpc.StatusCode.PERMISSION_DENIED,
    UnauthorizedClient: grpc.StatusCode.PERMISSION_DENIED,
    AccessDenied: grpc.StatusCode.PERMISSION_DENIED,
    TemporarilyUnavailable: grpc.StatusCode.UNAVAILABLE,
    TooManyAttempts: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ServerError: grpc.StatusCode.INTERNAL,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AuthError: grpc.StatusCode.INTERNAL,
}

_BY_CODE: dict[str, type[AuthError]] = {
    cls.code: cls for cls in GRPC_STATUS if cls not in (AuthError, UnknownSigningKey)
}

# When a failed call carries no `oauth-error` (a proxy answered, the server was unreachable), the
# status alone decides.
_BY_STATUS: dict[grpc.StatusCode, type[AuthError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidGrant,
    grpc.StatusCode.UNAUTHENTICATED: InvalidToken,
    grpc.StatusCode.PERMISSION_DENIED: AccessDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAVAILABLE: TemporarilyUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: TemporarilyUnavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: TemporarilyUnavailable,
}


def _status_for(cls: type[AuthError]) -> grpc.StatusCode:
    for ancestor in cls.__mro__:
        if ancestor in GRPC_STATUS:
            return GRPC_STATUS[ancestor]
    return grpc.StatusCode.INTERNAL


def from_rpc_error(exc: grpc.RpcError) -> AuthError:
    """Map a failed gRPC call to an `AuthError`, using the `oauth-error` trailing metadata first.

    This is the one place foreign errors become ours; callers write `raise from_rpc_error(exc) from
    exc` so the original stays attached for logs.
    """
    status = _status_of(exc)
    trailers = _trailers_of(exc)
    code = trailers.get("oauth-error", "")
    description = trailers.get("oauth-error-description", "") or _details_of(exc)
    retry_after = _retry_after(trailers.get("retry-after", ""))
    if code:
        cls = _BY_CODE.get(code, AuthError)
        return cls(description, error=code, status=status, retry_after=retry_after)
    cls = _BY_STATUS.get(status, ServerError)
    return cls(description, status=status, retry_after=retry_after)


def refuses_bearer(error: AuthError) -> bool:
    """Whether the server refused the caller's own bearer token (RFC 6750 §3.1 `invalid_token`
    over UNAUTHENTICATED): revoked, expired, or signed by a key since purged. The call did not
    run, and a fresh token may pass. Not a client secret or password in the request failing
    (`invalid_client`, also UNAUTHENTICATED), nor a token handed over to be checked (authsvc
    answers FAILED_PRECONDITION for those)."""
    return isinstance(error, InvalidToken) and error.status == grpc.StatusCode.UNAUTHENTICATED


def _retry_after(value: str) -> int | None:
    """Whole seconds, as authsvc sends them; anything else is as if nothing was said."""
    return int(value) if value.isdigit() and len(value) <= 9 else None


def _status_of(exc: grpc.RpcError) -> grpc.StatusCode:
    code = getattr(exc, "code", None)
    status = code() if callable(code) else None
    return status if isinstance(status, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _trailers_of(exc: grpc.RpcError) -> dict[str, str]:
    trailing = getattr(exc, "trailing_metadata", None)
    pairs = trailing() if callable(trailing) else None
    result: dict[str, str] = {}
    for key, value in pairs or ():
        if isinstance(value, str):
            result.setdefault(key, value)
    return result


def _details_of(exc: grpc.RpcError) -> str:
    details = getattr(exc, "details", None)
    text = details() if callable(details) else None
    return text if isinstance(text, str) else ""
