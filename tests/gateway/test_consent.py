"""Who sees consent, and the signed ticket that carries a login to the consent form."""

from __future__ import annotations

import pytest
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_gateway.consent import (
    bound_to,
    browser_binding,
    needs_consent,
    open_ticket,
    seal_ticket,
)
from authsvc_gateway.routes.authorize import _request_from_ticket

KEY = b"k" * 32


@pytest.mark.parametrize(
    ("first_party", "skip", "expected"),
    [
        pytest.param(False, True, True, id="third-party"),
        pytest.param(False, False, True, id="third-party-no-skip"),
        pytest.param(True, True, False, id="first-party-skips"),
        pytest.param(True, False, True, id="first-party-configured-to-ask"),
    ],
)
def test_needs_consent(first_party: bool, skip: bool, expected: bool) -> None:
    client = pb.Client(client_id="c", first_party=first_party)
    assert needs_consent(client, first_party_skip_consent=skip) is expected


def test_a_ticket_round_trips_until_it_expires() -> None:
    ticket = seal_ticket(KEY, {"sub": "u1"}, now=100, lifetime=10)
    assert open_ticket(KEY, ticket, now=109) == {"sub": "u1", "exp": 110}
    assert open_ticket(KEY, ticket, now=110) is None


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda t: t.replace(".", ".A", 1), id="signature"),
        pytest.param(lambda t: "A" + t, id="body"),
        pytest.param(lambda t: t.split(".")[0], id="unsigned"),
        pytest.param(lambda t: "", id="empty"),
        pytest.param(lambda t: "é.é", id="not-ascii"),
        pytest.param(lambda t: "!!!.!!!", id="not-base64"),
    ],
)
def test_a_tampered_ticket_opens_to_nothing(tamper) -> None:
    ticket = seal_ticket(KEY, {"sub": "u1"}, now=100, lifetime=10)
    assert open_ticket(KEY, tamper(ticket), now=100) is None


def test_another_key_cannot_open_it() -> None:
    ticket = seal_ticket(KEY, {"sub": "u1"}, now=100, lifetime=10)
    assert open_ticket(b"x" * 32, ticket, now=100) is None


@pytest.mark.parametrize(
    ("payload", "nonce", "bound"),
    [
        pytest.param({"browser": browser_binding("n1")}, "n1", True, id="the-same-browser"),
        pytest.param({"browser": browser_binding("n1")}, "n2", False, id="another-browser"),
        pytest.param({"browser": browser_binding("n1")}, None, False, id="no-cookie"),
        pytest.param({}, "n1", False, id="a-ticket-naming-no-browser"),
        pytest.param({"browser": 1}, "n1", False, id="not-a-string"),
    ],
)
def test_a_ticket_is_bound_to_the_browser_it_was_shown_to(
    payload: dict[str, object], nonce: str | None, bound: bool
) -> None:
    assert bound_to(payload, nonce) is bound


def test_the_binding_is_not_the_nonce() -> None:
    assert "n1" not in browser_binding("n1")
    assert browser_binding("n1") != browser_binding("n2")


SEALED = {
    "sub": "alice",
    "client_id": "app",
    "redirect_uri": "https://app.example/cb",
    "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    "scope": "read",
    "state": "s1",
}


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        pytest.param({"redirect_uri_sent": False}, False, id="left-out"),
        pytest.param({"redirect_uri_sent": True}, True, id="sent"),
        # A ticket sealed before requests could leave it out always named it.
        pytest.param({}, True, id="older-ticket"),
    ],
)
def test_a_ticket_says_whether_the_request_named_its_redirect_uri(
    sent: dict[str, bool], expected: bool
) -> None:
    opened = _request_from_ticket({**SEALED, **sent})
    assert opened is not None
    login, request = opened
    assert (login.subject, request.redirect_uri, request.redirect_uri_sent) == (
        "alice",
        "https://app.example/cb",
        expected,
    )


@pytest.mark.parametrize(
    ("sealed", "expected"),
    [
        pytest.param(
            {"resource": "print-api https://photos.example/"},
            ("print-api", "https://photos.example/"),
            id="two",
        ),
        pytest.param({"resource": ""}, (), id="none"),
        # A ticket sealed before the gateway read `resource`: the client's defaults, as then.
        pytest.param({}, (), id="older-ticket"),
    ],
)
def test_a_ticket_carries_the_requests_resources(
    sealed: dict[str, str], expected: tuple[str, ...]
) -> None:
    opened = _request_from_ticket({**SEALED, **sealed})
    assert opened is not None
    assert opened[1].resource == expected


def test_a_ticket_carries_the_sign_in_time_to_the_nanosecond() -> None:
    opened = _request_from_ticket({**SEALED, "authenticated_at": 1_800_000_000_123_456_789})
    assert opened is not None
    login, _ = opened
    assert login.authenticated_at.ToNanoseconds() == 1_800_000_000_123_456_789


def test_a_ticket_without_a_sign_in_time_carries_a_login_without_one() -> None:
    # Sealed before logins were dated, or the login came from an older authsvc: no time is sent,
    # and authsvc issues the code as it did before.
    opened = _request_from_ticket(SEALED)
    assert opened is not None
    login, _ = opened
    assert not login.HasField("authenticated_at")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"authenticated_at": 1.8e9}, id="time-not-an-int"),
        pytest.param({"authenticated_at": True}, id="time-a-bool"),
        pytest.param({"redirect_uri_sent": "false"}, id="sent-not-a-bool"),
        pytest.param({"redirect_uri": None}, id="no-redirect-uri"),
        pytest.param({"state": 1}, id="state-not-a-string"),
        pytest.param({"resource": ["print-api"]}, id="resource-not-a-string"),
        pytest.param({"sub": None}, id="no-subject"),
    ],
)
def test_a_ticket_with_a_malformed_field_carries_no_request(change: dict[str, object]) -> None:
    assert _request_from_ticket({**SEALED, **change}) is None
