"""The HTML pages: escaping, headers, and no secret ever pre-filled."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from authsvc_gateway.errors import ERRORS, HTTP_STATUS, InvalidRequest
from authsvc_gateway.pages import HTML_HEADERS, consent_page, error_page, login_page


def test_the_password_field_is_never_prefilled() -> None:
    page = login_page(action="/oauth/login", client_name="x", fields={}, username="alice")
    assert re.search(r'type="password"[^>]*value=', page.body.decode()) is None


def test_every_value_is_escaped() -> None:
    evil = '"><script>alert(1)</script>'
    pages = [
        login_page(action=evil, client_name=evil, fields={evil: evil}, username=evil, message=evil),
        consent_page(action=evil, client_name=evil, scopes=[evil], fields={"ticket": evil}),
        error_page(InvalidRequest(evil)),
    ]
    for page in pages:
        assert "<script>" not in page.body.decode()
        for name, value in HTML_HEADERS.items():
            assert page.headers[name] == value


def test_the_inline_style_is_the_one_the_policy_allows() -> None:
    body = error_page(InvalidRequest("x")).body.decode()
    style = re.search(r"<style>(.*)</style>", body, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"'sha256-{digest}'" in HTML_HEADERS["Content-Security-Policy"]


@pytest.mark.parametrize("code", sorted(HTTP_STATUS))
def test_no_error_page_is_401(code: str) -> None:
    # RFC 9110 §15.5.2: a 401 carries a WWW-Authenticate challenge, and a page has none to give:
    # the browser's user holds no credential the client could present (a Basic challenge would
    # open its password dialog). An invalid or disabled client is 400, as Keycloak and
    # node-oidc-provider show it.
    page = error_page(ERRORS[code]("text"))
    assert page.status_code != 401
    assert "www-authenticate" not in page.headers
    assert code in page.body.decode()
