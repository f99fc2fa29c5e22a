"""One error hierarchy for the whole domain.

Each class fixes its OAuth error code (RFC 6749 §5.2, RFC 6750 §3.1, RFC 7009 §2.2.1). What a caller is
told is `code` plus `description`; the cause goes to logs through `raise ... from exc`. Transports map a
class to their status in exactly one table each (`authsvc.rpc.status`, `authsvc_gateway.errors`).
"""

from __future__ import annotations


class AuthError(Exception):
    """Base of every error the domain raises on purpose.

    `description` is safe to send to the caller; it must never contain a secret or a token.
    """

    code: str = "server_error"
    default_description: str = "the server could not complete the request"
    #: Seconds after which a retry may succeed, when the error knows (RFC 9110 §10.2.3).
    retry_after: int | None = None

    def __init__(self, description: str | None = None) -> None:
        self.description = description or self.default_description
        super().__init__(self.description)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, description={self.description!r})"


class InvalidRequest(AuthError):
    """The request is missing a parameter, repeats one, or is otherwise malformed."""

    code = "invalid_request"
    default_description = "the request is malformed"


class InvalidClient(AuthError):
    """Client authentication failed: unknown client, wrong secret, disabled client."""

    code = "invalid_client"
    default_description = "client authentication failed"


class InvalidGrant(AuthError):
    """The grant (refresh token, authorization code) is invalid, expired, revoked or reused."""

    code = "invalid_grant"
    default_description = "the grant is invalid, expired or revoked"


class UnauthorizedClient(AuthError):
    """The client is not allowed to use this grant type."""

    code = "unauthorized_client"
    default_description = "the client may not use this grant type"


class UnsupportedGrantType(AuthError):
    """The grant type is not one this server implements."""

    code = "unsupported_grant_type"
    default_description = "the grant type is not supported"


class UnsupportedTokenType(AuthError):
    """RFC 7009 §2.2.1: the server cannot revoke this kind of token."""

    code = "unsupported_token_type"
    default_description = "the token type is not supported"


class InvalidScope(AuthError):
    """A requested scope or audience is unknown or not allowed for the client."""

    code = "invalid_scope"
    default_description = "the requested scope is not allowed"


class InvalidTarget(AuthError):
    """RFC 8707 §2: a requested resource (audience) is not one the grant was authorized for."""

    code = "invalid_target"
    default_description = "the requested resource is not allowed"


class InvalidToken(AuthError):
    """A token handed to us to check (Verify, Introspect) is not valid."""

    code = "invalid_token"
    default_description = "the token is invalid"


class Unauthenticated(AuthError):
    """The caller's own credentials are missing or invalid (RFC 6750 §3.1 invalid_token)."""

    code = "invalid_token"
    default_description = "the caller is not authenticated"


class InsufficientScope(AuthError):
    """The caller or token lacks a required scope (RFC 6750 §3.1)."""

    code = "insufficient_scope"
    default_description = "the token lacks a required scope"


class AccessDenied(AuthError):
    """The resource owner or policy denied the request."""

    code = "access_denied"
    default_description = "access denied"


class NotFound(AuthError):
    """A named resource (client, family) does not exist. Only for callers allowed to know that."""

    code = "not_found"
    default_description = "not found"


class TemporarilyUnavailable(AuthError):
    """A dependency (the database) is unreachable; the caller may retry."""

    code = "temporarily_unavailable"
    default_description = "the service is temporarily unavailable, retry later"


class TooManyAttempts(AuthError):
    """Too many failed logins for this account or client IP; the same answer whether or not the
    account exists. Not an OAuth code: the gateway answers it with its sign-in page and 429."""

    code = "too_many_attempts"
    default_description = "too many failed attempts, try again later"

    def __init__(self, retry_after: int = 1, description: str | None = None) -> None:
        super().__init__(description)
        self.retry_after = retry_after


class ServerError(AuthError):
    """An unexpected failure; the detail went to the log."""

    code = "server_error"
    default_description = "the server could not complete the request"


ALL_ERRORS: tuple[type[AuthError], ...] = (
    AuthError,
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedTokenType,
    InvalidScope,
    InvalidTarget,
    InvalidToken,
    Unauthenticated,
    InsufficientScope,
    AccessDenied,
    NotFound,
    TemporarilyUnavailable,
    TooManyAttempts,
    ServerError,
)
"""Every error class; the transport tables are tested against this list."""
