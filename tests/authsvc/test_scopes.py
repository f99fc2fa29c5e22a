"""scopes.grant, scopes.narrow and scopes.narrow_audience: what a grant gets, and every way a
request is refused."""

from __future__ import annotations

import pytest

from authsvc.errors import InvalidRequest, InvalidScope, InvalidTarget
from authsvc.scopes import grant, narrow, narrow_audience

ALLOWED = ("read", "write", "admin:users")


@pytest.mark.parametrize(
    ("requested", "granted"),
    [
        pytest.param([], ALLOWED, id="empty-request-gets-every-allowed"),
        pytest.param([""], ALLOWED, id="blank-request-gets-every-allowed"),
        pytest.param(["read"], ("read",), id="one-allowed"),
        pytest.param(["write", "read"], ("write", "read"), id="keeps-request-order"),
        pytest.param(["read write"], ("read", "write"), id="space-separated-in-one-value"),
        pytest.param(["read", "read write", "read"], ("read", "write"), id="duplicates-dropped"),
        pytest.param(["admin:users"], ("admin:users",), id="colon-is-a-scope-char"),
    ],
)
def test_grant(requested: list[str], granted: tuple[str, ...]) -> None:
    assert grant(requested, ALLOWED) == granted


@pytest.mark.parametrize(
    ("requested", "error", "message"),
    [
        pytest.param(
            ["delete"], InvalidScope, "scope not allowed for this client: delete", id="unknown"
        ),
        pytest.param(
            ["read", "delete", "admin"], InvalidScope, "admin delete", id="names-all-refused"
        ),
        pytest.param(["READ"], InvalidScope, "READ", id="case-sensitive"),
        pytest.param(['re"ad'], InvalidRequest, "malformed scope", id="double-quote"),
        pytest.param(["re\\ad"], InvalidRequest, "malformed scope", id="backslash"),
        pytest.param(["réad"], InvalidRequest, "malformed scope", id="non-ascii"),
        pytest.param(["read\x00"], InvalidRequest, "malformed scope", id="nul"),
        pytest.param(["x" * 129], InvalidRequest, "malformed scope", id="token-over-128-chars"),
        pytest.param(
            [f"s{i}" for i in range(65)], InvalidRequest, "too many scope", id="65-values"
        ),
    ],
)
def test_grant_refuses(requested: list[str], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        grant(requested, ALLOWED)


def test_grant_names_what_it_refuses() -> None:
    with pytest.raises(InvalidScope, match=r"^audience not allowed for this client: evil-api$"):
        grant(["evil-api"], ["api"], what="audience")


def test_grant_with_nothing_allowed_refuses_any_request() -> None:
    assert grant([], []) == ()
    with pytest.raises(InvalidScope):
        grant(["read"], [])


def test_sixty_four_values_are_allowed() -> None:
    many = [f"s{i}" for i in range(64)]
    assert grant(many, many) == tuple(many)


@pytest.mark.parametrize(
    ("requested", "current", "result"),
    [
        pytest.param([], ("read", "write"), ("read", "write"), id="no-request-keeps-scope"),
        pytest.param(["read"], ("read", "write"), ("read",), id="narrower"),
        pytest.param(["write", "read"], ("read", "write"), ("write", "read"), id="same-set"),
    ],
)
def test_narrow(requested: list[str], current: tuple[str, ...], result: tuple[str, ...]) -> None:
    assert narrow(requested, current) == result


def test_narrow_never_widens() -> None:
    with pytest.raises(InvalidScope, match="admin"):
        narrow(["read", "admin"], ("read", "write"))


@pytest.mark.parametrize(
    ("requested", "authorized", "result"),
    [
        pytest.param([], ("api", "other-api"), ("api", "other-api"), id="none-named-all"),
        pytest.param(["other-api"], ("api", "other-api"), ("other-api",), id="narrower"),
        pytest.param(["api api"], ("api",), ("api",), id="duplicates"),
    ],
)
def test_narrow_audience(
    requested: list[str], authorized: tuple[str, ...], result: tuple[str, ...]
) -> None:
    assert narrow_audience(requested, authorized) == result


def test_narrow_audience_never_widens() -> None:
    # RFC 8707 §2.2: invalid_target, not invalid_scope.
    with pytest.raises(InvalidTarget, match="payments-api"):
        narrow_audience(["api", "payments-api"], ("api",))
