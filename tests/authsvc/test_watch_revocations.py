"""WatchRevocations over gRPC: replay from cursor 0, resume from a cursor, live events, heartbeats,
and the stream id that tells a cursor from another database (or from after a restore)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_client.v1 import authsvc_pb2_grpc

from authsvc import events
from authsvc.client_registry import RegisteredClient
from authsvc.testing import RunningAuthority, start_authority
from tests.authsvc.calls import UNAUTHENTICATED, Metadata, bearer, newest_cursor, refused

Stub = authsvc_pb2_grpc.TokenServiceStub
BOUND = 5.0  # seconds: no event takes this long to arrive on a loopback stream


async def next_event(
    call: grpc.aio.UnaryStreamCall, *, heartbeats: bool = False
) -> pb.RevocationEvent:
    """The next event on the stream, skipping heartbeats unless asked for them (within BOUND in
    all: a live stream sends heartbeats forever)."""
    async with asyncio.timeout(BOUND):
        while True:
            event: pb.RevocationEvent = await call.read()
            assert event != grpc.aio.EOF
            if heartbeats or event.WhichOneof("event") != "heartbeat":
                return event


async def events_until(
    call: grpc.aio.UnaryStreamCall, done: set[tuple[str, str]]
) -> list[pb.RevocationEvent]:
    """Read until every (kind, value) in `done` has been seen; every event read, in order."""
    seen: list[pb.RevocationEvent] = []
    wanted = set(done)
    while wanted:
        event = await next_event(call)
        seen.append(event)
        wanted.discard(describe(event))
    return seen


async def events_until_it_fails(
    call: grpc.aio.UnaryStreamCall,
) -> tuple[list[pb.RevocationEvent], grpc.aio.AioRpcError]:
    """Every event until the stream fails, in order, and how it failed."""
    received: list[pb.RevocationEvent] = []
    try:
        while True:
            received.append(await next_event(call))
    except grpc.aio.AioRpcError as exc:
        return received, exc


def describe(event: pb.RevocationEvent) -> tuple[str, str]:
    kind = event.WhichOneof("event")
    if kind == "subject_revoked":
        return kind, event.subject_revoked.subject
    if kind == "client_revoked":
        return kind, event.client_revoked.client_id
    if kind == "key_changed":
        return kind, f"{event.key_changed.kid}:{event.key_changed.state}"
    if kind == "heartbeat":
        return kind, ""
    return kind, getattr(event, kind)


async def issue(tokens: Stub, admin: Metadata, app: RegisteredClient, device: str) -> pb.TokenPair:
    return await tokens.IssueTokenPair(
        pb.IssueTokenPairRequest(subject="alice", client_id=app.client_id, device_id=device),
        metadata=admin,
    )


async def test_cursor_zero_replays_every_revocation_in_force(
    running: RunningAuthority, tokens: Stub, admin, app: RegisteredClient
) -> None:
    laptop = await issue(tokens, admin, app, "laptop")
    phone = await issue(tokens, admin, app, "phone")
    jti = running.authority.verify(phone.access_token, audience=None).jti
    await tokens.RevokeFamily(pb.RevokeFamilyRequest(family_id=laptop.family_id), metadata=admin)
    await tokens.Revoke(pb.RevokeRequest(token=phone.access_token), metadata=admin)
    await tokens.RevokeSubject(pb.RevokeSubjectRequest(subject="bob"), metadata=admin)
    await tokens.RevokeClient(pb.RevokeClientRequest(client_id=app.client_id), metadata=admin)

    call = tokens.WatchRevocations(pb.WatchRevocationsRequest(cursor=0), metadata=admin)
    try:
        events = await events_until(
            call,
            {
                ("family_revoked", laptop.family_id),
                ("jti_revoked", jti),
                ("subject_revoked", "bob"),
                ("client_revoked", app.client_id),
            },
        )
    finally:
        call.cancel()
    cursors = [e.cursor for e in events]
    assert cursors == sorted(cursors)
    assert len(set(cursors)) == len(cursors)
    [subject] = [e for e in events if describe(e) == ("subject_revoked", "bob")]
    assert subject.subject_revoked.not_before == int(running.clock.now())
    assert subject.expires_at.ToSeconds() == int(
        running.clock.now() + running.settings.longest_access_token_life
    )


async def test_cursor_zero_skips_revocations_no_longer_in_force(
    running: RunningAuthority, tokens: Stub, admin, app: RegisteredClient
) -> None:
    old = await issue(tokens, admin, app, "old")
    await tokens.RevokeFamily(pb.RevokeFamilyRequest(family_id=old.family_id), metadata=admin)
    running.clock.advance(running.settings.longest_access_token_life)  # every old token expired
    admin = bearer(await running.admin_token())
    new = await issue(tokens, admin, app, "new")
    await tokens.RevokeFamily(pb.RevokeFamilyRequest(family_id=new.family_id), metadata=admin)
    call = tokens.WatchRevocations(pb.WatchRevocationsRequest(cursor=0), metadata=admin)
    try:
        events = await events_until(call, {("family_revoked", new.family_id)})
    finally:
        call.cancel()
    assert ("family_revoked", old.family_id) not in [describe(e) for e in events]


async def test_resume_from_a_cursor(
    running: RunningAuthority, tokens: Stub, admin, app: RegisteredClient
) -> None:
    first, second, third = [await issue(tokens, admin, app, d) for d in ("a", "b", "c")]
    for pair in (first, second):
        await tokens.RevokeFamily(pb.RevokeFamilyRequest(family_id=pair.family_id), metadata=admin)
    call = tokens.WatchRevocations(pb.WatchRevocationsRequest(cursor=0), metadata=admin)
    try:
        events = await events_until(call, {("family_revoked", first.family_id)})
    finally:
        call.cancel()
    resume_at = events[-1].cursor

    await tokens.RevokeFamily(pb.RevokeFamilyRequest(family_id=third.family_id), metadata=admin)
    call = tokens.WatchRevocations(pb.WatchRevocationsRequest(cursor=resume_at), metadata=admin)
    try:
        resumed = [await next_event(call), await next_event(call)]
    finally:
        call.cancel()
    assert [describe(e) for e in resumed] == [
        ("family_revoked", second.family_id),
        ("family_revoked", third.family_id),
    ]
    assert all(e.cursor > resume_at for e in resumed)


async def test_key_changes_are_streamed(running: RunningAuthority, tokens: Stub, admin) -> None:
    before = {k.kid: k.state for k in running.authority.publish_keys().records}
    [pending] = [kid for kid, state in before.items() if state == "pending"]
    [active] = [kid for kid, state in before.items() if state == "active"]
    latest = running.authority.ctx.feed.cursor
    call = tokens.WatchRevocations(pb.WatchRevocationsRequest(cursor=latest), metadata=admin)
    try:
        rotated = await tokens.RotateKeys(pb.RotateKeysRequest(immediate=True), metadata=admin)
        events = await events_until(
            call,
            {
                ("key_changed", f"{rotated.published_kid}:pending"),
                ("key_changed", f"{pending}:active"),
                ("key_changed", f"{active}:retired"),
            },
        )
    finally:
        call.cancel()
    assert len(events) == 3


@pytest.fixture
async def chatty(tmp_path: Path) -> AsyncIterator[RunningAuthority]:
    async with start_authority(tmp_path, heartbeat_interval=0.05) as running:
        yield running


async def test_heartbeats_mark_a_quiet_stream(chatty: RunningAuthority) -> None:
    admin = bearer(await chatty.admin_token())
    latest = chatty.authority.ctx.feed.cursor
    async with grpc.aio.insecure_channel(chatty.address) as channel:
        call = Stub(channel).WatchRevocations(
            pb.WatchRevocationsRequest(cursor=latest), metadata=admin
        )
        try:
            first = await next_event(call, heartbeats=True)
            second = await next_event(call, heartbeats=True)
        finally:
            call.cancel()
    for beat in (first, second):
        assert beat.WhichOneof("event") == "heartbeat"
        assert beat.cursor == latest  # a heartbeat repeats the last cursor


async def test_a_new_revocation_is_streamed_live(chatty: RunningAuthority) -> None:
    admin = bearer(await chatty.admin_token())
    app = await chatty.create_client("app", grant_types=["refresh_token"], audiences=["api"])
    latest = chatty.authority.ctx.feed.cursor
    async with grpc.aio.insecure_channel(chatty.address) as channel:
        tokens = Stub(channel)
        pair = await issue(tokens, admin, app, "laptop")
        call = tokens.WatchRevocations(pb.WatchRevocationsRequest(cursor=latest), metadata=admin)
        try:
            # A heartbeat comes only once the backlog is sent: from here on events are live.
            assert (await next_event(call, heartbeats=True)).WhichOneof("event") == "heartbeat"
            request = pb.RevokeFamilyRequest(family_id=pair.family_id)
            await tokens.RevokeFamily(request, metadata=admin)
            event = await next_event(call)
        finally:
            call.cancel()
    assert describe(event) == ("family_revoked", pair.family_id)
    assert event.cursor > latest


async def test_a_subscriber_that_falls_behind_resumes_from_its_cursor_and_misses_nothing(
    chatty: RunningAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A subscriber's queue holds 20 events here: a subject's 30 families overflow it at once.
    monkeypatch.setattr(events, "SUBSCRIBER_QUEUE", 20)
    admin = bearer(await chatty.admin_token())
    app = await chatty.create_client("app", grant_types=["refresh_token"], audiences=["api"])
    latest = chatty.authority.ctx.feed.cursor
    async with grpc.aio.insecure_channel(chatty.address) as channel:
        tokens = Stub(channel)
        families = {(await issue(tokens, admin, app, f"device-{i}")).family_id for i in range(30)}
        call = tokens.WatchRevocations(pb.WatchRevocationsRequest(cursor=latest), metadata=admin)
        try:
            assert (await next_event(call, heartbeats=True)).WhichOneof("event") == "heartbeat"
            await tokens.RevokeSubject(pb.RevokeSubjectRequest(subject="alice"), metadata=admin)
            received, ended = await events_until_it_fails(call)
        finally:
            call.cancel()
        assert ended.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert ended.details() == "fell behind; resume from cursor"
        assert len(received) == 20  # what its queue held
        # Resumed from the last cursor it got, as authsvc_client's feed does.
        wanted = {("family_revoked", family) for family in families}
        wanted -= {describe(e) for e in received}
        request = pb.WatchRevocationsRequest(cursor=received[-1].cursor)
        call = tokens.WatchRevocations(request, metadata=admin)
        try:
            received += await events_until(call, wanted)
        finally:
            call.cancel()
    described = [describe(e) for e in received]
    assert described[0] == ("subject_revoked", "alice")
    assert sorted(described[1:]) == sorted(("family_revoked", f) for f in families)
    cursors = [e.cursor for e in received]
    assert cursors == sorted(set(cursors))  # in order, none twice


async def test_a_revocation_after_the_newest_events_were_purged_is_streamed(
    running: RunningAuthority, tokens: Stub, admin, app: RegisteredClient
) -> None:
    old = await issue(tokens, admin, app, "old")
    await tokens.RevokeFamily(pb.RevokeFamilyRequest(family_id=old.family_id), metadata=admin)
    latest = await newest_cursor(running)
    call = tokens.WatchRevocations(pb.WatchRevocationsRequest(cursor=latest), metadata=admin)
    try:
        assert (await next_event(call, heartbeats=True)).WhichOneof("event") == "heartbeat"
        running.clock.advance(running.settings.longest_access_token_life + 1)
        report = await running.authority.run_maintenance()
        assert report.purged["revocation_events"] == 1  # the newest event is gone
        admin = bearer(await running.admin_token())
        new = await issue(tokens, admin, app, "new")
        await tokens.RevokeFamily(pb.RevokeFamilyRequest(family_id=new.family_id), metadata=admin)
        # The stream outlived the token it was opened with, so it ends instead of sending this.
        assert (await refused(next_event(call)))[:2] == UNAUTHENTICATED
    finally:
        call.cancel()
    # Resuming from the purged cursor, with a fresh token, carries on.
    call = tokens.WatchRevocations(pb.WatchRevocationsRequest(cursor=latest), metadata=admin)
    try:
        event = await next_event(call)
    finally:
        call.cancel()
    assert describe(event) == ("family_revoked", new.family_id)
    assert event.cursor > latest


async def stream_of(running: RunningAuthority) -> str:
    async with running.authority.ctx.store.transaction(readonly=True) as tx:
        return (await tx.event_stream()).stream_id


async def test_every_message_names_the_databases_stream(
    running: RunningAuthority, tokens: Stub, admin, app: RegisteredClient
) -> None:
    pair = await issue(tokens, admin, app, "laptop")
    await tokens.RevokeFamily(pb.RevokeFamilyRequest(family_id=pair.family_id), metadata=admin)
    call = tokens.WatchRevocations(pb.WatchRevocationsRequest(cursor=0), metadata=admin)
    try:
        events = await events_until(call, {("family_revoked", pair.family_id)})
        beat = await next_event(call, heartbeats=True)
    finally:
        call.cancel()
    assert beat.WhichOneof("event") == "heartbeat"
    assert {e.stream_id for e in [*events, beat]} == {await stream_of(running)}


async def test_resuming_in_the_same_stream_carries_on(
    running: RunningAuthority, tokens: Stub, admin, app: RegisteredClient
) -> None:
    first, second = [await issue(tokens, admin, app, d) for d in ("a", "b")]
    await tokens.RevokeFamily(pb.RevokeFamilyRequest(family_id=first.family_id), metadata=admin)
    resume_at = await newest_cursor(running)
    await tokens.RevokeFamily(pb.RevokeFamilyRequest(family_id=second.family_id), metadata=admin)
    request = pb.WatchRevocationsRequest(cursor=resume_at, stream_id=await stream_of(running))
    call = tokens.WatchRevocations(request, metadata=admin)
    try:
        event = await next_event(call)
    finally:
        call.cancel()
    assert describe(event) == ("family_revoked", second.family_id)


@pytest.mark.parametrize(
    ("stream_id", "ahead", "why"),
    [
        pytest.param("a1" * 16, 0, "reset or replaced", id="another-databases-stream"),
        pytest.param(None, 1, "restored from an older backup", id="cursor-ahead-same-stream"),
        pytest.param("", 1, "restored from an older backup", id="cursor-ahead-old-client"),
        # The caller's id is echoed cut short: past gRPC's metadata limit it would not arrive.
        pytest.param("b" * 20_000, 0, "reset or replaced", id="a-stream-id-of-20000-chars"),
    ],
)
async def test_a_cursor_not_in_this_databases_stream_is_out_of_range(
    running: RunningAuthority, tokens: Stub, admin, stream_id: str | None, ahead: int, why: str
) -> None:
    stream_id = await stream_of(running) if stream_id is None else stream_id
    cursor = await newest_cursor(running) + ahead
    request = pb.WatchRevocationsRequest(cursor=cursor, stream_id=stream_id)
    call = tokens.WatchRevocations(request, metadata=admin)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await next_event(call, heartbeats=True)
    assert raised.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert why in (raised.value.details() or "")
    assert "from cursor 0" in (raised.value.details() or "")
    assert len(raised.value.details() or "") < 1000


# A stream outlives the token it was opened with: the caller is judged again before each message


async def watch_live(tokens: Stub, metadata: Metadata, cursor: int) -> grpc.aio.UnaryStreamCall:
    """A stream from `cursor`, once its backlog is sent (a heartbeat comes only then)."""
    call = tokens.WatchRevocations(pb.WatchRevocationsRequest(cursor=cursor), metadata=metadata)
    assert (await next_event(call, heartbeats=True)).WhichOneof("event") == "heartbeat"
    return call


async def test_a_stream_ends_once_its_token_expires(chatty: RunningAuthority) -> None:
    admin = bearer(await chatty.admin_token())
    latest = chatty.authority.ctx.feed.cursor
    async with grpc.aio.insecure_channel(chatty.address) as channel:
        tokens = Stub(channel)
        call = await watch_live(tokens, admin, latest)
        try:
            chatty.clock.advance(chatty.settings.longest_access_token_life + 1)
            refusal = await refused(next_event(call, heartbeats=True))
        finally:
            call.cancel()
        assert refusal[:2] == UNAUTHENTICATED
        assert refusal.description is not None
        assert "expired" in refusal.description
        # The subscriber reconnects with a fresh token and goes on from its cursor.
        call = await watch_live(tokens, bearer(await chatty.admin_token()), latest)
        call.cancel()


async def test_a_stream_ends_once_its_callers_client_is_revoked(chatty: RunningAuthority) -> None:
    admin = bearer(await chatty.admin_token())
    watcher = await chatty.create_client("watcher", audiences=[chatty.settings.audience])
    watching = bearer(await chatty.access_token(watcher, audience=[chatty.settings.audience]))
    app = await chatty.create_client("app", grant_types=["refresh_token"], audiences=["api"])
    latest = chatty.authority.ctx.feed.cursor
    async with grpc.aio.insecure_channel(chatty.address) as channel:
        tokens = Stub(channel)
        pair = await issue(tokens, admin, app, "laptop")
        call = await watch_live(tokens, watching, latest)
        try:
            await tokens.RevokeFamily(
                pb.RevokeFamilyRequest(family_id=pair.family_id), metadata=admin
            )
            assert describe(await next_event(call)) == ("family_revoked", pair.family_id)
            await chatty.authority.revoke_client(watcher.client_id)
            refusal = await refused(next_event(call, heartbeats=True))
        finally:
            call.cancel()
    assert refusal[:2] == UNAUTHENTICATED
