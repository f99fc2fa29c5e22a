"""`authorization.decide`: each way it says no, and where the answer may go."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_gateway.authorization import (
    AuthorizationRequest,
    ErrorPage,
    ErrorRedirect,
    decide,
    error_response_url,
    parse_scope,
    redirected_error,
    response_url,
    still_registered,
    verified_redirect_uri,
)
from authsvc_gateway.errors import (
    AccessDenied,
    InvalidClient,
    InvalidGrant,
    InvalidScope,
    InvalidTarget,
    OAuthError,
    TemporarilyUnavailable,
)
from authsvc_gateway.forms import parse_params

CALLBACK = "https://app.example/cb"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
CLIENT = pb.Client(
    client_id="app",
    grant_types=["authorization_code", "refresh_token"],
    redirect_uris=[CALLBACK, "com.example.app:/cb"],
    scopes=["read", "write"],
    audiences=["https://photos.example/", "print-api"],
)
GOOD = {
    "response_type": "code",
    "client_id": "app",
    "redirect_uri": CALLBACK,
    "code_challenge": CHALLENGE,
    "code_challenge_method": "S256",
    "state": "s1",
}


def _decide(extra: str = "", client: pb.Client = CLIENT, **changes: str | None) -> object:
    params = {key: value for key, value in {**GOOD, **changes}.items() if value is not None}
    query = urlencode(params) + extra
    return decide(parse_params(query), client)


def test_a_valid_request() -> None:
    assert _decide(scope="read write read") == AuthorizationRequest(
        client_id="app",
        redirect_uri=CALLBACK,
        scope=("read", "write"),
        state="s1",
        code_challenge=CHALLENGE,
    )


def test_the_request_survives_the_login_form() -> None:
    request = _decide(scope="read")
    assert isinstance(request, AuthorizationRequest)
    assert decide(parse_params(urlencode(request.fields())), CLIENT) == request


def test_resource_indicators_are_the_clients_audiences() -> None:
    # RFC 8707 §2: `resource` may repeat; each is an audience registered for the client.
    request = _decide("&resource=print-api&resource=print-api", resource="https://photos.example/")
    assert isinstance(request, AuthorizationRequest)
    assert request.resource == ("https://photos.example/", "print-api")
    assert decide(parse_params(urlencode(request.fields())), CLIENT) == request
    unrestricted = _decide()
    assert isinstance(unrestricted, AuthorizationRequest)
    assert unrestricted.resource == ()
    assert "resource" not in unrestricted.fields()


def test_unknown_parameters_are_ignored() -> None:
    assert isinstance(_decide("&prompt=login&nonce=n"), AuthorizationRequest)


@pytest.mark.parametrize(
    ("changes", "extra"),
    [
        pytest.param({"redirect_uri": None}, "", id="missing-with-two-registered"),
        pytest.param({"redirect_uri": "https://evil.example/cb"}, "", id="foreign"),
        pytest.param({"redirect_uri": CALLBACK + "/"}, "", id="trailing-slash"),
        pytest.param({"redirect_uri": "HTTPS://app.example/cb"}, "", id="scheme-case"),
        pytest.param({}, "&redirect_uri=" + CALLBACK, id="repeated-same"),
        pytest.param({"client_id": "other"}, "", id="other-client"),
        pytest.param({}, "&client_id=app", id="client-repeated"),
    ],
)
def test_an_untrusted_redirect_uri_means_an_error_page(
    changes: dict[str, str | None], extra: str
) -> None:
    assert isinstance(_decide(extra, **changes), ErrorPage)


@pytest.mark.parametrize(
    ("changes", "extra", "error"),
    [
        pytest.param({"response_type": None}, "", "invalid_request", id="no-response-type"),
        pytest.param({"response_type": "token"}, "", "unsupported_response_type", id="implicit"),
        pytest.param({"code_challenge": None}, "", "invalid_request", id="no-challenge"),
        pytest.param({"code_challenge_method": None}, "", "invalid_request", id="no-method"),
        pytest.param({"code_challenge_method": "plain"}, "", "invalid_request", id="plain"),
        pytest.param({"code_challenge_method": "s256"}, "", "invalid_request", id="lowercase"),
        pytest.param({"code_challenge": CHALLENGE[:-1]}, "", "invalid_request", id="42-chars"),
        pytest.param({"code_challenge": CHALLENGE[:-1] + "="}, "", "invalid_request", id="padded"),
        pytest.param({"scope": "admin"}, "", "invalid_scope", id="scope"),
        pytest.param({"scope": 'read "x"'}, "", "invalid_scope", id="scope-syntax"),
        pytest.param({}, "&scope=read&scope=write", "invalid_request", id="repeated"),
        pytest.param({"resource": "payments-api"}, "", "invalid_target", id="resource"),
        pytest.param(
            {"resource": "print-api"}, "&resource=other-api", "invalid_target", id="one-resource"
        ),
        pytest.param(
            {"resource": "https://photos.example/#x"}, "", "invalid_target", id="fragment"
        ),
        pytest.param(
            {"resource": "https://PHOTOS.example/"}, "", "invalid_target", id="resource-case"
        ),
    ],
)
def test_other_refusals_go_back_with_the_state(
    changes: dict[str, str | None], extra: str, error: str
) -> None:
    decision = _decide(extra, **changes)
    assert isinstance(decision, ErrorRedirect)
    assert decision.redirect_uri == CALLBACK
    assert decision.error.error == error
    assert decision.state == "s1"


def test_a_client_without_the_code_grant_is_unauthorized() -> None:
    client = pb.Client(
        client_id="app", grant_types=["client_credentials"], redirect_uris=[CALLBACK]
    )
    decision = _decide(client=client)
    assert isinstance(decision, ErrorRedirect)
    assert decision.error.error == "unauthorized_client"


def test_a_repeated_state_is_not_echoed() -> None:
    decision = _decide("&state=s2")
    assert isinstance(decision, ErrorRedirect)
    assert decision.state is None


ONE_URI = pb.Client(
    client_id="app", grant_types=["authorization_code"], redirect_uris=[CALLBACK], scopes=["read"]
)


def test_a_client_with_one_redirect_uri_may_leave_it_out() -> None:
    # OAuth 2.1 §4.1.1: optional if only one redirect URI is registered for this client.
    request = _decide(client=ONE_URI, redirect_uri=None, scope="read")
    assert request == AuthorizationRequest(
        client_id="app",
        redirect_uri=CALLBACK,
        scope=("read",),
        state="s1",
        code_challenge=CHALLENGE,
        redirect_uri_sent=False,
    )
    assert isinstance(request, AuthorizationRequest)
    assert "redirect_uri" not in request.fields()
    assert decide(parse_params(urlencode(request.fields())), ONE_URI) == request
    sent = _decide(client=ONE_URI, scope="read")
    assert isinstance(sent, AuthorizationRequest)
    assert sent.redirect_uri_sent
    assert sent.fields()["redirect_uri"] == CALLBACK


def test_a_client_with_one_loopback_redirect_uri_must_name_it() -> None:
    # RFC 8252 §7.3: a native app names the port it listens on now; the registered port may be
    # another program's.
    native = pb.Client(
        client_id="app",
        grant_types=["authorization_code"],
        redirect_uris=["http://127.0.0.1:9999/cb"],
    )
    assert isinstance(_decide(client=native, redirect_uri=None), ErrorPage)


def test_a_refusal_without_a_redirect_uri_goes_to_the_one_registered() -> None:
    decision = _decide(client=ONE_URI, redirect_uri=None, scope="admin")
    assert decision == ErrorRedirect(CALLBACK, decision.error, "s1")  # type: ignore[union-attr]
    assert decision.error.error == "invalid_scope"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param("&redirect_uri=https%3A%2F%2Fevil.example%2Fcb", id="another"),
        pytest.param("&redirect_uri=", id="empty"),
        pytest.param("&redirect_uri=&redirect_uri=", id="repeated-empty"),
    ],
)
def test_a_client_with_one_redirect_uri_still_gets_only_that_one(extra: str) -> None:
    assert isinstance(_decide(extra, client=ONE_URI, redirect_uri=None), ErrorPage)


@pytest.mark.parametrize(
    ("registered", "sent", "still"),
    [
        pytest.param([CALLBACK], True, True, id="sent-still-registered"),
        pytest.param([CALLBACK, "https://app.example/new"], True, True, id="sent-among-more-now"),
        pytest.param(["https://app.example/new"], True, False, id="sent-unregistered"),
        pytest.param([CALLBACK], False, True, id="implied-still-the-one"),
        pytest.param([CALLBACK, "https://app.example/new"], False, False, id="implied-not-alone"),
        pytest.param(["https://app.example/new"], False, False, id="implied-replaced"),
        pytest.param([], True, False, id="none-registered"),
    ],
)
def test_still_registered(registered: list[str], sent: bool, still: bool) -> None:
    request = AuthorizationRequest(
        client_id="app",
        redirect_uri=CALLBACK,
        scope=(),
        state=None,
        code_challenge=CHALLENGE,
        redirect_uri_sent=sent,
    )
    assert still_registered(pb.Client(client_id="app", redirect_uris=registered), request) is still


def test_verified_redirect_uri_accepts_a_custom_scheme_exactly() -> None:
    params = parse_params(urlencode({"redirect_uri": "com.example.app:/cb"}))
    assert verified_redirect_uri(CLIENT, params) == "com.example.app:/cb"


def test_response_url_keeps_the_registered_query() -> None:
    assert response_url("https://a.example/cb?x=1", {"code": "c", "state": "a b&c"}) == (
        "https://a.example/cb?x=1&code=c&state=a%20b%26c"
    )


@pytest.mark.parametrize(
    ("registered", "expected"),
    [
        ("com.example.app:///cb", "com.example.app:///cb?code=c"),  # urllib made it :/cb
        ("com.example.app:/cb", "com.example.app:/cb?code=c"),
        ("com.example.app://cb/path", "com.example.app://cb/path?code=c"),
        ("https://a.example/cb", "https://a.example/cb?code=c"),
        ("https://a.example/cb?", "https://a.example/cb?code=c"),
        ("https://a.example/cb?x=1", "https://a.example/cb?x=1&code=c"),
        ("http://127.0.0.1:8080/cb", "http://127.0.0.1:8080/cb?code=c"),
        ("https://a.example", "https://a.example?code=c"),
    ],
)
def test_response_url_changes_nothing_of_the_registered_uri(registered: str, expected: str) -> None:
    assert response_url(registered, {"code": "c"}) == expected


def test_response_url_refuses_a_fragment() -> None:
    with pytest.raises(ValueError, match="fragment"):
        response_url("https://a.example/cb#x", {"code": "c"})


def test_error_response_url_carries_error_state_and_issuer() -> None:
    url = error_response_url(
        ErrorRedirect(CALLBACK, AccessDenied("no"), "s"), "https://issuer.example"
    )
    assert url == (
        CALLBACK + "?error=access_denied&error_description=no&state=s"
        "&iss=https%3A%2F%2Fissuer.example"
    )


def test_parse_scope_drops_duplicates_and_checks_syntax() -> None:
    assert parse_scope("a  b a") == ("a", "b")
    assert parse_scope(None) == ()
    with pytest.raises(InvalidScope):
        parse_scope("a\\b")


@pytest.mark.parametrize(
    ("error", "sent"),
    [
        pytest.param(InvalidScope("no"), "invalid_scope", id="a-4.1.2.1-code-goes-back"),
        pytest.param(InvalidTarget("no"), "invalid_target", id="rfc-8707-goes-back"),
        pytest.param(TemporarilyUnavailable("later"), "temporarily_unavailable", id="outage"),
        pytest.param(InvalidGrant("odd"), "server_error", id="another-code-is-server-error"),
        pytest.param(InvalidClient("disabled"), None, id="invalid-client-is-never-redirected"),
    ],
)
def test_redirected_error(error: OAuthError, sent: str | None) -> None:
    found = redirected_error(error)
    assert (found.error if found is not None else None) == sent
