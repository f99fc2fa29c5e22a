"""The verifier's local state: key cache, verification cache, revocation set, backoff."""

from __future__ import annotations

import random

import pytest
from authsvc_client import KeyCache, RevocationSet, VerificationCache, verify_access_token
from authsvc_client._jwks import MAX_PURGED_KIDS
from authsvc_client._revocations import Backoff
from authsvc_client.v1 import authsvc_pb2 as pb

from .conftest import AUDIENCE, ISSUER, NOW, ManualClock, Signer, timestamp


def verified(signer: Signer, **claims):  # type: ignore[no-untyped-def]
    return verify_access_token(
        signer.mint(**claims), keys=signer.published(), issuer=ISSUER, audience=AUDIENCE, now=NOW
    )


# KeyCache


def test_an_unknown_kid_may_trigger_one_fetch_per_minimum_interval(clock: ManualClock) -> None:
    keys = KeyCache(clock, min_refresh_interval=10)
    assert keys.claim_refresh()
    assert not keys.claim_refresh()
    clock.advance(9.9)
    assert not keys.claim_refresh()
    clock.advance(0.1)
    assert keys.claim_refresh()


def test_a_scheduled_fetch_also_counts_against_the_interval(clock: ManualClock) -> None:
    keys = KeyCache(clock, min_refresh_interval=10)
    keys.note_attempt()
    assert not keys.claim_refresh()


def test_keys_are_due_for_refresh_after_the_servers_max_age(
    clock: ManualClock, signer: Signer
) -> None:
    keys = KeyCache(clock)
    assert keys.refresh_due()
    assert not keys.loaded
    keys.install(signer.published(), max_age=300)
    assert keys.loaded
    assert not keys.refresh_due()
    assert keys.seconds_until_refresh() == 300
    clock.advance(300)
    assert keys.refresh_due()


def test_forgetting_a_key_leaves_the_others(clock: ManualClock) -> None:
    one, two = Signer(), Signer()
    keys = KeyCache(clock)
    keys.install({**one.published(), **two.published()})
    keys.forget(one.kid)
    assert list(keys.keys) == [two.kid]


def test_a_purged_key_stays_out_of_a_key_set_fetched_before_its_purge(clock: ManualClock) -> None:
    # The fetch was answered before the purge and installed after it: the key must not return.
    one, two = Signer(), Signer()
    keys = KeyCache(clock)
    keys.install({**one.published(), **two.published()})
    fetched_before_the_purge = {**one.published(), **two.published()}
    keys.forget(one.kid)
    keys.install(fetched_before_the_purge)
    assert list(keys.keys) == [two.kid]


def test_purged_kids_are_remembered_within_a_bound(clock: ManualClock) -> None:
    keys = KeyCache(clock)
    for i in range(MAX_PURGED_KIDS + 10):
        keys.forget(f"kid-{i}")
    assert len(keys._purged) == MAX_PURGED_KIDS
    assert "kid-0" not in keys._purged
    assert f"kid-{MAX_PURGED_KIDS + 9}" in keys._purged


# VerificationCache


def test_the_cache_returns_a_hit_until_the_token_expires(signer: Signer) -> None:
    cache = VerificationCache()
    token = signer.mint(exp=NOW + 100)
    entry = verify_access_token(
        token, keys=signer.published(), issuer=ISSUER, audience=AUDIENCE, now=NOW
    )
    cache.put(token, entry)
    assert cache.get(token, NOW + 99) is entry
    assert cache.get(token, NOW + 100) is None
    assert len(cache) == 0


def test_the_cache_holds_digests_not_tokens(signer: Signer) -> None:
    cache = VerificationCache()
    token = signer.mint()
    cache.put(token, verified(signer))
    assert all(isinstance(key, bytes) and len(key) == 32 for key in cache._entries)
    assert token.encode() not in cache._entries


def test_the_cache_is_bounded_and_evicts_the_least_recently_used(signer: Signer) -> None:
    cache = VerificationCache(max_entries=2)
    tokens = [signer.mint() for _ in range(3)]
    cache.put(tokens[0], verified(signer))
    cache.put(tokens[1], verified(signer))
    assert cache.get(tokens[0], NOW)  # touch: tokens[1] is now the oldest
    cache.put(tokens[2], verified(signer))
    assert len(cache) == 2
    assert cache.get(tokens[1], NOW) is None
    assert cache.get(tokens[0], NOW) is not None


def test_discarding_a_key_drops_what_it_signed() -> None:
    one, two = Signer(), Signer()
    cache = VerificationCache()
    a, b = one.mint(), two.mint()
    cache.put(a, verified(one))
    cache.put(b, verified(two))
    cache.discard_key(one.kid)
    assert cache.get(a, NOW) is None
    assert cache.get(b, NOW) is not None


def test_a_zero_sized_cache_caches_nothing(signer: Signer) -> None:
    cache = VerificationCache(max_entries=0)
    cache.put(signer.mint(), verified(signer))
    assert len(cache) == 0


# RevocationSet


def event(cursor: int, expires: float = NOW + 600, **kind):  # type: ignore[no-untyped-def]
    return pb.RevocationEvent(cursor=cursor, expires_at=timestamp(expires), **kind)


def test_each_kind_of_revocation_covers_its_tokens_only(clock: ManualClock, signer: Signer) -> None:
    revocations = RevocationSet(clock)
    revocations.apply(event(1, family_revoked="family-1"))
    revocations.apply(event(2, jti_revoked="jti-9"))
    revocations.apply(event(3, subject_revoked=pb.SubjectRevoked(subject="bob", not_before=NOW)))
    revocations.apply(event(4, client_revoked=pb.ClientRevoked(client_id="cli", not_before=NOW)))
    assert revocations.cursor == 4
    check = revocations.revocation_of
    assert check(verified(signer).claims) == "session revoked"
    assert check(verified(signer, sid="f2", jti="jti-9").claims) == "token revoked"
    assert check(verified(signer, sid="f2", sub="bob").claims) == "subject revoked"
    assert check(verified(signer, sid="f2", sub="bob", iat=NOW + 1).claims) is None
    assert check(verified(signer, sid="f2", client_id="cli").claims) == "client revoked"
    assert check(verified(signer, sid="f2", client_id="cli", iat=NOW + 1).claims) is None
    assert check(verified(signer, sid="f2").claims) is None


def test_replayed_events_are_ignored_but_count_as_life(clock: ManualClock, signer: Signer) -> None:
    revocations = RevocationSet(clock)
    revocations.apply(pb.RevocationEvent(cursor=0, heartbeat=pb.Heartbeat()))
    revocations.apply(event(5, jti_revoked="a"))
    clock.advance(30)
    revocations.apply(event(5, jti_revoked="b"))  # same cursor: already applied
    assert revocations.silent_for() == 0
    assert revocations.revocation_of(verified(signer, jti="b").claims) is None


def test_a_replay_applies_but_is_not_life_until_its_heartbeat(
    clock: ManualClock, signer: Signer
) -> None:
    # authsvc replays the events after the cursor, then says it has caught up with a heartbeat:
    # before that, revocations it holds may not have arrived yet.
    revocations = RevocationSet(clock)
    revocations.stream_opened()
    revocations.apply(event(1, jti_revoked="a"))
    assert revocations.revocation_of(verified(signer, jti="a").claims) == "token revoked"
    assert (revocations.caught_up, revocations.silent_for()) == (False, float("inf"))
    revocations.apply(pb.RevocationEvent(cursor=1, heartbeat=pb.Heartbeat()))
    assert (revocations.caught_up, revocations.silent_for()) == (True, 0)
    clock.advance(10)
    revocations.apply(event(2, jti_revoked="b"))  # live, after the heartbeat: life
    assert revocations.silent_for() == 0


def test_a_reconnection_is_not_life_until_its_replay_ends(clock: ManualClock) -> None:
    revocations = RevocationSet(clock)
    revocations.stream_opened()
    revocations.apply(pb.RevocationEvent(cursor=0, heartbeat=pb.Heartbeat()))
    clock.advance(100)  # the stream went down for this long
    revocations.stream_opened()
    revocations.apply(event(1, jti_revoked="a"))
    assert (revocations.caught_up, revocations.silent_for()) == (False, 100)
    revocations.apply(pb.RevocationEvent(cursor=1, heartbeat=pb.Heartbeat()))
    assert (revocations.caught_up, revocations.silent_for()) == (True, 0)


def test_a_later_subject_revocation_moves_not_before_forward(
    clock: ManualClock, signer: Signer
) -> None:
    revocations = RevocationSet(clock)
    revocations.apply(
        event(1, subject_revoked=pb.SubjectRevoked(subject="alice", not_before=NOW - 50))
    )
    later = verified(signer, sid="", iat=NOW - 20, nbf=None).claims
    assert revocations.revocation_of(later) is None
    revocations.apply(event(2, subject_revoked=pb.SubjectRevoked(subject="alice", not_before=NOW)))
    assert revocations.revocation_of(later) == "subject revoked"


def test_entries_are_dropped_once_their_tokens_have_expired_plus_leeway(
    clock: ManualClock,
) -> None:
    revocations = RevocationSet(clock, leeway=30)
    revocations.apply(event(1, expires=NOW + 100, family_revoked="f"))
    revocations.apply(event(2, expires=NOW + 100, jti_revoked="j"))
    revocations.apply(
        event(3, expires=NOW + 100, subject_revoked=pb.SubjectRevoked(subject="s", not_before=NOW))
    )
    revocations.apply(
        event(4, expires=NOW + 200, client_revoked=pb.ClientRevoked(client_id="c", not_before=NOW))
    )
    clock.advance(129)
    revocations.prune()
    assert len(revocations) == 4
    clock.advance(1)
    revocations.prune()
    assert len(revocations) == 1
    clock.advance(100)
    revocations.prune()
    assert len(revocations) == 0


def test_a_set_never_heard_from_is_stale_from_the_start(clock: ManualClock) -> None:
    # Otherwise a verifier whose stream never connected (bad credentials, authsvc's database
    # down while this service starts) would hold no revocations and still count as fresh for a
    # whole staleness bound.
    assert RevocationSet(clock).silent_for() == float("inf")


def test_heartbeats_reset_the_silence_without_moving_the_cursor(clock: ManualClock) -> None:
    revocations = RevocationSet(clock)
    revocations.mark_alive()
    clock.advance(45)
    assert revocations.silent_for() == 45
    revocations.apply(pb.RevocationEvent(cursor=7, heartbeat=pb.Heartbeat()))
    assert revocations.silent_for() == 0
    assert revocations.cursor == 0


def test_the_stream_id_comes_with_events_and_heartbeats(clock: ManualClock) -> None:
    revocations = RevocationSet(clock)
    revocations.apply(pb.RevocationEvent(cursor=0, heartbeat=pb.Heartbeat(), stream_id="s-1"))
    assert (revocations.cursor, revocations.stream_id) == (0, "s-1")
    revocations.apply(event(3, jti_revoked="a", stream_id="s-1"))
    assert (revocations.cursor, revocations.stream_id) == (3, "s-1")


def test_a_server_older_than_stream_ids_leaves_the_stream_unnamed(clock: ManualClock) -> None:
    revocations = RevocationSet(clock)
    revocations.apply(event(3, jti_revoked="a"))
    revocations.apply(pb.RevocationEvent(cursor=3, heartbeat=pb.Heartbeat()))
    assert (revocations.cursor, revocations.stream_id) == (3, "")


def test_starting_over_forgets_the_cursor_but_no_revocation(
    clock: ManualClock, signer: Signer
) -> None:
    revocations = RevocationSet(clock)
    revocations.apply(event(8, family_revoked="family-1", stream_id="old"))
    revocations.apply(event(9, jti_revoked="jti-1", stream_id="old"))
    assert revocations.start_over() == 2
    assert (revocations.cursor, revocations.stream_id) == (0, "")
    assert revocations.revocation_of(verified(signer).claims) == "session revoked"
    revocations.apply(event(1, family_revoked="family-2", stream_id="new"))  # a low cursor counts
    assert (revocations.cursor, revocations.stream_id) == (1, "new")
    assert revocations.revocation_of(verified(signer, sid="family-2").claims) == "session revoked"
    assert revocations.revocation_of(verified(signer, sid="f", jti="jti-1").claims) == (
        "token revoked"
    )


# Backoff


def test_backoff_grows_to_its_ceiling_with_full_jitter_and_resets() -> None:
    backoff = Backoff(initial=0.1, maximum=1.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_equal_jitter_never_draws_below_half_the_ceiling() -> None:
    backoff = Backoff(initial=10.0, maximum=60.0, jitter=0.5, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(6)]
    ceilings = [10.0, 20.0, 40.0, 60.0, 60.0, 60.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))


@pytest.mark.parametrize(
    "jitter", [pytest.param(-0.1, id="negative"), pytest.param(1.1, id="over-1")]
)
def test_a_jitter_outside_zero_to_one_is_refused(jitter: float) -> None:
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=jitter)


@pytest.mark.parametrize("size", [-1])
def test_a_negative_cache_size_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="negative"):
        VerificationCache(size)
