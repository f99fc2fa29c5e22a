"""The signed double-submit CSRF check: each way it says no."""

from __future__ import annotations

import pytest
from authsvc_gateway.csrf import CsrfCookie, CsrfVerdict, check_csrf, csrf_cookie, issue_csrf

KEY = b"k" * 32


def test_a_fresh_pair_passes() -> None:
    pair = issue_csrf(KEY, None)
    assert check_csrf(KEY, pair.cookie, pair.token) is CsrfVerdict.PASSED


def test_an_existing_cookie_is_kept_so_two_tabs_both_work() -> None:
    first = issue_csrf(KEY, None)
    second = issue_csrf(KEY, first.cookie)
    assert second.cookie == first.cookie
    assert check_csrf(KEY, second.cookie, first.token) is CsrfVerdict.PASSED


def test_a_malformed_cookie_is_replaced() -> None:
    assert issue_csrf(KEY, "<script>").cookie != "<script>"


def test_refusals() -> None:
    pair = issue_csrf(KEY, None)
    other = issue_csrf(KEY, None)
    assert check_csrf(KEY, None, pair.token) is CsrfVerdict.NO_COOKIE
    assert check_csrf(KEY, "short", pair.token) is CsrfVerdict.NO_COOKIE
    assert check_csrf(KEY, pair.cookie, None) is CsrfVerdict.NO_TOKEN
    assert check_csrf(KEY, pair.cookie, "") is CsrfVerdict.NO_TOKEN
    assert check_csrf(KEY, pair.cookie, other.token) is CsrfVerdict.MISMATCH
    # The cookie value itself is not a valid token (plain double-submit would accept it).
    assert check_csrf(KEY, pair.cookie, pair.cookie) is CsrfVerdict.MISMATCH
    # A token minted under another key (another deployment) does not pass.
    assert check_csrf(b"x" * 32, pair.cookie, pair.token) is CsrfVerdict.MISMATCH
    assert check_csrf(KEY, pair.cookie, "é") is CsrfVerdict.MISMATCH


def test_secrets_stay_out_of_repr() -> None:
    pair = issue_csrf(KEY, None)
    assert pair.cookie not in repr(pair)
    assert pair.token not in repr(pair)


@pytest.mark.parametrize(
    ("secure", "expected"),
    [
        pytest.param(True, CsrfCookie("__Host-authsvc_csrf", "/"), id="https-host-only"),
        pytest.param(False, CsrfCookie("authsvc_csrf", "/oauth"), id="plain-http"),
    ],
)
def test_the_cookie_is_host_only_where_the_browser_allows_it(
    secure: bool, expected: CsrfCookie
) -> None:
    # RFC 6265bis §4.1.3.2: a `__Host-` cookie must be Secure and for Path=/, so over plain
    # HTTP the browser would drop it.
    assert csrf_cookie(secure) == expected


def test_behind_a_prefix_the_plain_cookie_follows_the_prefix() -> None:
    assert csrf_cookie(False, "/auth") == CsrfCookie("authsvc_csrf", "/auth/oauth")
    assert csrf_cookie(True, "/auth") == CsrfCookie("__Host-authsvc_csrf", "/")
