"""The client error hierarchy and the one place gRPC errors are mapped onto it."""

from __future__ import annotations

import re
from pathlib import Path

import authsvc_client
import grpc
import pytest
from authsvc_client import (
    AccessDenied,
    AuthError,
    InsufficientScope,
    InvalidGrant,
    InvalidRequest,
    InvalidToken,
    NotFound,
    ServerError,
    TemporarilyUnavailable,
    TooManyAttempts,
    _feed,
)
from authsvc_client._errors import GRPC_STATUS, from_rpc_error, refuses_bearer

from authsvc import errors as server_errors

PROTO = Path(__file__).resolve().parents[2] / "protos" / "authsvc" / "v1" / "authsvc.proto"


class FakeRpcError(grpc.RpcError):
    def __init__(self, status: grpc.StatusCode, details: str = "", trailers: tuple = ()) -> None:
        self._status, self._details, self._trailers = status, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._status

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple:
        return self._trailers


def client_error_classes() -> list[type[AuthError]]:
    return [
        obj
        for obj in vars(authsvc_client).values()
        if isinstance(obj, type) and issubclass(obj, AuthError)
    ]


def proto_codes() -> set[str]:
    header = PROTO.read_text().split("syntax")[0]
    listed = re.search(r"vocabulary:(.*?)\) and a short", header, re.DOTALL)
    assert listed is not None, "the proto header no longer lists the OAuth codes"
    return set(re.findall(r"[a-z]+_[a-z_]+", listed.group(1)))


def test_the_proto_header_lists_the_codes_we_read() -> None:
    assert {"invalid_grant", "invalid_token", "insufficient_scope", "server_error"} <= proto_codes()


@pytest.mark.parametrize("code", sorted(proto_codes()))
def test_every_oauth_code_of_the_api_has_its_class(code: str) -> None:
    error = from_rpc_error(FakeRpcError(grpc.StatusCode.INTERNAL, "", (("oauth-error", code),)))
    assert type(error) is not AuthError
    assert error.error == code


@pytest.mark.parametrize(
    "server_error",
    [
        pytest.param(cls, id=cls.__name__)
        for cls in vars(server_errors).values()
        if isinstance(cls, type) and issubclass(cls, server_errors.AuthError)
    ],
)
def test_every_code_authsvc_can_send_has_a_class(server_error: type) -> None:
    code = server_error.code
    error = from_rpc_error(FakeRpcError(grpc.StatusCode.INTERNAL, "", (("oauth-error", code),)))
    assert error.code == code


@pytest.mark.parametrize("cls", client_error_classes(), ids=lambda c: c.__name__)
def test_every_error_class_has_a_status_and_a_distinct_code(cls: type[AuthError]) -> None:
    assert cls in GRPC_STATUS
    if cls is AuthError or issubclass(cls, InvalidToken):
        return  # the base stands in for unknown codes; UnknownSigningKey is an invalid_token
    assert [c for c in client_error_classes() if c.code == cls.code and c is not AuthError] == [cls]


def test_the_oauth_code_and_description_come_from_trailing_metadata() -> None:
    error = from_rpc_error(
        FakeRpcError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "details",
            (("oauth-error", "invalid_grant"), ("oauth-error-description", "refresh token reused")),
        )
    )
    assert isinstance(error, InvalidGrant)
    assert error.description == "refresh token reused"
    assert error.status == grpc.StatusCode.FAILED_PRECONDITION


def test_an_unknown_code_keeps_its_text_on_the_base_class() -> None:
    error = from_rpc_error(
        FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "", (("oauth-error", "new_code"),))
    )
    assert type(error) is AuthError
    assert error.error == "new_code"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (grpc.StatusCode.UNAVAILABLE, TemporarilyUnavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, TemporarilyUnavailable),
        (grpc.StatusCode.UNAUTHENTICATED, InvalidToken),
        (grpc.StatusCode.PERMISSION_DENIED, AccessDenied),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidRequest),
        (grpc.StatusCode.UNIMPLEMENTED, ServerError),
    ],
)
def test_without_an_oauth_code_the_status_decides(
    status: grpc.StatusCode, expected: type[AuthError]
) -> None:
    error = from_rpc_error(FakeRpcError(status, "connection refused"))
    assert type(error) is expected
    assert error.status == status
    assert error.description == "connection refused"


def test_raised_errors_carry_the_status_of_their_class() -> None:
    assert InsufficientScope().status == grpc.StatusCode.PERMISSION_DENIED
    assert InvalidToken("expired").status == grpc.StatusCode.UNAUTHENTICATED
    assert (
        repr(InvalidToken("expired"))
        == "InvalidToken(error='invalid_token', description='expired')"
    )


def test_retry_after_comes_from_trailing_metadata() -> None:
    error = from_rpc_error(
        FakeRpcError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "",
            (("oauth-error", "too_many_attempts"), ("retry-after", "42")),
        )
    )
    assert isinstance(error, TooManyAttempts)
    assert error.retry_after == 42


@pytest.mark.parametrize("value", ["", "soon", "-1", "1.5", "9" * 10])
def test_a_retry_after_that_is_not_whole_seconds_is_ignored(value: str) -> None:
    trailers = (("oauth-error", "too_many_attempts"), ("retry-after", value))
    error = from_rpc_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "", trailers))
    assert error.retry_after is None


UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("status", "code", "refused"),
    [
        pytest.param(UNAUTHENTICATED, "invalid_token", True, id="our-token-refused"),
        pytest.param(UNAUTHENTICATED, "", True, id="unauthenticated-from-a-proxy"),
        pytest.param(UNAUTHENTICATED, "invalid_client", False, id="wrong-secret-in-the-request"),
        pytest.param(
            grpc.StatusCode.FAILED_PRECONDITION, "invalid_token", False, id="token-being-checked"
        ),
        pytest.param(grpc.StatusCode.PERMISSION_DENIED, "insufficient_scope", False, id="scope"),
        pytest.param(grpc.StatusCode.UNAVAILABLE, "", False, id="unavailable"),
    ],
)
def test_refuses_bearer_only_for_the_callers_own_token(
    status: grpc.StatusCode, code: str, refused: bool
) -> None:
    trailers = (("oauth-error", code),) if code else ()
    assert refuses_bearer(from_rpc_error(FakeRpcError(status, "", trailers))) is refused


@pytest.mark.parametrize(
    ("failure", "said"),
    [
        pytest.param(
            FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "fell behind; resume from cursor"),
            "RESOURCE_EXHAUSTED: fell behind; resume from cursor",
            id="status-and-details",
        ),
        pytest.param(FakeRpcError(grpc.StatusCode.UNAVAILABLE), "UNAVAILABLE", id="no-details"),
        pytest.param(
            FakeRpcError(grpc.StatusCode.INTERNAL, "x" * 5000),
            "INTERNAL: " + "x" * _feed.MAX_LOGGED_DETAILS,
            id="details-cut",
        ),
        pytest.param(ValueError("boom"), "ValueError", id="not-an-rpc-error"),
    ],
)
def test_how_the_feed_logs_a_failure(failure: BaseException, said: str) -> None:
    assert _feed._describe(failure) == said
