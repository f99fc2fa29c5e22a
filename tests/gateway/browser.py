"""What a browser does with the sign-in and consent pages: read the form, fill it in, post it."""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin

import httpx


@dataclass
class HtmlForm:
    """The first form of a page: where it posts and its hidden fields."""

    action: str
    fields: dict[str, str]
    buttons: dict[str, str]


class _FormReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.form: HtmlForm | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "form" and self.form is None:
            self.form = HtmlForm(found.get("action", ""), {}, {})
        elif tag == "input" and self.form is not None and found.get("type") == "hidden":
            self.form.fields[found["name"]] = found.get("value", "")
        elif tag == "button" and self.form is not None and "name" in found:
            self.form.buttons[found["value"]] = found["name"]


def read_form(page: httpx.Response) -> HtmlForm:
    """The form on `page`; fails the test when there is none."""
    reader = _FormReader()
    reader.feed(page.text)
    assert reader.form is not None, f"no form on the page: {page.status_code} {page.text[:300]}"
    reader.form.action = urljoin(str(page.url), reader.form.action)
    return reader.form


async def sign_in(
    http: httpx.AsyncClient, authorize_url: str, username: str, password: str
) -> httpx.Response:
    """Open the authorization URL, then submit the sign-in form; the gateway's answer."""
    page = await http.get(authorize_url)
    assert page.status_code == 200, page.text
    form = read_form(page)
    return await http.post(
        form.action, data={**form.fields, "username": username, "password": password}
    )


async def decide(http: httpx.AsyncClient, consent: httpx.Response, decision: str) -> httpx.Response:
    """Press Allow or Deny on the consent page."""
    form = read_form(consent)
    assert decision in form.buttons, form.buttons
    return await http.post(form.action, data={**form.fields, form.buttons[decision]: decision})
