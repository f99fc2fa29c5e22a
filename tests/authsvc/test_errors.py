"""One error hierarchy, mapped once: every class has an OAuth code and a gRPC status."""

from __future__ import annotations

import inspect

import grpc
import pytest

from authsvc import errors
from authsvc.rpc.status import GRPC_STATUS, description_of, status_for, trailing_metadata

DEFINED = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, errors.AuthError) and cls.__module__ == errors.__name__
]

# RFC 6749 §5.2, RFC 6750 §3.1, RFC 7009 §2.2.1, plus the non-OAuth codes we use.
OAUTH_CODES = {
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "unsupported_token_type",
    "invalid_scope",
    "invalid_target",
    "invalid_token",
    "insufficient_scope",
    "access_denied",
    "temporarily_unavailable",
    "server_error",
    "not_found",
    "too_many_attempts",
}


def test_all_errors_lists_every_error_class() -> None:
    assert set(errors.ALL_ERRORS) == set(DEFINED)


@pytest.mark.parametrize("error", [pytest.param(cls, id=cls.__name__) for cls in errors.ALL_ERRORS])
def test_every_error_is_mapped_to_a_grpc_status(error: type[errors.AuthError]) -> None:
    assert isinstance(GRPC_STATUS[error], grpc.StatusCode)
    assert error.code in OAUTH_CODES
    assert status_for(error()) is GRPC_STATUS[error]


def test_the_table_maps_nothing_else() -> None:
    assert set(GRPC_STATUS) == set(errors.ALL_ERRORS)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        # The proto's error section, line by line.
        pytest.param(errors.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT, id="invalid_request"),
        pytest.param(errors.InvalidScope, grpc.StatusCode.INVALID_ARGUMENT, id="invalid_scope"),
        pytest.param(errors.InvalidTarget, grpc.StatusCode.INVALID_ARGUMENT, id="invalid_target"),
        pytest.param(
            errors.UnsupportedTokenType,
            grpc.StatusCode.INVALID_ARGUMENT,
            id="unsupported_token_type",
        ),
        pytest.param(errors.InvalidGrant, grpc.StatusCode.FAILED_PRECONDITION, id="invalid_grant"),
        pytest.param(
            errors.InvalidToken, grpc.StatusCode.FAILED_PRECONDITION, id="invalid_token-in-body"
        ),
        pytest.param(errors.InvalidClient, grpc.StatusCode.UNAUTHENTICATED, id="invalid_client"),
        pytest.param(
            errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, id="invalid_token-caller"
        ),
        pytest.param(
            errors.InsufficientScope, grpc.StatusCode.PERMISSION_DENIED, id="insufficient_scope"
        ),
        pytest.param(
            errors.UnauthorizedClient, grpc.StatusCode.PERMISSION_DENIED, id="unauthorized_client"
        ),
        pytest.param(errors.AccessDenied, grpc.StatusCode.PERMISSION_DENIED, id="access_denied"),
        pytest.param(
            errors.TemporarilyUnavailable,
            grpc.StatusCode.UNAVAILABLE,
            id="temporarily_unavailable",
        ),
        pytest.param(errors.ServerError, grpc.StatusCode.INTERNAL, id="server_error"),
        pytest.param(
            errors.TooManyAttempts, grpc.StatusCode.RESOURCE_EXHAUSTED, id="too_many_attempts"
        ),
    ],
)
def test_mapping_follows_the_proto(error: type[errors.AuthError], status: grpc.StatusCode) -> None:
    assert GRPC_STATUS[error] is status


def test_a_checked_token_never_answers_unauthenticated() -> None:
    # The proto's promise: a credential helper must not mistake a bad token for its own expiry.
    assert GRPC_STATUS[errors.InvalidToken] is not grpc.StatusCode.UNAUTHENTICATED
    assert GRPC_STATUS[errors.InvalidGrant] is not grpc.StatusCode.UNAUTHENTICATED


def test_trailing_metadata_carries_code_and_ascii_description() -> None:
    error = errors.InvalidGrant("refresh token expired — café")
    assert trailing_metadata(error) == (
        ("oauth-error", "invalid_grant"),
        ("oauth-error-description", "refresh token expired ? caf?"),
    )


@pytest.mark.parametrize(
    ("description", "sent"),
    [
        pytest.param("a\r\nb\x00c\td", "a??b?c?d", id="control-characters"),
        pytest.param("x" * 256, "x" * 256, id="at-the-bound"),
        pytest.param("x" * 20_000, "x" * 253 + "...", id="past-the-bound"),
    ],
)
def test_a_description_is_sent_printable_and_bounded(description: str, sent: str) -> None:
    error = errors.InsufficientScope(description)
    assert description_of(error) == sent
    assert trailing_metadata(error)[1] == ("oauth-error-description", sent)


def test_trailing_metadata_says_when_to_retry() -> None:
    assert trailing_metadata(errors.TooManyAttempts(42)) == (
        ("oauth-error", "too_many_attempts"),
        ("oauth-error-description", "too many failed attempts, try again later"),
        ("retry-after", "42"),
    )


def test_default_description_and_repr() -> None:
    error = errors.InvalidClient()
    assert error.description == "client authentication failed"
    assert str(error) == "client authentication failed"
    assert repr(error) == (
        "InvalidClient(code='invalid_client', description='client authentication failed')"
    )
