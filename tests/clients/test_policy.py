"""decide(): one test per way it says no, and the ways it says yes."""

from __future__ import annotations

import pytest
from authsvc_client import InsufficientScope, InvalidToken, TemporarilyUnavailable, WhenStale
from authsvc_client._policy import Allow, CallFacts, Deny, bearer_token, decide

from .conftest import Signer


@pytest.fixture
def verified(signer: Signer):  # type: ignore[no-untyped-def]
    from authsvc_client import verify_access_token

    from .conftest import AUDIENCE, ISSUER, NOW

    return verify_access_token(
        signer.mint(scope="notes:read"),
        keys=signer.published(),
        issuer=ISSUER,
        audience=AUDIENCE,
        now=NOW,
    )


def rule(facts: CallFacts, when_stale: WhenStale = WhenStale.REJECT):  # type: ignore[no-untyped-def]
    return decide(facts, staleness_bound=60, when_stale=when_stale)


def test_a_public_method_passes_without_anything() -> None:
    assert rule(CallFacts(public=True, stream_silent_for=10_000)) == Allow(claims=None)


def test_a_verified_token_with_the_scopes_passes(verified) -> None:  # type: ignore[no-untyped-def]
    verdict = rule(CallFacts(False, verified, required_scopes=frozenset({"notes:read"})))
    assert verdict == Allow(claims=verified.claims)


def test_no_token_is_refused_and_says_none_was_presented() -> None:
    verdict = rule(CallFacts(False, None))
    assert isinstance(verdict, Deny)
    assert isinstance(verdict.error, InvalidToken)
    assert not verdict.token_presented


def test_a_token_that_failed_verification_is_refused_with_that_failure() -> None:
    failure = InvalidToken("token expired")
    verdict = rule(CallFacts(False, failure))
    assert isinstance(verdict, Deny)
    assert verdict.error is failure


def test_a_revoked_token_is_refused(verified) -> None:  # type: ignore[no-untyped-def]
    verdict = rule(CallFacts(False, verified, revocation="session revoked"))
    assert isinstance(verdict, Deny)
    assert isinstance(verdict.error, InvalidToken)
    assert verdict.error.description == "session revoked"


def test_a_missing_scope_is_refused_naming_the_scopes(verified) -> None:  # type: ignore[no-untyped-def]
    required = frozenset({"notes:read", "notes:write"})
    verdict = rule(CallFacts(False, verified, required_scopes=required))
    assert isinstance(verdict, Deny)
    assert isinstance(verdict.error, InsufficientScope)
    assert verdict.required_scopes == required


def test_a_stale_stream_refuses_by_default(verified) -> None:  # type: ignore[no-untyped-def]
    verdict = rule(CallFacts(False, verified, stream_silent_for=61))
    assert isinstance(verdict, Deny)
    assert isinstance(verdict.error, TemporarilyUnavailable)


def test_a_stale_stream_passes_when_configured_to_accept(verified) -> None:  # type: ignore[no-untyped-def]
    facts = CallFacts(False, verified, stream_silent_for=61)
    assert isinstance(rule(facts, WhenStale.ACCEPT), Allow)


def test_a_stale_stream_under_accept_still_applies_known_revocations(verified) -> None:  # type: ignore[no-untyped-def]
    facts = CallFacts(False, verified, revocation="token revoked", stream_silent_for=61)
    assert isinstance(rule(facts, WhenStale.ACCEPT), Deny)


def test_a_stream_silent_for_exactly_the_bound_is_not_stale(verified) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(rule(CallFacts(False, verified, stream_silent_for=60)), Allow)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param((), None, id="absent"),
        pytest.param((("x-other", "1"),), None, id="other-headers-only"),
        pytest.param((("authorization", "Bearer abc.def.ghi"),), "abc.def.ghi", id="bearer"),
        pytest.param((("authorization", "bearer abc"),), "abc", id="scheme-case-insensitive"),
    ],
)
def test_bearer_token_reads_the_authorization_header(metadata, expected) -> None:  # type: ignore[no-untyped-def]
    assert bearer_token(metadata) == expected


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param((("authorization", "Basic dXNlcjpwYXNz"),), id="basic"),
        pytest.param((("authorization", "Bearer"),), id="no-token"),
        pytest.param((("authorization", "Bearer a b"),), id="two-tokens"),
        pytest.param((("authorization", "Bearer a"), ("authorization", "Bearer b")), id="twice"),
        pytest.param((("authorization", b"Bearer a"),), id="binary"),
    ],
)
def test_bearer_token_refuses_a_malformed_header(metadata) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidToken):
        bearer_token(metadata)
