"""The in-memory revocation state: what each event revokes, idempotence, and pruning."""

from __future__ import annotations

from dataclasses import replace

import pytest

from authsvc.revocation_state import RevocationState
from authsvc.storage.records import RevocationEventRecord
from authsvc.tokens.access import AccessClaims

T = 1_800_000_000.0
CLAIMS = AccessClaims(
    iss="https://auth.example.com",
    sub="alice",
    aud=("api",),
    exp=int(T) + 600,
    iat=int(T),
    jti="jti-1",
    client_id="app",
    scope=("read",),
    sid="family-1",
)


def event(
    kind: str, value: str, *, cursor: int = 1, at: float = T, **extra: float
) -> RevocationEventRecord:
    return RevocationEventRecord(
        cursor=cursor,
        occurred_at=at,
        expires_at=extra.get("expires_at", at + 630),
        kind=kind,
        value=value,
        not_before=extra.get("not_before"),
    )


@pytest.mark.parametrize(
    ("revocation", "claims", "reason"),
    [
        pytest.param(event("family", "family-1"), CLAIMS, "family revoked", id="family"),
        pytest.param(event("family", "family-2"), CLAIMS, None, id="other-family"),
        pytest.param(event("family", ""), replace(CLAIMS, sid=""), None, id="no-sid-no-family"),
        pytest.param(event("jti", "jti-1"), CLAIMS, "token revoked", id="jti"),
        pytest.param(event("jti", "jti-2"), CLAIMS, None, id="other-jti"),
        pytest.param(
            event("subject", "alice", not_before=T), CLAIMS, "subject revoked", id="subject"
        ),
        pytest.param(
            event("subject", "alice", not_before=T),
            replace(CLAIMS, iat=int(T) + 1),
            None,
            id="subject-token-issued-after",
        ),
        pytest.param(event("subject", "bob", not_before=T), CLAIMS, None, id="other-subject"),
        pytest.param(event("client", "app", not_before=T), CLAIMS, "client revoked", id="client"),
        pytest.param(
            event("client", "app", not_before=T),
            replace(CLAIMS, iat=int(T) + 1),
            None,
            id="client-token-issued-after",
        ),
        pytest.param(event("key", "kid-1"), CLAIMS, None, id="key-event-revokes-nothing"),
    ],
)
def test_what_an_event_revokes(
    revocation: RevocationEventRecord, claims: AccessClaims, reason: str | None
) -> None:
    state = RevocationState()
    state.apply(revocation)
    assert state.revoked(claims) == reason


def test_subject_not_before_falls_back_to_occurred_at() -> None:
    state = RevocationState()
    state.apply(event("subject", "alice", at=T + 5))
    assert state.revoked(replace(CLAIMS, iat=int(T) + 5)) == "subject revoked"
    assert state.revoked(replace(CLAIMS, iat=int(T) + 6)) is None


def test_an_older_subject_revocation_does_not_move_not_before_back() -> None:
    state = RevocationState()
    state.apply(event("subject", "alice", cursor=2, not_before=T + 100))
    state.apply(event("subject", "alice", cursor=1, not_before=T))
    assert state.revoked(replace(CLAIMS, iat=int(T) + 50)) == "subject revoked"


def test_applying_an_event_twice_changes_nothing() -> None:
    state = RevocationState()
    revocation = event("family", "family-1", cursor=7)
    state.apply(revocation)
    state.apply(revocation)
    assert len(state) == 1
    assert state.cursor == 7


def test_cursor_never_goes_back() -> None:
    state = RevocationState()
    state.apply(event("jti", "a", cursor=9))
    state.apply(event("jti", "b", cursor=3))
    assert state.cursor == 9


def test_prune_forgets_entries_whose_tokens_have_expired() -> None:
    state = RevocationState()
    for kind, value in (
        ("family", "family-1"),
        ("jti", "jti-1"),
        ("subject", "alice"),
        ("client", "app"),
    ):
        state.apply(event(kind, value, expires_at=T + 630, not_before=T))
    state.apply(event("jti", "long", expires_at=T + 5000))
    assert state.prune(T + 629) == 0
    assert len(state) == 5
    assert state.prune(T + 630) == 4
    assert len(state) == 1
    assert state.revoked(CLAIMS) is None
    assert state.revoked(replace(CLAIMS, jti="long")) == "token revoked"


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param([], None, id="nothing-revoked"),
        pytest.param([event("subject", "ann", not_before=T + 0.25)], int(T) + 1, id="subject"),
        pytest.param([event("client", "svc", not_before=T + 0.75)], int(T) + 1, id="client"),
        pytest.param(
            [
                event("subject", "ann", not_before=T + 0.25),
                event("client", "svc", cursor=2, not_before=T + 5.5),
            ],
            int(T) + 6,
            id="the-later-of-both",
        ),
        pytest.param([event("subject", "bob", not_before=T)], None, id="another-subject"),
        pytest.param([event("family", "f1")], None, id="a-family-is-no-watermark"),
    ],
)
def test_issued_after_is_the_first_second_no_revocation_covers(
    events: list[RevocationEventRecord], expected: int | None
) -> None:
    state = RevocationState()
    for revocation in events:
        state.apply(revocation)

    issued_after = state.issued_after("ann", "svc")

    assert issued_after == expected
    if issued_after is not None:
        fresh = AccessClaims(
            "iss", "ann", ("api",), issued_after + 600, issued_after, "j", "svc", ()
        )
        assert state.revoked(fresh) is None
        stale = replace(fresh, iat=issued_after - 1)
        assert state.revoked(stale) is not None


def test_a_revocation_in_the_second_of_an_earlier_one_covers_the_tokens_minted_between() -> None:
    state = RevocationState()
    assert state.not_before_for(T + 0.5) == T + 0.5  # no revocation held: now
    state.apply(event("client", "svc", at=T + 0.2, not_before=T + 0.2))
    between = state.issued_after("ann", "svc")  # a token minted at T + 0.4
    assert between == int(T) + 1
    later = state.not_before_for(T + 0.7)
    assert later >= between  # a second revocation of anyone at T + 0.7 covers that token
    state.apply(event("subject", "ann", cursor=2, at=T + 0.7, not_before=later))
    minted = AccessClaims("iss", "ann", ("api",), between + 600, between, "j", "other", ())
    assert state.revoked(minted) == "subject revoked"
    assert state.not_before_for(T + 5) == T + 5  # once the second has passed, now again


@pytest.mark.parametrize(
    ("revocation", "reason"),
    [
        pytest.param(event("subject", "alice", at=T + 1), "subject revoked", id="subject-after"),
        pytest.param(event("subject", "alice", at=T), "subject revoked", id="same-instant"),
        pytest.param(event("subject", "alice", at=T - 0.001), None, id="subject-before"),
        # Its "not before" may run past the sign-in; its own time says which came first.
        pytest.param(
            event("subject", "alice", at=T - 0.5, not_before=T + 1), None, id="not-before-later"
        ),
        pytest.param(event("subject", "bob", at=T + 1), None, id="other-subject"),
        pytest.param(event("client", "app", at=T + 1), "client revoked", id="client-after"),
        pytest.param(event("client", "app", at=T - 1), None, id="client-before"),
        pytest.param(event("client", "other", at=T + 1), None, id="other-client"),
        pytest.param(event("family", "family-1", at=T + 1), None, id="a-family-is-not-the-user"),
    ],
)
def test_revoked_since_names_a_revocation_made_at_or_after_a_sign_in(
    revocation: RevocationEventRecord, reason: str | None
) -> None:
    state = RevocationState()
    state.apply(revocation)
    assert state.revoked_since("alice", "app", T) == reason


def test_revoked_since_keeps_the_latest_revocation_whatever_the_order_events_arrive_in() -> None:
    # Another replica's later revocation may be read after this one's own earlier one, and with
    # a smaller "not before".
    state = RevocationState()
    state.apply(event("subject", "alice", cursor=2, at=T - 10, not_before=T + 100))
    state.apply(event("subject", "alice", cursor=1, at=T + 5, expires_at=T + 900))
    assert state.revoked_since("alice", "app", T) == "subject revoked"
    assert state.prune(T + 899) == 0
    assert state.revoked_since("alice", "app", T) == "subject revoked"
