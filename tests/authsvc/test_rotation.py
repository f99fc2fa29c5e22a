"""Refresh rotation with reuse detection: classify_refresh verdict by verdict, then Rotate over gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_client.v1 import authsvc_pb2_grpc

from authsvc.client_registry import RegisteredClient
from authsvc.errors import InvalidGrant
from authsvc.rotation import Refresh, classify_refresh
from authsvc.storage.records import FamilyRecord, RefreshTokenRecord
from authsvc.storage.sql import Tx
from authsvc.testing import RunningAuthority, start_authority
from authsvc.tokens import opaque
from tests.authsvc.calls import (
    INSUFFICIENT_SCOPE,
    INVALID_GRANT,
    INVALID_REQUEST,
    INVALID_SCOPE,
    INVALID_TOKEN,
    Metadata,
    audit_events,
    bearer,
    database_rows,
    refused,
)
from tests.authsvc.conftest import APP_SCOPES
from tests.conftest import TEST_POOL_SIZE

NOW = 1_800_000_000.0
FAMILY = FamilyRecord(
    family_id="f1",
    subject="alice",
    client_id="app",
    device_id="laptop",
    scope=("read",),
    audience=("api",),
    created_at=NOW - 100,
    last_used_at=NOW - 100,
    expires_at=NOW + 1000,
    idle_expires_at=NOW + 500,
    revoked_at=None,
    revoke_reason=None,
)
TOKEN = RefreshTokenRecord(
    family_id="f1", issued_at=NOW - 100, used_at=None, expires_at=NOW + 500, token_digest=b"d"
)
USED_5S_AGO = replace(TOKEN, used_at=NOW - 5)
# As a build before registration required an audience could start one (commit 6702ffb).
NO_AUDIENCE = replace(FAMILY, audience=())


@pytest.mark.parametrize(
    ("token", "family", "client_id", "grace", "verdict"),
    [
        pytest.param(TOKEN, FAMILY, "", 0, Refresh.ROTATE, id="fresh-rotates"),
        pytest.param(TOKEN, FAMILY, "app", 0, Refresh.ROTATE, id="fresh-right-client-rotates"),
        pytest.param(USED_5S_AGO, FAMILY, "", 0, Refresh.REUSE, id="used-is-reuse"),
        pytest.param(USED_5S_AGO, FAMILY, "", 10, Refresh.GRACE_RETRY, id="used-within-grace"),
        pytest.param(USED_5S_AGO, FAMILY, "", 5, Refresh.GRACE_RETRY, id="used-at-grace-edge"),
        pytest.param(USED_5S_AGO, FAMILY, "", 4, Refresh.REUSE, id="used-after-grace"),
        pytest.param(
            TOKEN, replace(FAMILY, revoked_at=NOW - 1), "", 0, Refresh.REVOKED, id="family-revoked"
        ),
        pytest.param(
            USED_5S_AGO,
            replace(FAMILY, revoked_at=NOW - 1),
            "",
            0,
            Refresh.REVOKED,
            id="revoked-beats-reuse",
        ),
        pytest.param(
            TOKEN, replace(FAMILY, expires_at=NOW), "", 0, Refresh.EXPIRED, id="absolute-expiry"
        ),
        pytest.param(
            TOKEN, replace(FAMILY, idle_expires_at=NOW), "", 0, Refresh.EXPIRED, id="idle-expiry"
        ),
        pytest.param(
            replace(TOKEN, expires_at=NOW), FAMILY, "", 0, Refresh.EXPIRED, id="token-expiry"
        ),
        pytest.param(
            USED_5S_AGO,
            replace(FAMILY, expires_at=NOW - 1),
            "",
            0,
            Refresh.EXPIRED,
            id="expired-beats-reuse",
        ),
        pytest.param(
            replace(USED_5S_AGO, expires_at=NOW - 1),
            FAMILY,
            "",
            0,
            Refresh.REUSE,
            id="used-token-past-its-expiry-in-a-live-family-is-reuse",
        ),
        pytest.param(
            replace(USED_5S_AGO, expires_at=NOW - 1),
            FAMILY,
            "",
            10,
            Refresh.GRACE_RETRY,
            id="used-token-past-its-expiry-within-grace",
        ),
        pytest.param(
            replace(TOKEN, expires_at=NOW),
            replace(FAMILY, revoked_at=NOW - 1),
            "",
            0,
            Refresh.REVOKED,
            id="revoked-beats-expired",
        ),
        pytest.param(TOKEN, FAMILY, "other", 0, Refresh.WRONG_CLIENT, id="wrong-client"),
        pytest.param(
            USED_5S_AGO, FAMILY, "other", 0, Refresh.WRONG_CLIENT, id="wrong-client-cannot-kill"
        ),
        pytest.param(
            TOKEN,
            replace(FAMILY, idle_expires_at=NOW - 1),
            "other",
            0,
            Refresh.WRONG_CLIENT,
            id="wrong-client-beats-expired",
        ),
        pytest.param(
            TOKEN,
            replace(FAMILY, revoked_at=NOW - 1),
            "other",
            0,
            Refresh.WRONG_CLIENT,
            id="wrong-client-beats-revoked",
        ),
        pytest.param(TOKEN, NO_AUDIENCE, "", 0, Refresh.NO_AUDIENCE, id="no-audience"),
        pytest.param(
            USED_5S_AGO, NO_AUDIENCE, "", 10, Refresh.NO_AUDIENCE, id="no-audience-within-grace"
        ),
        pytest.param(USED_5S_AGO, NO_AUDIENCE, "", 0, Refresh.REUSE, id="no-audience-reuse"),
        pytest.param(
            TOKEN,
            replace(NO_AUDIENCE, revoked_at=NOW - 1),
            "",
            0,
            Refresh.REVOKED,
            id="revoked-beats-no-audience",
        ),
        pytest.param(
            replace(TOKEN, expires_at=NOW),
            NO_AUDIENCE,
            "",
            0,
            Refresh.EXPIRED,
            id="expired-beats-no-audience",
        ),
    ],
)
def test_classify_refresh(
    token: RefreshTokenRecord, family: FamilyRecord, client_id: str, grace: int, verdict: Refresh
) -> None:
    assert (
        classify_refresh(token, family, now=NOW, client_id=client_id, grace_seconds=grace)
        is verdict
    )


# Over gRPC


async def rotate(
    tokens: authsvc_pb2_grpc.TokenServiceStub,
    metadata: Metadata,
    refresh_token: str,
    **fields: object,
) -> pb.TokenPair:
    return await tokens.Rotate(
        pb.RotateRequest(refresh_token=refresh_token, **fields), metadata=metadata
    )


async def verify(
    tokens: authsvc_pb2_grpc.TokenServiceStub, metadata: Metadata, access_token: str
) -> pb.Claims:
    response = await tokens.Verify(
        pb.VerifyRequest(token=access_token, audience="api"), metadata=metadata
    )
    return response.claims


async def test_rotate_trades_a_refresh_token_for_the_next_pair(
    running: RunningAuthority, tokens, admin, app: RegisteredClient, pair: pb.TokenPair
) -> None:
    running.clock.advance(60)
    rotated = await rotate(tokens, admin, pair.refresh_token, client_id=app.client_id)
    assert rotated.family_id == pair.family_id
    assert rotated.refresh_token != pair.refresh_token
    assert opaque.looks_like(opaque.Kind.REFRESH_TOKEN, rotated.refresh_token)
    assert rotated.access_token != pair.access_token
    assert rotated.token_type == "Bearer"
    assert rotated.expires_in == running.settings.access_token_ttl
    assert list(rotated.scope) == list(APP_SCOPES)
    assert rotated.refresh_expires_in == running.settings.refresh_absolute_ttl - 60
    claims = await verify(tokens, admin, rotated.access_token)
    assert (claims.sub, claims.sid, claims.client_id) == ("alice", pair.family_id, app.client_id)
    # The chain goes on.
    third = await rotate(tokens, admin, rotated.refresh_token)
    assert third.family_id == pair.family_id
    # The earlier access tokens are still valid: rotation is not revocation.
    await verify(tokens, admin, pair.access_token)


async def test_rotation_extends_idle_expiry_but_never_past_absolute_expiry(
    tmp_path: Path,
) -> None:
    async with start_authority(tmp_path, refresh_idle_ttl=1800, refresh_absolute_ttl=3600) as r:
        app = await r.create_client("app", grant_types=["refresh_token"], audiences=["api"])
        pair = await r.authority.issue_token_pair(subject="alice", client_id=app.client_id)
        refresh = pair.refresh_token
        for _ in range(3):  # t = 1000, 2000, 3000: each within the idle window of the last
            r.clock.advance(1000)
            rotated = await r.authority.rotate(refresh)
            refresh = rotated.refresh_token
        assert rotated.family.idle_expires_at == pair.family.expires_at
        r.clock.advance(600)  # t = 3600: the absolute expiry
        before = await database_rows(r)
        with pytest.raises(Exception, match="refresh token expired"):
            await r.authority.rotate(refresh)
        assert await database_rows(r) == before


async def test_a_replay_long_after_the_token_expired_revokes_the_family_a_thief_kept_alive(
    tmp_path: Path, database_url: str
) -> None:
    """The thief rotates the stolen token and keeps rotating; the holder comes back with it after
    its own idle expiry, a purge in between. The replay is reuse, and the thief's session dies."""
    async with start_authority(
        tmp_path,
        database_url=database_url,
        db_pool_size=TEST_POOL_SIZE,
        refresh_idle_ttl=1000,
        refresh_absolute_ttl=100_000,
    ) as r:
        app = await r.create_client("app", grant_types=["refresh_token"], audiences=["api"])
        stolen = await r.authority.issue_token_pair(subject="alice", client_id=app.client_id)
        thief = await r.authority.rotate(stolen.refresh_token)
        for _ in range(3):
            r.clock.advance(900)
            thief = await r.authority.rotate(thief.refresh_token)
        await r.authority.run_maintenance()  # the stolen token's own expiry has passed
        with pytest.raises(InvalidGrant, match="refresh token reused; the session was revoked"):
            await r.authority.rotate(stolen.refresh_token)
        with pytest.raises(InvalidGrant, match="refresh token revoked"):
            await r.authority.rotate(thief.refresh_token)
        [event] = await audit_events(r, "refresh_reuse_detected")
        assert event["family_id"] == stolen.family.family_id


async def test_replayed_refresh_token_revokes_the_whole_family(
    running: RunningAuthority, tokens, admin, pair: pb.TokenPair
) -> None:
    second = await rotate(tokens, admin, pair.refresh_token)
    newest = await rotate(tokens, admin, second.refresh_token)

    assert await refused(rotate(tokens, admin, pair.refresh_token)) == (
        *INVALID_GRANT,
        "refresh token reused; the session was revoked",
    )

    # The replayed token, the newest token and every access token of the family are dead.
    for refresh in (pair.refresh_token, second.refresh_token, newest.refresh_token):
        assert (await refused(rotate(tokens, admin, refresh)))[:2] == INVALID_GRANT
    for access in (pair.access_token, second.access_token, newest.access_token):
        assert await refused(verify(tokens, admin, access)) == (
            *INVALID_TOKEN,
            "token revoked (family revoked)",
        )
    [event] = await audit_events(running, "refresh_reuse_detected")
    assert (event["family_id"], event["subject"]) == (pair.family_id, "alice")
    sessions = await tokens.ListSessions(pb.ListSessionsRequest(subject="alice"), metadata=admin)
    assert list(sessions.sessions) == []


async def test_fifty_concurrent_rotations_of_one_token_give_exactly_one_success(
    running: RunningAuthority, tokens, admin, pair: pb.TokenPair
) -> None:
    results = await asyncio.gather(
        *(rotate(tokens, admin, pair.refresh_token) for _ in range(50)), return_exceptions=True
    )
    successes = [r for r in results if isinstance(r, pb.TokenPair)]
    failures = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(successes) == 1
    assert len(failures) == 49
    assert {(f.code(), dict(f.trailing_metadata())["oauth-error"]) for f in failures} == {
        INVALID_GRANT
    }
    # The losers are indistinguishable from a replay, so the family is revoked (module docstring).
    assert await audit_events(running, "refresh_reuse_detected")
    assert (await refused(rotate(tokens, admin, successes[0].refresh_token)))[:2] == INVALID_GRANT


async def test_rotate_may_narrow_scope(tokens, admin, pair: pb.TokenPair) -> None:
    narrowed = await rotate(tokens, admin, pair.refresh_token, scope=["read"])
    assert list(narrowed.scope) == ["read"]
    assert list((await verify(tokens, admin, narrowed.access_token)).scope) == ["read"]
    # RFC 6749 §6: the refresh token keeps the scope originally granted.
    again = await rotate(tokens, admin, narrowed.refresh_token)
    assert list(again.scope) == list(APP_SCOPES)


async def test_rotate_never_widens_scope_and_changes_nothing(
    running: RunningAuthority, tokens, admin, pair: pb.TokenPair
) -> None:
    before = await database_rows(running)
    assert (await refused(rotate(tokens, admin, pair.refresh_token, scope=["read", "admin"])))[
        :2
    ] == INVALID_SCOPE
    assert await database_rows(running) == before
    await rotate(tokens, admin, pair.refresh_token)  # still fresh


async def test_rotate_for_another_client_is_refused_without_side_effects(
    running: RunningAuthority, tokens, admin, app: RegisteredClient, pair: pb.TokenPair
) -> None:
    other = await running.create_client("other", grant_types=["refresh_token"])
    before = await database_rows(running)
    assert await refused(rotate(tokens, admin, pair.refresh_token, client_id=other.client_id)) == (
        *INVALID_GRANT,
        "refresh token unknown",
    )
    assert await database_rows(running) == before
    await rotate(tokens, admin, pair.refresh_token, client_id=app.client_id)


async def test_another_client_cannot_tell_a_live_token_from_a_revoked_or_unknown_one(
    running: RunningAuthority, tokens, admin, pair: pb.TokenPair
) -> None:
    other = await running.create_client("other", grant_types=["refresh_token"])

    async def answer(refresh_token: str) -> object:
        return await refused(rotate(tokens, admin, refresh_token, client_id=other.client_id))

    live = await answer(pair.refresh_token)
    unknown = await answer(opaque.new_secret(opaque.Kind.REFRESH_TOKEN))
    await tokens.RevokeFamily(pb.RevokeFamilyRequest(family_id=pair.family_id), metadata=admin)
    assert live == unknown == await answer(pair.refresh_token)


async def test_a_service_that_is_not_a_trusted_caller_cannot_trade_a_refresh_token(
    running: RunningAuthority, tokens, admin, app: RegisteredClient, pair: pb.TokenPair
) -> None:
    # A verifier-style service: authenticated at authsvc (it needs that for Verify and
    # WatchRevocations) but not trusted to mint pairs. A refresh token it learned, with or without
    # the client's id, is no use to it, and the token's owner loses nothing.
    verifier = await running.create_client("verifier", audiences=[running.settings.audience])
    caller = bearer(await running.access_token(verifier))
    before = await database_rows(running)
    for fields in ({}, {"client_id": app.client_id}):
        assert await refused(rotate(tokens, caller, pair.refresh_token, **fields)) == (
            *INSUFFICIENT_SCOPE,
            "caller lacks permission: authsvc:issue",
        )
    assert await database_rows(running) == before
    await rotate(tokens, admin, pair.refresh_token, client_id=app.client_id)


async def test_idle_expired_family_is_refused_without_side_effects(
    running: RunningAuthority, tokens, admin, pair: pb.TokenPair
) -> None:
    running.clock.advance(running.settings.refresh_idle_ttl)
    admin = bearer(await running.admin_token())  # the old one expired with the clock
    before = await database_rows(running)
    assert await refused(rotate(tokens, admin, pair.refresh_token)) == (
        *INVALID_GRANT,
        "refresh token expired",
    )
    assert await database_rows(running) == before
    # Not a reuse: the family was not revoked, it just ran out.
    assert not await audit_events(running, "refresh_reuse_detected")


async def test_a_family_stored_without_an_audience_is_refused_a_token_nothing_accepts(
    running: RunningAuthority, tokens, admin, app: RegisteredClient
) -> None:
    """RFC 9068 §2.2 requires `aud`: rotated, such a family minted `"aud": []`, refused by every
    verifier while its client took it for good. Refused instead, with nothing changed; the
    refresh token stays as it was and the family is not revoked (`classify_refresh`)."""
    refresh_token = opaque.new_secret(opaque.Kind.REFRESH_TOKEN)
    now = running.clock.now()
    family = replace(
        FAMILY,
        family_id="from-an-old-build",
        client_id=app.client_id,
        audience=(),
        created_at=now,
        last_used_at=now,
        expires_at=now + 1000,
        idle_expires_at=now + 500,
    )
    async with running.authority.ctx.store.transaction() as tx:
        await tx.insert_family(family)
        await tx.insert_refresh_token(
            replace(
                TOKEN,
                family_id=family.family_id,
                issued_at=now,
                expires_at=now + 500,
                token_digest=opaque.digest(refresh_token),
            )
        )
    before = await database_rows(running)
    for _ in range(2):  # refused again the same way: not taken for a reuse
        assert await refused(rotate(tokens, admin, refresh_token, client_id=app.client_id)) == (
            *INVALID_GRANT,
            "this session has no audience to issue tokens for: sign in again",
        )
    assert await database_rows(running) == before
    assert not await audit_events(running, "refresh_reuse_detected")


async def test_revoked_family_is_refused_without_side_effects(
    running: RunningAuthority, tokens, admin, pair: pb.TokenPair
) -> None:
    await tokens.RevokeFamily(pb.RevokeFamilyRequest(family_id=pair.family_id), metadata=admin)
    before = await database_rows(running)
    assert await refused(rotate(tokens, admin, pair.refresh_token)) == (
        *INVALID_GRANT,
        "refresh token revoked",
    )
    assert await database_rows(running) == before


async def test_a_family_revoked_after_the_rotation_read_it_is_refused_without_side_effects(
    running: RunningAuthority, tokens, admin, pair: pb.TokenPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a rotation on PostgreSQL sees when a logout commits between its read of the family
    # and its update of the family: the family as it was, live.
    read = Tx.refresh_token_with_family

    async def as_before_the_logout(self: Tx, digest: bytes) -> object:
        found = await read(self, digest)
        assert found is not None
        token, family = found
        return token, replace(family, revoked_at=None, revoke_reason=None)

    await tokens.RevokeFamily(pb.RevokeFamilyRequest(family_id=pair.family_id), metadata=admin)
    monkeypatch.setattr(Tx, "refresh_token_with_family", as_before_the_logout)
    before = await database_rows(running)
    assert await refused(rotate(tokens, admin, pair.refresh_token)) == (
        *INVALID_GRANT,
        "refresh token revoked",
    )
    assert await database_rows(running) == before


@pytest.mark.parametrize(
    ("refresh_token", "refusal"),
    [
        pytest.param(opaque.new_secret(opaque.Kind.REFRESH_TOKEN), INVALID_GRANT, id="unknown"),
        pytest.param(opaque.new_secret(opaque.Kind.CLIENT_SECRET), INVALID_GRANT, id="a-secret"),
        pytest.param("garbage", INVALID_GRANT, id="garbage"),
        pytest.param("", INVALID_GRANT, id="empty"),
        pytest.param("asrt_" + "A" * 9000, INVALID_REQUEST, id="oversized"),
    ],
)
async def test_rotate_refuses_what_is_not_a_live_refresh_token(
    running: RunningAuthority, tokens, admin, refresh_token: str, refusal: tuple[object, str]
) -> None:
    before = await database_rows(running)
    assert (await refused(rotate(tokens, admin, refresh_token)))[:2] == refusal
    assert await database_rows(running) == before


async def test_access_token_is_not_a_refresh_token(tokens, admin, pair: pb.TokenPair) -> None:
    assert (await refused(rotate(tokens, admin, pair.access_token)))[:2] == INVALID_GRANT


# The grace window


@pytest.fixture
async def graceful(tmp_path: Path) -> AsyncIterator[tuple[RunningAuthority, Metadata]]:
    async with start_authority(tmp_path, refresh_grace_seconds=10) as running:
        yield running, bearer(await running.admin_token())


async def _graceful_pair(
    running: RunningAuthority, admin: Metadata, tokens: authsvc_pb2_grpc.TokenServiceStub
) -> pb.TokenPair:
    app = await running.create_client("app", grant_types=["refresh_token"], audiences=["api"])
    return await tokens.IssueTokenPair(
        pb.IssueTokenPairRequest(subject="alice", client_id=app.client_id), metadata=admin
    )


async def test_grace_window_retry_gets_the_same_child(graceful) -> None:
    running, admin = graceful
    async with grpc.aio.insecure_channel(running.address) as channel:
        tokens = authsvc_pb2_grpc.TokenServiceStub(channel)
        pair = await _graceful_pair(running, admin, tokens)
        child = await rotate(tokens, admin, pair.refresh_token)
        running.clock.advance(10)
        retry = await rotate(tokens, admin, pair.refresh_token)
        assert retry.refresh_token == child.refresh_token
        assert retry.family_id == child.family_id
        await verify(tokens, admin, retry.access_token)
        # The child is live, and once it is used a retry of the parent is reuse.
        grandchild = await rotate(tokens, admin, child.refresh_token)
        assert (await refused(rotate(tokens, admin, pair.refresh_token)))[:2] == INVALID_GRANT
        assert (await refused(verify(tokens, admin, grandchild.access_token)))[:2] == INVALID_TOKEN
        assert await audit_events(running, "refresh_reuse_detected")


async def test_a_retry_in_flight_gets_the_same_child_within_the_grace_window(
    tmp_path: Path, database_url: str
) -> None:
    """Two rotations of one token at once: on PostgreSQL the second's compare-and-set waits for
    the first's commit and loses; it must then be judged a retry, as it is on SQLite."""
    async with start_authority(
        tmp_path, database_url=database_url, db_pool_size=TEST_POOL_SIZE, refresh_grace_seconds=10
    ) as running:
        admin = bearer(await running.admin_token())
        async with grpc.aio.insecure_channel(running.address) as channel:
            tokens = authsvc_pb2_grpc.TokenServiceStub(channel)
            for _ in range(5):  # a few rounds, so the compare-and-set is raced at least once
                pair = await _graceful_pair(running, admin, tokens)
                first, second = await asyncio.gather(
                    *(rotate(tokens, admin, pair.refresh_token) for _ in range(2))
                )
                assert first.refresh_token == second.refresh_token
                await verify(tokens, admin, first.access_token)
        assert not await audit_events(running, "refresh_reuse_detected")


async def test_reuse_after_the_grace_window_kills_the_family(graceful) -> None:
    running, admin = graceful
    async with grpc.aio.insecure_channel(running.address) as channel:
        tokens = authsvc_pb2_grpc.TokenServiceStub(channel)
        pair = await _graceful_pair(running, admin, tokens)
        child = await rotate(tokens, admin, pair.refresh_token)
        running.clock.advance(11)
        assert (await refused(rotate(tokens, admin, pair.refresh_token)))[:2] == INVALID_GRANT
        assert (await refused(rotate(tokens, admin, child.refresh_token)))[:2] == INVALID_GRANT
        assert (await refused(verify(tokens, admin, child.access_token)))[:2] == INVALID_TOKEN


async def test_grace_window_is_off_by_default(
    running: RunningAuthority, tokens, admin, pair: pb.TokenPair
) -> None:
    assert running.settings.refresh_grace_seconds == 0
    child = await rotate(tokens, admin, pair.refresh_token)
    assert (await refused(rotate(tokens, admin, pair.refresh_token)))[:2] == INVALID_GRANT
    assert (await refused(rotate(tokens, admin, child.refresh_token)))[:2] == INVALID_GRANT


async def test_a_replay_within_the_grace_window_of_a_family_without_audience_is_reuse(
    graceful,
) -> None:
    """A family without an audience is refused rotation, but reuse is still reuse: a used token
    replayed within the grace window after its child was used too (rotated by an earlier build,
    or by an old replica during a rolling upgrade) revokes the family, as in any family."""
    running, admin = graceful
    ctx = running.authority.ctx
    app = await running.create_client("app", grant_types=["refresh_token"], audiences=["api"])
    parent = opaque.new_secret(opaque.Kind.REFRESH_TOKEN)
    child = opaque.derive_secret(opaque.Kind.REFRESH_TOKEN, ctx.grace_key, parent)
    now = running.clock.now()
    family = replace(
        FAMILY,
        family_id="from-an-old-build",
        client_id=app.client_id,
        audience=(),
        created_at=now,
        last_used_at=now,
        expires_at=now + 1000,
        idle_expires_at=now + 500,
    )
    async with ctx.store.transaction() as tx:
        await tx.insert_family(family)
        for secret in (parent, child):
            await tx.insert_refresh_token(
                RefreshTokenRecord(
                    family_id=family.family_id,
                    issued_at=now,
                    used_at=now,
                    expires_at=now + 500,
                    token_digest=opaque.digest(secret),
                )
            )
    running.clock.advance(5)
    async with grpc.aio.insecure_channel(running.address) as channel:
        tokens = authsvc_pb2_grpc.TokenServiceStub(channel)
        assert await refused(rotate(tokens, admin, parent)) == (
            *INVALID_GRANT,
            "refresh token reused; the session was revoked",
        )
    async with ctx.store.transaction(readonly=True) as tx:
        stored = await tx.get_family(family.family_id)
    assert stored is not None
    assert stored.revoked_at is not None
    assert await audit_events(running, "refresh_reuse_detected")
