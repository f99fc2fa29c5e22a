"""The rules a code is created and redeemed by (its redirect URI, its sign-in): each way they
say no."""

from __future__ import annotations

import pytest
from authsvc_client.v1 import authsvc_pb2 as pb

from authsvc.authorization_codes import (
    MISMATCHED_REDIRECT_URI,
    authorization_redirect_refusal,
    sign_in_refusal,
    token_redirect_refusal,
)
from authsvc.revocation_state import RevocationState
from authsvc.rpc.servicer import authenticated_at, authentication_message
from authsvc.storage.records import AuthorizationCodeRecord, RevocationEventRecord
from authsvc.users import Authentication

ONE = ("https://app.example/cb",)
SEVERAL = ("https://app.example/cb", "https://app.example/other")
LOOPBACK = ("http://127.0.0.1:9999/cb",)
NOT_REGISTERED = "redirect_uri does not match a registered one"
NOT_IMPLIED = "redirect_uri is required: the client has no single redirect URI to imply"


@pytest.mark.parametrize(
    ("registered", "redirect_uri", "omitted", "refusal"),
    [
        pytest.param(ONE, ONE[0], False, None, id="registered"),
        pytest.param(SEVERAL, SEVERAL[1], False, None, id="one-of-several"),
        pytest.param(LOOPBACK, "http://127.0.0.1:53123/cb", False, None, id="loopback-port"),
        pytest.param(ONE, ONE[0], True, None, id="omitted-with-one-registered"),
        pytest.param(SEVERAL, SEVERAL[0], True, NOT_IMPLIED, id="omitted-with-several"),
        # The registration changed since the request was shown: that URI is not the client's.
        pytest.param(("https://app.example/new",), ONE[0], True, NOT_IMPLIED, id="omitted-stale"),
        pytest.param(LOOPBACK, LOOPBACK[0], True, NOT_IMPLIED, id="omitted-loopback"),
        pytest.param(ONE, "", False, "redirect_uri is required", id="empty"),
        pytest.param(ONE, "", True, "redirect_uri is required", id="empty-omitted"),
        pytest.param(ONE, ONE[0] + "/", False, NOT_REGISTERED, id="slash"),
        pytest.param(ONE, "https://evil.example/cb", False, NOT_REGISTERED, id="other"),
    ],
)
def test_authorization_redirect_refusal(
    registered: tuple[str, ...], redirect_uri: str, omitted: bool, refusal: str | None
) -> None:
    assert authorization_redirect_refusal(registered, redirect_uri, omitted=omitted) == refusal


def code(redirect_uri: str, *, sent: bool) -> AuthorizationCodeRecord:
    return AuthorizationCodeRecord(
        client_id="app",
        redirect_uri=redirect_uri,
        subject="alice",
        scope=(),
        audience=(),
        device_id="web",
        created_at=0.0,
        expires_at=60.0,
        used_at=None,
        family_id=None,
        code_challenge="c",
        code_digest=b"d" * 32,
        redirect_uri_sent=sent,
    )


@pytest.mark.parametrize(
    ("record", "presented", "accepted"),
    [
        pytest.param(code(ONE[0], sent=True), ONE[0], True, id="same"),
        pytest.param(code(ONE[0], sent=True), "", False, id="sent-then-left-out"),
        pytest.param(code(ONE[0], sent=True), ONE[0] + "/", False, id="slash"),
        pytest.param(code(SEVERAL[0], sent=True), SEVERAL[1], False, id="another-registered"),
        # RFC 8252 §7.3 lets the authorization request vary a loopback port; the token request
        # then repeats the port it used, not the registered one.
        pytest.param(
            code("http://127.0.0.1:53123/cb", sent=True), LOOPBACK[0], False, id="loopback"
        ),
        pytest.param(code(ONE[0], sent=False), "", True, id="left-out-twice"),
        pytest.param(code(ONE[0], sent=False), ONE[0], True, id="left-out-then-the-one"),
        pytest.param(code(ONE[0], sent=False), "https://evil.example/cb", False, id="then-other"),
        pytest.param(code(ONE[0], sent=False), SEVERAL[1], False, id="then-registered-since"),
    ],
)
def test_token_redirect_refusal(
    record: AuthorizationCodeRecord, presented: str, accepted: bool
) -> None:
    expected = None if accepted else MISMATCHED_REDIRECT_URI
    assert token_redirect_refusal(record, presented) == expected


SIGNED_IN = 1_800_000_000.0
REMEMBERED = 630.0
LEEWAY = 30.0
FUTURE = (
    "the sign-in is dated in the future; send AuthenticateUser's authenticated_at back unchanged"
)


def revocation(kind: str, value: str, at: float) -> RevocationEventRecord:
    return RevocationEventRecord(
        cursor=1, occurred_at=at, expires_at=at + REMEMBERED, kind=kind, value=value
    )


@pytest.mark.parametrize(
    ("revocations", "now", "refusal"),
    [
        pytest.param([], SIGNED_IN + 30, None, id="nothing-revoked"),
        pytest.param(
            [revocation("subject", "alice", SIGNED_IN + 10)],
            SIGNED_IN + 30,
            "subject revoked since the sign-in; sign in again",
            id="logged-out-everywhere-on-the-consent-page",
        ),
        pytest.param(
            [revocation("client", "app", SIGNED_IN + 10)],
            SIGNED_IN + 30,
            "client revoked since the sign-in; sign in again",
            id="client-revoked-on-the-consent-page",
        ),
        pytest.param(
            [revocation("subject", "alice", SIGNED_IN - 10)],
            SIGNED_IN + 30,
            None,
            id="revoked-before-the-sign-in",
        ),
        pytest.param(
            [revocation("subject", "bob", SIGNED_IN + 10)], SIGNED_IN + 30, None, id="another-user"
        ),
        pytest.param([], SIGNED_IN + REMEMBERED, None, id="as-old-as-remembered"),
        pytest.param(
            [],
            SIGNED_IN + REMEMBERED + 1,
            "the sign-in is too old; sign in again",
            id="older-than-remembered",
        ),
        # Dated later than now: a revocation since it could never be found.
        pytest.param([], SIGNED_IN - LEEWAY, None, id="as-far-ahead-as-the-leeway"),
        pytest.param([], SIGNED_IN - LEEWAY - 1, FUTURE, id="further-ahead-than-the-leeway"),
        pytest.param(
            [revocation("subject", "alice", SIGNED_IN - 3600)],
            SIGNED_IN - 3590,
            FUTURE,
            id="dated-past-a-revocation",
        ),
    ],
)
def test_sign_in_refusal(
    revocations: list[RevocationEventRecord], now: float, refusal: str | None
) -> None:
    state = RevocationState()
    for event in revocations:
        state.apply(event)
    assert (
        sign_in_refusal(
            state,
            subject="alice",
            client_id="app",
            authenticated_at=SIGNED_IN,
            now=now,
            remembered_for=REMEMBERED,
            leeway=LEEWAY,
        )
        == refusal
    )


def test_a_revocation_in_the_sign_ins_instant_counts_after_it_over_the_wire() -> None:
    # The sign-in's time goes out in nanoseconds and comes back as a float, for this instant one
    # step later than it was: a revocation made in the same instant then looked earlier.
    instant = 1_800_000_000.0000017
    sent = authentication_message(Authentication("alice", instant)).authenticated_at
    received = authenticated_at(pb.CreateAuthorizationCodeRequest(authenticated_at=sent))
    assert received is not None
    assert received > instant  # one float step later
    state = RevocationState()
    state.apply(revocation("subject", "alice", instant))
    refusal = sign_in_refusal(
        state,
        subject="alice",
        client_id="app",
        authenticated_at=received,
        now=instant + 5,
        remembered_for=REMEMBERED,
        leeway=LEEWAY,
    )
    assert refusal == "subject revoked since the sign-in; sign in again"
