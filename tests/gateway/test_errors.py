"""The one table from OAuth error code to HTTP status, walked for every code there is."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from authsvc_gateway.errors import (
    ERRORS,
    HTTP_STATUS,
    InvalidClient,
    OAuthError,
    ServerError,
    error_from_code,
    error_response,
)

from authsvc import errors as core_errors

PROTO = Path(__file__).parents[2] / "protos" / "authsvc" / "v1" / "authsvc.proto"


def _proto_codes() -> set[str]:
    """Every OAuth code the proto's error section names."""
    header = PROTO.read_text().split("syntax =")[0]
    return set(
        re.findall(r"\b[a-z]+(?:_[a-z]+)+\b", header.split("Errors.")[1].split("Authorization.")[0])
    ) - {"oauth_error"}


def _core_codes() -> set[str]:
    found, pending = set(), [core_errors.AuthError]
    while pending:
        cls = pending.pop()
        found.add(cls.code)
        pending.extend(cls.__subclasses__())
    return found


def test_the_proto_codes_are_read() -> None:
    assert {
        "invalid_request",
        "invalid_grant",
        "server_error",
        "unsupported_token_type",
    } <= _proto_codes()


@pytest.mark.parametrize("code", sorted(_proto_codes() | _core_codes()))
def test_every_code_authsvc_can_send_becomes_a_known_error(code: str) -> None:
    error = error_from_code(code, "because")
    assert not isinstance(error, ServerError) or code == "server_error"
    assert error.error in HTTP_STATUS


@pytest.mark.parametrize("code", sorted(HTTP_STATUS))
def test_every_http_code_has_its_error_class(code: str) -> None:
    assert ERRORS[code].error == code


def test_every_error_class_has_an_http_status() -> None:
    for cls in OAuthError.__subclasses__():
        assert cls.error in HTTP_STATUS, cls


@pytest.mark.parametrize(
    ("code", "status"),
    [
        pytest.param("invalid_client", 400, id="invalid_client-without-challenge-400"),
        pytest.param("invalid_grant", 400, id="invalid_grant-400"),
        pytest.param("invalid_request", 400, id="invalid_request-400"),
        pytest.param("unsupported_grant_type", 400, id="unsupported_grant_type-400"),
        pytest.param("temporarily_unavailable", 503, id="temporarily_unavailable-503"),
        pytest.param("insufficient_scope", 403, id="insufficient_scope-403"),
    ],
)
def test_rfc_statuses(code: str, status: int) -> None:
    reply = error_response(ERRORS[code]("text"))
    assert reply.status_code == status
    assert json.loads(reply.body) == {"error": code, "error_description": "text"}
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["content-type"] == "application/json"


def test_an_unknown_code_is_a_server_error() -> None:
    assert isinstance(error_from_code("made_up"), ServerError)


def test_descriptions_keep_to_the_rfc_character_set() -> None:
    error = InvalidClient('bad "quote" \\ and\nnewline and é')
    assert re.fullmatch(r"[\x20-\x21\x23-\x5b\x5d-\x7e]*", error.description)


def test_the_challenge_goes_into_www_authenticate() -> None:
    reply = error_response(InvalidClient(), www_authenticate='Basic realm="x"')
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == 'Basic realm="x"'
    assert "error_description" not in json.loads(reply.body)


def test_unavailable_says_when_to_retry() -> None:
    assert error_response(ERRORS["temporarily_unavailable"]()).headers["retry-after"]


def test_too_many_attempts_is_429_and_says_when_authsvc_said() -> None:
    error = error_from_code("too_many_attempts", "slow down", retry_after=42)
    reply = error_response(error)
    assert (reply.status_code, reply.headers["retry-after"]) == (429, "42")


@pytest.mark.parametrize("code", sorted(HTTP_STATUS))
def test_no_401_goes_without_a_challenge(code: str) -> None:
    # RFC 9110 §15.5.2: a 401 carries WWW-Authenticate. Only invalid_client is answered with 401
    # here, and only with its Basic challenge; invalid_token is a resource server's answer.
    reply = error_response(ERRORS[code]("text"))
    assert reply.status_code != 401 or code == "invalid_token"
