"""Whether a redirect URI sent with an authorization request is one registered for the client.

The one rule authsvc and its HTTP gateway both apply (OAuth 2.1 §2.3.1, RFC 9700 §4.1.3): the URI
must equal a registered one character for character, with one exception (RFC 8252 §7.3): for a
loopback IP literal over http (`http://127.0.0.1…`, `http://[::1]…`), the port may differ, because
a native app listens on whatever port the system gave it for this one request. `localhost` gets no
exception (RFC 8252 §8.3), and nothing else about the URI may differ: scheme, host, path and query
are compared exactly, and a URI with user information or a fragment never matches.

A request may leave the redirect URI out only where the client registered exactly one (OAuth 2.1
§4.1.1), and that one is not a loopback IP literal: a native app names the port it listens on in
each request, and a response to the registered port would go to whatever listens there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["implied_redirect_uri", "redirect_uri_allowed", "redirect_uri_registered"]

# http, a loopback IP literal, an optional port of digits, then the path and query (no fragment).
_LOOPBACK = re.compile(
    r"http://(127\.0\.0\.1|\[::1\])(?::(?P<port>[0-9]{1,5}))?(?P<rest>[/?][^#]*)?"
)


def _without_loopback_port(uri: str) -> str | None:
    """`uri` with its port taken out, if it is a loopback redirect URI; None if it is not."""
    match = _LOOPBACK.fullmatch(uri)
    if match is None or not 0 < int(match.group("port") or 80) <= 65535:
        return None
    return f"http://{match.group(1)}{match.group('rest') or ''}"


def implied_redirect_uri(registered: Iterable[str]) -> str | None:
    """Where a request that names no redirect URI is answered, by the rule above; None where
    it must name one."""
    registered = tuple(registered)
    if len(registered) != 1 or _without_loopback_port(registered[0]) is not None:
        return None
    return registered[0]


def redirect_uri_allowed(registered: Iterable[str], uri: str, *, sent: bool) -> bool:
    """Whether a response may go to `uri`: one of the `registered` URIs where the request named
    it (`sent`), the one a request may imply where it named none."""
    if sent:
        return redirect_uri_registered(registered, uri)
    return implied_redirect_uri(registered) == uri


def redirect_uri_registered(registered: Iterable[str], sent: str) -> bool:
    """Whether `sent` is one of the `registered` redirect URIs, by the rule above."""
    registered = tuple(registered)
    if sent in registered:
        return True
    portless = _without_loopback_port(sent)
    return portless is not None and any(
        _without_loopback_port(uri) == portless for uri in registered
    )
