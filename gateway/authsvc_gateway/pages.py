"""The login, consent and error pages: server-rendered HTML with no scripts and no external assets.

Every value put into a template is HTML-escaped unless it is `Html` built here from escaped parts.
The pages forbid framing (clickjacking of the consent button), caching and referrers.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Iterable, Mapping
from importlib import resources
from string import Template
from typing import Final

from starlette.responses import HTMLResponse

from authsvc_gateway.errors import OAuthError, http_status

INVALID_CREDENTIALS: Final = "Invalid credentials."
TOO_MANY_ATTEMPTS: Final = "Too many failed attempts. Try again later."

_STYLE: Final = (
    "body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0}"
    "main{max-width:24rem;margin:4rem auto;padding:2rem;background:#fff;border-radius:8px;"
    "box-shadow:0 1px 4px rgba(0,0,0,.15)}"
    "h1{font-size:1.4rem;margin-top:0}label{display:block;margin-top:1rem}"
    "input{width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem}"
    "button{margin-top:1.5rem;margin-right:.5rem;padding:.5rem 1.2rem;font-size:1rem}"
    ".secondary{background:#eee}.message{color:#a40000;font-weight:600}.code{color:#555}"
)
_STYLE_HASH: Final = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
HTML_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Html(str):
    """Markup that is already escaped and goes into a template as it is."""

    __slots__ = ()


def _load(name: str) -> Template:
    return Template((resources.files("authsvc_gateway") / "templates" / name).read_text("utf-8"))


_LAYOUT: Final = _load("layout.html")
_LOGIN: Final = _load("login.html")
_CONSENT: Final = _load("consent.html")
_ERROR: Final = _load("error.html")


def render(template: Template, **values: str) -> Html:
    """Fill `template`, escaping every value that is not `Html`."""
    return Html(
        template.substitute(
            {
                name: value if isinstance(value, Html) else html.escape(value, quote=True)
                for name, value in values.items()
            }
        )
    )


def hidden_fields(fields: Mapping[str, str]) -> Html:
    """`<input type=hidden>` elements for `fields`, escaped."""
    return Html(
        "\n".join(
            f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
            for name, value in fields.items()
        )
    )


def page(title: str, content: Html, *, status: int = 200) -> HTMLResponse:
    """A complete page with the security headers every page carries."""
    body = render(_LAYOUT, title=title, style=Html(_STYLE), content=content)
    return HTMLResponse(body, status_code=status, headers=dict(HTML_HEADERS))


def login_page(
    *,
    action: str,
    client_name: str,
    fields: Mapping[str, str],
    username: str = "",
    message: str = "",
    status: int = 200,
) -> HTMLResponse:
    """The sign-in form, posting to `action`; `fields` carries the authorization request and the
    CSRF token."""
    content = render(
        _LOGIN,
        client_name=client_name,
        message=_message(message),
        action=action,
        hidden=hidden_fields(fields),
        username=username,
    )
    return page("Sign in", content, status=status)


def consent_page(
    *, action: str, client_name: str, scopes: Iterable[str], fields: Mapping[str, str]
) -> HTMLResponse:
    """The consent form, posting to `action`: which client asks for which scopes, Allow or
    Deny."""
    items = Html(
        "\n".join(f"<li><code>{html.escape(scope)}</code></li>" for scope in scopes)
        or "<li>its default permissions</li>"
    )
    content = render(
        _CONSENT,
        client_name=client_name,
        scopes=items,
        action=action,
        hidden=hidden_fields(fields),
    )
    return page("Allow access?", content)


def error_page(error: OAuthError, *, status: int | None = None) -> HTMLResponse:
    """An error shown to the user instead of redirecting (RFC 6749 §4.1.2.1)."""
    content = render(
        _ERROR,
        heading="The request cannot continue",
        description=error.description or "The authorization request is invalid.",
        error=error.error,
    )
    return page("Error", content, status=status or _page_status(error))


def _page_status(error: OAuthError) -> int:
    """The error's status (`http_status`), but never 401, which must carry a WWW-Authenticate
    challenge (RFC 9110 §15.5.2): a page has none to give, since the user holds no credential
    of the client's, and a Basic one would open the browser's password dialog. So an unknown or
    disabled client is 400 here, as Keycloak's and node-oidc-provider's pages answer it."""
    status = http_status(error, challenged=False)
    return 400 if status == 401 else status


def _message(text: str) -> Html:
    if not text:
        return Html("")
    return Html(f'<p class="message" role="alert">{html.escape(text)}</p>')
