"""Which scopes and audiences a grant gets: the requested ones, each allowed, or the defaults.

RFC 6749 §3.3: the server may fully or partially ignore the requested scope, but refusing with
invalid_scope is clearer for a service fleet than a silent narrowing, so we refuse.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from authsvc.errors import InvalidRequest, InvalidScope, InvalidTarget

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]{1,128}")
_MAX_ITEMS = 64


def grant(
    requested: Iterable[str], allowed: Iterable[str], *, what: str = "scope"
) -> tuple[str, ...]:
    """The granted values: `requested` if every one is allowed, else InvalidScope.

    An empty request grants everything allowed (the client's registered default).
    """
    chosen, refused = _chosen(requested, allowed, what)
    if refused:
        raise InvalidScope(f"{what} not allowed for this client: {' '.join(sorted(refused))}")
    return chosen


def grant_audience(requested: Iterable[str], allowed: Iterable[str]) -> tuple[str, ...]:
    """The granted audiences, as `grant` decides, and never none: RFC 9068 §2.2 requires `aud`,
    and every verifier, authsvc's own included, refuses a token without one."""
    granted = grant(requested, allowed, what="audience")
    if not granted:
        raise InvalidScope(
            "this client has no audience to issue tokens for: register a new client with one"
        )
    return granted


def narrow_audience(requested: Iterable[str], authorized: Iterable[str]) -> tuple[str, ...]:
    """RFC 8707 §2.2: the audiences a token request names (`resource`), each one its grant was
    authorized for, else InvalidTarget; none named is all of them."""
    chosen, refused = _chosen(requested, authorized, "audience")
    if refused:
        raise InvalidTarget(f"resource not authorized by this grant: {' '.join(sorted(refused))}")
    return chosen


def _chosen(
    requested: Iterable[str], allowed: Iterable[str], what: str
) -> tuple[tuple[str, ...], list[str]]:
    """What `requested` chooses (everything allowed when it names nothing), and those of its
    values that are not allowed."""
    wanted = _dedupe(requested, what)
    permitted = tuple(allowed)
    if not wanted:
        return permitted, []
    return wanted, [value for value in wanted if value not in permitted]


def narrow(requested: Iterable[str], current: Iterable[str]) -> tuple[str, ...]:
    """RFC 6749 §6: a refresh may ask for less scope, never more."""
    return grant(requested, current, what="scope")


def _dedupe(values: Iterable[str], what: str) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for value in values:
        for item in value.split():
            if not _SCOPE_TOKEN.fullmatch(item):
                raise InvalidRequest(f"malformed {what} value")
            seen[item] = None
    if len(seen) > _MAX_ITEMS:
        raise InvalidRequest(f"too many {what} values")
    return tuple(seen)
