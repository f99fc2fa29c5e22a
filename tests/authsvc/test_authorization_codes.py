"""The redirect URI rules a code is created and redeemed by: each way they say no."""

from __future__ import annotations

import pytest

from authsvc.authorization_codes import (
    MISMATCHED_REDIRECT_URI,
    authorization_redirect_refusal,
    token_redirect_refusal,
)

ONE = ("https://app.example/cb",)
SEVERAL = ("https://app.example/cb", "https://app.example/other")
LOOPBACK = ("http://127.0.0.1:9999/cb",)


@pytest.mark.parametrize(
    ("registered", "sent", "refusal"),
    [
        pytest.param(ONE, "https://app.example/cb", None, id="registered"),
        pytest.param(SEVERAL, "https://app.example/other", None, id="one-of-several"),
        pytest.param(LOOPBACK, "http://127.0.0.1:53123/cb", None, id="loopback-port"),
        pytest.param(ONE, "", None, id="none-with-one-registered"),
        pytest.param(
            SEVERAL,
            "",
            "redirect_uri is required: the client registered more than one",
            id="none-with-several",
        ),
        pytest.param(
            (), "", "redirect_uri is required: the client registered more than one", id="none-none"
        ),
        pytest.param(
            ONE,
            "https://app.example/cb/",
            "redirect_uri does not match a registered one",
            id="slash",
        ),
        pytest.param(
            ONE,
            "https://evil.example/cb",
            "redirect_uri does not match a registered one",
            id="other",
        ),
    ],
)
def test_authorization_redirect_refusal(
    registered: tuple[str, ...], sent: str, refusal: str | None
) -> None:
    assert authorization_redirect_refusal(registered, sent) == refusal


@pytest.mark.parametrize(
    ("bound", "presented", "registered", "accepted"),
    [
        pytest.param(ONE[0], ONE[0], ONE, True, id="same"),
        pytest.param(ONE[0], "", ONE, False, id="sent-then-left-out"),
        pytest.param(ONE[0], ONE[0] + "/", ONE, False, id="slash"),
        pytest.param(SEVERAL[0], SEVERAL[1], SEVERAL, False, id="another-registered"),
        # RFC 8252 §7.3 lets the authorization request vary a loopback port; the token request
        # then repeats the port it used, not the registered one.
        pytest.param("http://127.0.0.1:53123/cb", LOOPBACK[0], LOOPBACK, False, id="loopback"),
        pytest.param("", "", ONE, True, id="left-out-twice"),
        pytest.param("", ONE[0], ONE, True, id="left-out-then-the-one"),
        pytest.param("", "https://evil.example/cb", ONE, False, id="left-out-then-other"),
        pytest.param("", SEVERAL[0], SEVERAL, False, id="left-out-then-registered-since"),
        pytest.param("", "http://127.0.0.1:53123/cb", LOOPBACK, False, id="left-out-then-port"),
        pytest.param("", ONE[0], (), False, id="left-out-client-gone"),
    ],
)
def test_token_redirect_refusal(
    bound: str, presented: str, registered: tuple[str, ...], accepted: bool
) -> None:
    expected = None if accepted else MISMATCHED_REDIRECT_URI
    assert token_redirect_refusal(bound, presented, registered) == expected
