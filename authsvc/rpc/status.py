"""Domain errors → gRPC status, in one table (see the error section of protos/authsvc/v1/authsvc.proto).

The OAuth error code travels in trailing metadata (`oauth-error`, `oauth-error-description`) so a
client can tell invalid_grant from invalid_token without parsing text; an error that knows when a
retry may succeed adds `retry-after` (whole seconds).
"""

from __future__ import annotations

import re
from typing import Any

import grpc

from authsvc import errors

GRPC_STATUS: dict[type[errors.AuthError], grpc.StatusCode] = {
    errors.AuthError: grpc.StatusCode.INTERNAL,
    errors.ServerError: grpc.StatusCode.INTERNAL,
    errors.InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InvalidScope: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InvalidTarget: grpc.StatusCode.INVALID_ARGUMENT,
    errors.UnsupportedGrantType: grpc.StatusCode.INVALID_ARGUMENT,
    errors.UnsupportedTokenType: grpc.StatusCode.INVALID_ARGUMENT,
    # A token *in the request* failing is not the caller failing to authenticate: a credential
    # helper that sees UNAUTHENTICATED refreshes its own token and retries, which would be wrong.
    errors.InvalidGrant: grpc.StatusCode.FAILED_PRECONDITION,
    errors.InvalidToken: grpc.StatusCode.FAILED_PRECONDITION,
    errors.InvalidClient: grpc.StatusCode.UNAUTHENTICATED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.InsufficientScope: grpc.StatusCode.PERMISSION_DENIED,
    errors.UnauthorizedClient: grpc.StatusCode.PERMISSION_DENIED,
    errors.AccessDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.TemporarilyUnavailable: grpc.StatusCode.UNAVAILABLE,
    # Not UNAVAILABLE: gRPC retry policies retry that at once, which is what must not happen.
    errors.TooManyAttempts: grpc.StatusCode.RESOURCE_EXHAUSTED,
}

OAUTH_ERROR_KEY = "oauth-error"
OAUTH_DESCRIPTION_KEY = "oauth-error-description"
RETRY_AFTER_KEY = "retry-after"


def status_for(error: errors.AuthError) -> grpc.StatusCode:
    """The status of the error's class, or of the nearest class of the table above it (an error
    defined outside `authsvc.errors`, such as storage's DatabaseRefused, is one of them too)."""
    for cls in type(error).__mro__:
        if cls in GRPC_STATUS:
            return GRPC_STATUS[cls]
    raise AssertionError(f"{type(error).__name__} is no AuthError")  # pragma: no cover


#: The longest description sent. Some echo what the caller sent (the scopes a Verify required,
#: the scopes a grant refused), and a header past gRPC's metadata limit (8 KiB by default) would
#: turn the refusal into RESOURCE_EXHAUSTED with no OAuth code at all.
MAX_DESCRIPTION = 256
_NOT_PRINTABLE = re.compile(r"[^ -~]")


def description_of(error: errors.AuthError) -> str:
    """The error's description as a header may carry it: printable ASCII (anything else, a CR or
    an LF among them, becomes "?"), at most `MAX_DESCRIPTION` characters."""
    text = _NOT_PRINTABLE.sub("?", error.description)
    if len(text) <= MAX_DESCRIPTION:
        return text
    return text[: MAX_DESCRIPTION - 3] + "..."


def trailing_metadata(error: errors.AuthError) -> tuple[tuple[str, str], ...]:
    metadata = ((OAUTH_ERROR_KEY, error.code), (OAUTH_DESCRIPTION_KEY, description_of(error)))
    if error.retry_after is None:
        return metadata
    return (*metadata, (RETRY_AFTER_KEY, str(error.retry_after)))


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: errors.AuthError) -> None:
    """End the call with the status and trailing metadata for `error`. Never returns."""
    context.set_trailing_metadata(trailing_metadata(error))
    await context.abort(status_for(error), description_of(error))
