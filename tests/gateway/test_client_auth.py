"""Client authentication parsing (RFC 6749 §2.3): one method, Basic credentials form-urlencoded."""

from __future__ import annotations

import base64

import pytest
from authsvc_gateway.client_auth import (
    BASIC_CHALLENGE,
    AuthMethod,
    ClientCredentials,
    authenticate,
    challenge_for,
    client_credentials_from,
)
from authsvc_gateway.errors import InvalidClient, InvalidRequest
from authsvc_gateway.forms import NO_PARAMS, parse_form

from tests.gateway.fakes import FakeBackend


def _basic(raw: str) -> str:
    return "Basic " + base64.b64encode(raw.encode()).decode()


def test_basic_credentials_are_form_urldecoded() -> None:
    # RFC 6749 §2.3.1: "client:1" with secret "p:a%s+s" is sent as client%3A1:p%3Aa%25s%2Bs
    found = client_credentials_from(_basic("client%3A1:p%3Aa%25s%2Bs"), NO_PARAMS)
    assert found == ClientCredentials("client:1", "p:a%s+s", AuthMethod.CLIENT_SECRET_BASIC)


def test_the_scheme_is_case_insensitive() -> None:
    found = client_credentials_from("bAsIc " + _basic("id:secret").split()[1], NO_PARAMS)
    assert found.client_id == "id"


def test_post_credentials() -> None:
    found = client_credentials_from(None, parse_form("client_id=id&client_secret=s"))
    assert found == ClientCredentials("id", "s", AuthMethod.CLIENT_SECRET_POST)


def test_a_public_client_names_itself() -> None:
    found = client_credentials_from(None, parse_form("client_id=id"))
    assert found == ClientCredentials("id", "", AuthMethod.NONE)


def test_a_matching_client_id_in_the_body_is_allowed_with_basic() -> None:
    found = client_credentials_from(_basic("id:s"), parse_form("client_id=id"))
    assert found.method is AuthMethod.CLIENT_SECRET_BASIC


def test_the_secret_stays_out_of_repr() -> None:
    assert "hunter2" not in repr(ClientCredentials("id", "hunter2", AuthMethod.CLIENT_SECRET_POST))


@pytest.mark.parametrize(
    ("authorization", "body", "error"),
    [
        pytest.param(None, "", InvalidClient, id="nothing"),
        pytest.param(None, "client_secret=s", InvalidClient, id="secret-without-id"),
        pytest.param("Bearer abc", "", InvalidClient, id="bearer"),
        pytest.param("Basic !!!", "", InvalidClient, id="not-base64"),
        pytest.param(_basic("no-colon"), "", InvalidClient, id="no-colon"),
        pytest.param(_basic(":secret"), "", InvalidClient, id="empty-id"),
        pytest.param(
            "Basic " + base64.b64encode(b"\xff:x").decode(), "", InvalidClient, id="not-utf8"
        ),
        pytest.param(_basic("id%ff:x"), "", InvalidClient, id="bad-percent"),
        pytest.param(_basic("id%00:x"), "", InvalidClient, id="nul-in-the-id"),
        pytest.param(_basic("id:x%00"), "", InvalidClient, id="nul-in-the-secret"),
        pytest.param(_basic("x" * 600 + ":s"), "", InvalidClient, id="huge-id"),
        pytest.param(_basic("id:s"), "client_secret=s", InvalidRequest, id="two-methods"),
        pytest.param(_basic("id:s"), "client_id=other", InvalidRequest, id="two-ids"),
        pytest.param("Basic", "", InvalidClient, id="scheme-only"),
    ],
)
def test_refusals(authorization: str | None, body: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        client_credentials_from(authorization, parse_form(body))


@pytest.mark.parametrize(
    ("authorization", "body", "challenge"),
    [
        pytest.param("Basic x", "", BASIC_CHALLENGE, id="basic-tried"),
        pytest.param(None, "", BASIC_CHALLENGE, id="nothing-offered"),
        pytest.param(None, "client_id=a&client_secret=b", None, id="post-tried"),
        pytest.param(None, "client_id=a", None, id="public"),
    ],
)
def test_challenge(authorization: str | None, body: str, challenge: str | None) -> None:
    assert challenge_for(authorization, parse_form(body)) == challenge


@pytest.mark.parametrize(
    ("authorization", "body"),
    [
        pytest.param(None, "client_id={id}", id="named-without-secret"),
        pytest.param("basic", "", id="basic-with-empty-secret"),
    ],
)
async def test_an_endpoint_closed_to_public_clients_does_not_tell_which_ids_are_registered(
    authorization: str | None, body: str
) -> None:
    backend = FakeBackend()
    backend.add_client("browser-app")  # public: no secret
    refusals = []
    for client_id in ("browser-app", "no-such-client"):
        header = _basic(f"{client_id}:") if authorization else None
        credentials = client_credentials_from(header, parse_form(body.format(id=client_id)))
        with pytest.raises(InvalidClient) as refused:
            await authenticate(backend, credentials, allow_public=False)
        refusals.append(refused.value.description)
    assert refusals[0] == refusals[1]
    if authorization is None:
        assert backend.called("authenticate_client") == []  # refused before authsvc is asked


async def test_a_public_client_may_use_an_endpoint_open_to_it() -> None:
    backend = FakeBackend()
    backend.add_client("browser-app")
    credentials = client_credentials_from(None, parse_form("client_id=browser-app"))
    client = await authenticate(backend, credentials)
    assert client.client_id == "browser-app"
