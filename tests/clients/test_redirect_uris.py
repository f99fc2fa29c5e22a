"""redirect_uri_registered: exact matching, and the port of a loopback IP literal (RFC 8252 §7.3);
implied_redirect_uri: when a request may leave it out (OAuth 2.1 §4.1.1)."""

from __future__ import annotations

import pytest
from authsvc_client import implied_redirect_uri, redirect_uri_allowed, redirect_uri_registered

WEB = "https://app.example/cb"
LOOPBACK = "http://127.0.0.1/cb"
LOOPBACK_V6 = "http://[::1]:8000/cb"
REGISTERED = (WEB, LOOPBACK, LOOPBACK_V6, "http://localhost:3000/cb", "com.example.app:/cb")


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(WEB, id="exact"),
        pytest.param("com.example.app:/cb", id="custom-scheme-exact"),
        pytest.param("http://127.0.0.1:53123/cb", id="loopback-any-port"),
        pytest.param(LOOPBACK, id="loopback-registered-without-port"),
        pytest.param("http://[::1]:61023/cb", id="ipv6-loopback-another-port"),
        pytest.param("http://[::1]/cb", id="ipv6-loopback-no-port"),
    ],
)
def test_registered(sent: str) -> None:
    assert redirect_uri_registered(REGISTERED, sent)


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param("https://app.example:8443/cb", id="https-port-is-exact"),
        pytest.param("http://localhost:3001/cb", id="localhost-port-is-exact"),
        pytest.param("http://127.0.0.1:53123/cb/extra", id="loopback-other-path"),
        pytest.param("http://127.0.0.1:53123/cb?next=x", id="loopback-added-query"),
        pytest.param("http://127.0.0.1:53123/cb#x", id="loopback-fragment"),
        pytest.param("http://[::1]:53123/callback", id="ipv6-other-path"),
        pytest.param("http://127.0.0.1:53123/CB", id="loopback-case"),
        pytest.param("https://127.0.0.1:53123/cb", id="loopback-other-scheme"),
        pytest.param("http://user@127.0.0.1:53123/cb", id="loopback-userinfo"),
        pytest.param("http://127.0.0.1:80@evil.example/cb", id="userinfo-trick"),
        pytest.param("http://127.0.0.1.evil.example/cb", id="loopback-prefix-host"),
        pytest.param("http://127.0.0.2:53123/cb", id="other-loopback-address"),
        pytest.param("http://127.0.0.1:99999/cb", id="port-out-of-range"),
        pytest.param("http://127.0.0.1:0/cb", id="port-zero"),
        pytest.param("http://127.0.0.1:/cb", id="empty-port"),
    ],
)
def test_not_registered(sent: str) -> None:
    assert not redirect_uri_registered(REGISTERED, sent)


def test_a_non_loopback_registration_never_matches_a_loopback_uri() -> None:
    assert not redirect_uri_registered([WEB], "http://127.0.0.1:53123/cb")


def test_ipv4_and_ipv6_loopback_do_not_stand_for_each_other() -> None:
    assert not redirect_uri_registered([LOOPBACK_V6], "http://127.0.0.1:8000/cb")
    assert not redirect_uri_registered([LOOPBACK], "http://[::1]/cb")


@pytest.mark.parametrize(
    ("registered", "implied"),
    [
        pytest.param((WEB,), WEB, id="one"),
        pytest.param(("com.example.app:/cb",), "com.example.app:/cb", id="one-custom-scheme"),
        pytest.param(("http://localhost:3000/cb",), "http://localhost:3000/cb", id="localhost"),
        pytest.param((WEB, "com.example.app:/cb"), None, id="two"),
        pytest.param((), None, id="none"),
        # A native app names its port per request; the registered one may be anyone's now.
        pytest.param((LOOPBACK,), None, id="loopback"),
        pytest.param((LOOPBACK_V6,), None, id="loopback-v6"),
        pytest.param(("http://127.0.0.1:9999/cb",), None, id="loopback-with-port"),
    ],
)
def test_a_request_may_leave_the_redirect_uri_out_only_for_one_registered_elsewhere(
    registered: tuple[str, ...], implied: str | None
) -> None:
    assert implied_redirect_uri(registered) == implied


@pytest.mark.parametrize(
    ("registered", "uri", "sent", "allowed"),
    [
        pytest.param((WEB,), WEB, True, True, id="sent-registered"),
        pytest.param((WEB, LOOPBACK), "http://127.0.0.1:5000/cb", True, True, id="sent-loopback"),
        pytest.param((WEB,), WEB + "/", True, False, id="sent-unregistered"),
        pytest.param((WEB,), WEB, False, True, id="implied"),
        pytest.param((WEB, LOOPBACK), WEB, False, False, id="implied-among-several"),
        pytest.param((LOOPBACK,), LOOPBACK, False, False, id="implied-loopback"),
        pytest.param(("https://app.example/new",), WEB, False, False, id="implied-another"),
    ],
)
def test_redirect_uri_allowed(
    registered: tuple[str, ...], uri: str, sent: bool, allowed: bool
) -> None:
    assert redirect_uri_allowed(registered, uri, sent=sent) is allowed
