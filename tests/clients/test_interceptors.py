"""The interceptors on a real gRPC server (the notes example), fed by an in-test authority."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from typing import Any

import grpc
import notes_pb2
import notes_pb2_grpc
import protected_service
import pytest
from authsvc_client import (
    AsyncAuthInterceptor,
    AuthInterceptor,
    ServiceCredentials,
    WhenStale,
    current_claims,
)
from authsvc_client._policy import Deny
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from protected_service import serve

from .conftest import ISSUER, NOW, FakeAuthority, ManualClock, Signer, timestamp, wait_for


class Notes:
    """A client of the notes service that reports status codes instead of raising."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = notes_pb2_grpc.NotesStub(channel)

    async def call(self, method: str, token: str | None, request: Any = None) -> Any:
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        rpc = getattr(self.stub, method)
        request = request or getattr(notes_pb2, f"{method}Request")()
        try:
            return await rpc(request, metadata=metadata, timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc

    async def status(self, method: str, token: str | None, request: Any = None) -> grpc.StatusCode:
        outcome = await self.call(method, token, request)
        return outcome.code() if isinstance(outcome, grpc.aio.AioRpcError) else grpc.StatusCode.OK


@pytest.fixture
async def service(
    fake_authority: tuple[FakeAuthority, str], clock: ManualClock, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Notes, Any]]:
    options = getattr(request, "param", {})
    _, address = fake_authority
    server, port, auth = await serve(address, ISSUER, None, clock=clock, **options)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Notes(channel), auth
    finally:
        await channel.close()
        await server.stop(None)
        await auth.close()


def trailers(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return dict(error.trailing_metadata() or ())


async def test_a_valid_token_reaches_the_handler_with_its_claims(
    service: tuple[Notes, Any], signer: Signer
) -> None:
    notes, _ = service
    answer = await notes.call("WhoAmI", signer.mint(sub="bob", client_id="cli"))
    assert (answer.subject, answer.client_id) == ("bob", "cli")
    assert list(answer.scope) == ["notes:read", "notes:write"]


async def test_claims_reach_a_streaming_handler(service: tuple[Notes, Any], signer: Signer) -> None:
    notes, _ = service
    token = signer.mint(sub="carol")
    await notes.call("WriteNote", token, notes_pb2.WriteNoteRequest(id="n1", text="hi"))
    listed = [
        n
        async for n in notes.stub.ListNotes(
            notes_pb2.ListNotesRequest(), metadata=(("authorization", f"Bearer {token}"),)
        )
    ]
    assert [(n.id, n.owner) for n in listed] == [("n1", "carol")]


async def test_concurrent_calls_each_see_their_own_claims(
    service: tuple[Notes, Any], signer: Signer
) -> None:
    notes, _ = service
    subjects = [f"user-{i}" for i in range(20)]
    answers = await asyncio.gather(*(notes.call("WhoAmI", signer.mint(sub=s)) for s in subjects))
    assert [answer.subject for answer in answers] == subjects


async def test_the_async_interceptor_hands_claims_to_sync_handlers_too(
    fake_authority: tuple[FakeAuthority, str], signer: Signer, clock: ManualClock
) -> None:
    """grpc.aio runs sync handlers in a thread pool, where a contextvar set by the interceptor
    does not reach: those handlers are wrapped instead."""
    _, address = fake_authority
    auth = AsyncAuthInterceptor(address, issuer=ISSUER, audience="notes", clock=clock)
    executor = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.aio.server(executor, interceptors=[auth])
    notes_pb2_grpc.add_NotesServicer_to_server(SyncNotes(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    async with auth:
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = notes_pb2_grpc.NotesStub(channel)
                good = (("authorization", f"Bearer {signer.mint(sub='dora')}"),)
                who = await stub.WhoAmI(notes_pb2.WhoAmIRequest(), metadata=good)
                listed = [
                    n async for n in stub.ListNotes(notes_pb2.ListNotesRequest(), metadata=good)
                ]
        finally:
            await server.stop(None)
            await asyncio.to_thread(executor.shutdown)  # as in the revoked-stream test below
    assert who.subject == "dora"
    assert [n.owner for n in listed] == ["dora"] * 3


async def test_a_missing_token_is_unauthenticated_with_a_bare_challenge(
    service: tuple[Notes, Any],
) -> None:
    notes, _ = service
    error = await notes.call("WhoAmI", None)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert trailers(error) == {
        "oauth-error": "invalid_token",
        "oauth-error-description": "missing bearer token",
        "www-authenticate": 'Bearer realm="notes"',
    }


@pytest.mark.parametrize(
    ("make_token", "description"),
    [
        pytest.param(lambda s: s.mint(exp=NOW - 60), "token expired", id="expired"),
        pytest.param(lambda s: Signer().mint(), "unknown signing key", id="foreign-issuer-key"),
        pytest.param(
            lambda s: Signer().mint(header={"kid": s.kid}),
            "token signature is invalid",
            id="foreign-same-kid",
        ),
        pytest.param(
            lambda s: s.mint()[:-6] + ("AAAAAA" if not s.mint().endswith("AAAAAA") else "BBBBBB"),
            "token signature is invalid",
            id="tampered-signature",
        ),
        pytest.param(lambda s: s.mint(iss="https://evil.test"), None, id="other-issuer"),
        pytest.param(lambda s: s.mint(aud=["orders"]), None, id="other-audience"),
        pytest.param(lambda s: "not-a-jwt", "malformed token", id="garbage"),
    ],
)
async def test_invalid_tokens_are_unauthenticated(
    service: tuple[Notes, Any], signer: Signer, make_token: Any, description: str | None
) -> None:
    notes, _ = service
    error = await notes.call("WhoAmI", make_token(signer))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    metadata = trailers(error)
    assert metadata["oauth-error"] == "invalid_token"
    assert metadata["www-authenticate"].startswith('Bearer realm="notes", error="invalid_token"')
    if description:
        assert metadata["oauth-error-description"] == description


async def test_a_malformed_authorization_header_is_unauthenticated(
    service: tuple[Notes, Any], signer: Signer
) -> None:
    notes, _ = service
    metadata = (("authorization", f"Basic {signer.mint()}"),)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await notes.stub.WhoAmI(notes_pb2.WhoAmIRequest(), metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("method", "request_message", "needs"),
    [
        pytest.param(
            "WriteNote", notes_pb2.WriteNoteRequest(id="x"), "notes:write", id="proto-option"
        ),
        pytest.param(
            "DeleteNote", notes_pb2.DeleteNoteRequest(id="x"), "notes:write", id="mapping"
        ),
    ],
)
async def test_a_missing_scope_is_permission_denied(
    service: tuple[Notes, Any], signer: Signer, method: str, request_message: Any, needs: str
) -> None:
    notes, _ = service
    error = await notes.call(method, signer.mint(scope="notes:read"), request_message)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    metadata = trailers(error)
    assert metadata["oauth-error"] == "insufficient_scope"
    assert metadata["www-authenticate"].endswith(f'scope="{needs}"')
    assert (
        await notes.status(method, signer.mint(scope=needs), request_message) == grpc.StatusCode.OK
    )


async def test_a_method_without_scopes_needs_only_a_valid_token(
    service: tuple[Notes, Any], signer: Signer
) -> None:
    notes, _ = service
    assert await notes.status("WhoAmI", signer.mint(scope="")) == grpc.StatusCode.OK


async def test_a_public_method_needs_no_token(service: tuple[Notes, Any]) -> None:
    notes, _ = service
    answer = await notes.call("Ping", None)
    assert answer.status == "ok"


async def test_a_flood_of_unknown_kids_costs_one_key_fetch_per_interval(
    service: tuple[Notes, Any], fake_authority: tuple[FakeAuthority, str], clock: ManualClock
) -> None:
    notes, _ = service
    authority, _ = fake_authority
    before = authority.publish_calls
    forgers = [Signer() for _ in range(20)]
    statuses = await asyncio.gather(*(notes.status("WhoAmI", f.mint()) for f in forgers))
    assert set(statuses) == {grpc.StatusCode.UNAUTHENTICATED}
    assert authority.publish_calls - before <= 1
    clock.advance(11)  # past the minimum interval: one more fetch is allowed
    await notes.status("WhoAmI", forgers[0].mint())
    assert authority.publish_calls - before <= 2


async def test_an_unknown_kid_that_authsvc_now_publishes_is_fetched_and_accepted(
    service: tuple[Notes, Any], fake_authority: tuple[FakeAuthority, str], clock: ManualClock
) -> None:
    notes, _ = service
    authority, _ = fake_authority
    newcomer = Signer()
    authority.signers.append(newcomer)  # published without telling the stream
    clock.advance(11)
    assert await notes.status("WhoAmI", newcomer.mint()) == grpc.StatusCode.OK


async def test_a_key_change_event_refreshes_the_keys(
    service: tuple[Notes, Any], fake_authority: tuple[FakeAuthority, str]
) -> None:
    notes, auth = service
    authority, _ = fake_authority
    successor = Signer()
    authority.signers.append(successor)
    await authority.publish(
        expires_at=timestamp(NOW + 600), key_changed={"kid": successor.kid, "state": "pending"}
    )
    await wait_for(lambda: successor.kid in auth.verifier.keys.keys)
    assert await notes.status("WhoAmI", successor.mint()) == grpc.StatusCode.OK


async def test_a_purged_key_stops_verifying_at_once_even_from_the_cache(
    service: tuple[Notes, Any], fake_authority: tuple[FakeAuthority, str], signer: Signer
) -> None:
    notes, auth = service
    authority, _ = fake_authority
    token = signer.mint()
    assert await notes.status("WhoAmI", token) == grpc.StatusCode.OK
    authority.signers.clear()
    await authority.publish(
        expires_at=timestamp(NOW + 600), key_changed={"kid": signer.kid, "state": "purged"}
    )
    await wait_for(lambda: signer.kid not in auth.verifier.keys.keys)
    assert await notes.status("WhoAmI", token) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_purged_key_stays_purged_when_a_fetch_from_before_the_purge_lands(
    service: tuple[Notes, Any],
    fake_authority: tuple[FakeAuthority, str],
    signer: Signer,
    clock: ManualClock,
) -> None:
    notes, auth = service
    authority, _ = fake_authority
    token = signer.mint(exp=NOW + 3600)
    assert await notes.status("WhoAmI", token) == grpc.StatusCode.OK
    authority.hold_keys = asyncio.Event()
    authority.keys_requested.clear()
    clock.advance(301)  # past the key set's max age: the feed fetches it again
    await asyncio.wait_for(authority.keys_requested.wait(), 5)  # read, not yet answered
    authority.signers.clear()
    await authority.publish(
        expires_at=timestamp(NOW + 600), key_changed={"kid": signer.kid, "state": "purged"}
    )
    await wait_for(lambda: signer.kid not in auth.verifier.keys.keys)
    authority.hold_keys.set()  # the answer read before the purge arrives
    await wait_for(lambda: not auth.verifier.keys.refresh_due())  # and is installed
    assert signer.kid not in auth.verifier.keys.keys
    assert await notes.status("WhoAmI", token) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_key_change_during_a_fetch_in_flight_is_fetched_after_it(
    service: tuple[Notes, Any], fake_authority: tuple[FakeAuthority, str], clock: ManualClock
) -> None:
    # A fetch already in flight may have read the key ring before the change: the refresh the
    # change asks for must not be satisfied by it.
    notes, auth = service
    authority, _ = fake_authority
    newcomer = Signer()
    authority.hold_keys = asyncio.Event()
    authority.keys_requested.clear()
    clock.advance(11)  # past the minimum interval since start()'s fetch
    # An unknown kid starts a fetch in the call's own task; it reads the ring without newcomer.
    call = asyncio.ensure_future(notes.status("WhoAmI", newcomer.mint()))
    await asyncio.wait_for(authority.keys_requested.wait(), 5)
    authority.signers.append(newcomer)
    await authority.publish(
        expires_at=timestamp(NOW + 600), key_changed={"kid": newcomer.kid, "state": "active"}
    )
    lock = auth._feed._refresh_lock
    await wait_for(lambda: bool(lock._waiters))  # the change's refresh waits for the flight
    authority.hold_keys.set()
    assert await call == grpc.StatusCode.UNAUTHENTICATED  # its fetch predates newcomer
    await wait_for(lambda: newcomer.kid in auth.verifier.keys.keys)
    assert await notes.status("WhoAmI", newcomer.mint()) == grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("event", "token_claims"),
    [
        pytest.param({"family_revoked": "family-1"}, {"sid": "family-1"}, id="family"),
        pytest.param({"jti_revoked": "jti-1"}, {"jti": "jti-1"}, id="jti"),
        pytest.param(
            {"subject_revoked": {"subject": "alice", "not_before": NOW + 1}}, {}, id="subject"
        ),
        pytest.param(
            {"client_revoked": {"client_id": "web", "not_before": NOW + 1}}, {}, id="client"
        ),
    ],
)
async def test_a_revocation_event_rejects_a_cached_token(
    service: tuple[Notes, Any],
    fake_authority: tuple[FakeAuthority, str],
    signer: Signer,
    event: dict[str, Any],
    token_claims: dict[str, Any],
) -> None:
    notes, _ = service
    authority, _ = fake_authority
    token = signer.mint(**token_claims)
    bystander = signer.mint(sub="bob", client_id="cli", sid="family-2")
    assert await notes.status("WhoAmI", token) == grpc.StatusCode.OK  # now cached
    await authority.publish(expires_at=timestamp(NOW + 600), **event)

    async def rejected() -> bool:
        return await notes.status("WhoAmI", token) == grpc.StatusCode.UNAUTHENTICATED

    for _ in range(500):
        if await rejected():
            break
    else:
        raise AssertionError("revocation never reached the interceptor")
    error = await notes.call("WhoAmI", token)
    assert trailers(error)["oauth-error"] == "invalid_token"
    assert await notes.status("WhoAmI", bystander) == grpc.StatusCode.OK


async def test_the_stream_reconnects_and_resumes_from_its_cursor(
    service: tuple[Notes, Any], fake_authority: tuple[FakeAuthority, str], signer: Signer
) -> None:
    notes, auth = service
    authority, _ = fake_authority
    await authority.publish(expires_at=timestamp(NOW + 600), jti_revoked="first")
    await authority.publish(expires_at=timestamp(NOW + 600), jti_revoked="second")
    await wait_for(lambda: auth.verifier.revocations.cursor == 2)
    await authority.end_streams()
    await wait_for(lambda: len(authority.requested_cursors) == 2)
    assert authority.requested_cursors == [0, 2]
    assert authority.requested_streams == ["", ""]  # a server older than stream ids names none
    await authority.publish(expires_at=timestamp(NOW + 600), family_revoked="family-1")
    await wait_for(lambda: auth.verifier.revocations.cursor == 3)
    assert await notes.status("WhoAmI", signer.mint()) == grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(params=[pytest.param("async", id="async"), pytest.param("sync", id="sync")])
async def interceptor(
    request: pytest.FixtureRequest, fake_authority: tuple[FakeAuthority, str], clock: ManualClock
) -> AsyncIterator[Any]:
    """Each interceptor, its feed following the in-test authority: the asyncio one, and the sync
    one with its feed on threads."""
    _, address = fake_authority
    if request.param == "async":
        auth = AsyncAuthInterceptor(address, issuer=ISSUER, audience="notes", clock=clock)
        await auth.start()
        try:
            yield auth
        finally:
            await auth.close()
        return
    sync_auth = AuthInterceptor(address, issuer=ISSUER, audience="notes", clock=clock)
    await asyncio.to_thread(sync_auth.start)
    try:
        yield sync_auth
    finally:
        await asyncio.to_thread(sync_auth.close)


def revoked(auth: Any, token: str) -> bool:
    """Whether the interceptor refuses `token` as revoked (the verdict it would apply)."""
    verdict = auth.verifier.check("/notes.v1.Notes/WhoAmI", [("authorization", f"Bearer {token}")])
    return isinstance(verdict, Deny) and "revoked" in verdict.error.description


def start_over_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_verifier_starts_over_when_authsvc_has_another_database(
    interceptor: Any,
    fake_authority: tuple[FakeAuthority, str],
    signer: Signer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    authority, _ = fake_authority
    revocations = interceptor.verifier.revocations
    authority.stream_id = "stream-a"
    await authority.publish(expires_at=timestamp(NOW + 600), family_revoked="family-1")
    await authority.publish(expires_at=timestamp(NOW + 600), jti_revoked="jti-1")
    await wait_for(lambda: (revocations.cursor, revocations.stream_id) == (2, "stream-a"))
    known = signer.mint(sid="family-1")
    assert revoked(interceptor, known)
    fetched = authority.publish_calls

    caplog.set_level(logging.WARNING, logger="authsvc_client")
    await authority.replace_database("stream-b")
    await authority.publish(expires_at=timestamp(NOW + 600), family_revoked="family-2")
    await wait_for(lambda: (revocations.cursor, revocations.stream_id) == (1, "stream-b"))

    assert revoked(interceptor, signer.mint(sid="family-2"))  # from the new database
    assert revoked(interceptor, known)  # kept, though the new database never heard of it
    assert not revoked(interceptor, signer.mint(sid="family-3"))
    resumes = list(zip(authority.requested_cursors, authority.requested_streams, strict=True))
    assert resumes[-2:] == [(2, "stream-a"), (0, "")]
    await wait_for(lambda: authority.publish_calls > fetched)  # the keys are fetched again
    [warning] = start_over_warnings(caplog)
    assert "cursor 2 of stream stream-a" in warning
    assert "starting over from cursor 0, keeping the 2 revocations already known" in warning
    assert "Expected once after authsvc's database was reset or restored" in warning


async def test_a_verifier_ahead_of_a_restored_database_starts_over(
    interceptor: Any,
    fake_authority: tuple[FakeAuthority, str],
    signer: Signer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    authority, _ = fake_authority
    revocations = interceptor.verifier.revocations
    authority.stream_id = "stream-a"
    for family in ("family-1", "family-2", "family-3"):
        await authority.publish(expires_at=timestamp(NOW + 600), family_revoked=family)
    await wait_for(lambda: revocations.cursor == 3)

    caplog.set_level(logging.WARNING, logger="authsvc_client")
    await authority.restore(events=1)  # the backup knew family-1 only
    await authority.publish(expires_at=timestamp(NOW + 600), family_revoked="family-4")
    await wait_for(lambda: revocations.cursor == 2 and authority.requested_cursors[-1] == 0)

    for family in ("family-1", "family-2", "family-3", "family-4"):
        assert revoked(interceptor, signer.mint(sid=family)), family
    assert len(start_over_warnings(caplog)) == 1


async def test_keys_are_refreshed_when_the_servers_max_age_has_passed(
    service: tuple[Notes, Any], fake_authority: tuple[FakeAuthority, str], clock: ManualClock
) -> None:
    authority, _ = fake_authority
    before = authority.publish_calls
    clock.advance(authority.max_age)
    await wait_for(lambda: authority.publish_calls > before)  # the schedule looks once a second


async def test_a_stale_stream_rejects_by_default(
    service: tuple[Notes, Any],
    fake_authority: tuple[FakeAuthority, str],
    signer: Signer,
    clock: ManualClock,
) -> None:
    notes, _ = service
    token = signer.mint(exp=NOW + 3600)
    assert await notes.status("WhoAmI", token) == grpc.StatusCode.OK
    clock.advance(61)  # nothing heard for longer than the 60 s bound
    error = await notes.call("WhoAmI", token)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert trailers(error)["oauth-error"] == "temporarily_unavailable"


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_verifier_is_not_ready_nor_fresh_until_the_replay_has_caught_up(
    fake_authority: tuple[FakeAuthority, str], signer: Signer, clock: ManualClock, kind: str
) -> None:
    # authsvc replays the events after the cursor, then sends a heartbeat. A call made after the
    # replay's first event must not pass a token whose revocation comes later in the replay.
    authority, address = fake_authority
    await authority.publish(expires_at=timestamp(NOW + 600), jti_revoked="someone-else")
    await authority.publish(expires_at=timestamp(NOW + 600), family_revoked="family-1")
    authority.hold_replay = asyncio.Event()
    token = [("authorization", f"Bearer {signer.mint(sid='family-1', exp=NOW + 3600)}")]
    auth: Any
    if kind == "async":
        auth = AsyncAuthInterceptor(address, issuer=ISSUER, audience="notes", clock=clock)
        starting = asyncio.ensure_future(auth.start(ready_timeout=30))
    else:
        auth = AuthInterceptor(address, issuer=ISSUER, audience="notes", clock=clock)
        starting = asyncio.ensure_future(asyncio.to_thread(auth.start, 30))
    try:
        await wait_for(lambda: auth.verifier.keys.loaded and auth.verifier.revocations.cursor == 1)
        verdict = auth.verifier.check("/notes.v1.Notes/WhoAmI", token)
        assert isinstance(verdict, Deny)
        assert verdict.error.description == "revocation state is stale"
        assert not starting.done()  # start() waits for the replay to end
        authority.hold_replay.set()
        await starting
        verdict = auth.verifier.check("/notes.v1.Notes/WhoAmI", token)
        assert isinstance(verdict, Deny)
        assert "revoked" in verdict.error.description
    finally:
        authority.hold_replay.set()
        await starting
        if kind == "async":
            await auth.close()
        else:
            await asyncio.to_thread(auth.close)


@pytest.mark.parametrize("when_stale", [WhenStale.REJECT, WhenStale.ACCEPT])
async def test_a_verifier_whose_stream_never_connected_is_stale_at_once(
    fake_authority: tuple[FakeAuthority, str],
    signer: Signer,
    clock: ManualClock,
    when_stale: WhenStale,
) -> None:
    # The keys load but the revocation stream is refused (wrong credentials, say): the verifier
    # holds no revocations, so it must not count as fresh for a whole staleness bound.
    authority, address = fake_authority
    authority.refuse_watch = True
    auth = AsyncAuthInterceptor(
        address, issuer=ISSUER, audience="notes", clock=clock, when_stale=when_stale
    )
    await auth.start(ready_timeout=0.2)  # gives up waiting for the stream, as it must
    try:
        await wait_for(lambda: authority.watch_calls > 0 and authority.publish_calls > 0)
        verdict = auth.verifier.check(
            "/notes.v1.Notes/WhoAmI", [("authorization", f"Bearer {signer.mint(exp=NOW + 3600)}")]
        )
        if when_stale is WhenStale.REJECT:
            assert isinstance(verdict, Deny)
            assert verdict.error.description == "revocation state is stale"
        else:
            assert not isinstance(verdict, Deny)
    finally:
        await auth.close()


@pytest.mark.parametrize(
    "service", [{"when_stale": WhenStale.ACCEPT, "staleness_bound": 5}], indirect=True
)
async def test_a_stale_stream_keeps_accepting_when_so_configured(
    service: tuple[Notes, Any], signer: Signer, clock: ManualClock
) -> None:
    notes, _ = service
    token = signer.mint(exp=NOW + 3600)
    clock.advance(6)
    assert await notes.status("WhoAmI", token) == grpc.StatusCode.OK


class SyncNotes(notes_pb2_grpc.NotesServicer):
    def WhoAmI(self, request: Any, context: Any) -> Any:
        claims = current_claims()
        return notes_pb2.WhoAmIResponse(subject=claims.sub, scope=sorted(claims.scope))

    def ListNotes(self, request: Any, context: Any) -> Iterator[Any]:
        for i in range(3):
            yield notes_pb2.Note(id=str(i), owner=current_claims().sub)


async def test_the_sync_interceptor_protects_a_sync_server(
    fake_authority: tuple[FakeAuthority, str], signer: Signer, clock: ManualClock
) -> None:
    _, address = fake_authority
    auth = AuthInterceptor(address, issuer=ISSUER, audience="notes", clock=clock)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[auth])
    notes_pb2_grpc.add_NotesServicer_to_server(SyncNotes(), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await asyncio.to_thread(auth.start)
    server.start()

    def calls() -> dict[str, Any]:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = notes_pb2_grpc.NotesStub(channel)
            good = (("authorization", f"Bearer {signer.mint(scope='notes:read')}"),)
            outcome: dict[str, Any] = {"who": stub.WhoAmI(notes_pb2.WhoAmIRequest(), metadata=good)}
            outcome["listed"] = list(stub.ListNotes(notes_pb2.ListNotesRequest(), metadata=good))
            check = health_pb2_grpc.HealthStub(channel).Check
            outcome["health"] = check(health_pb2.HealthCheckRequest())
            for name, token in (("missing", None), ("foreign", Signer().mint())):
                metadata = (("authorization", f"Bearer {token}"),) if token else ()
                try:
                    stub.WhoAmI(notes_pb2.WhoAmIRequest(), metadata=metadata)
                except grpc.RpcError as exc:
                    outcome[name] = (exc.code(), dict(exc.trailing_metadata()))
            try:
                no_read = (("authorization", f"Bearer {signer.mint(scope='')}"),)
                list(stub.ListNotes(notes_pb2.ListNotesRequest(), metadata=no_read))
            except grpc.RpcError as exc:
                outcome["scope"] = exc.code()
            return outcome

    try:
        outcome = await asyncio.to_thread(calls)
    finally:
        server.stop(None)
        await asyncio.to_thread(auth.close)
    assert outcome["who"].subject == "alice"
    assert [n.owner for n in outcome["listed"]] == ["alice"] * 3
    assert outcome["health"].status == health_pb2.HealthCheckResponse.SERVING
    assert outcome["missing"][0] == grpc.StatusCode.UNAUTHENTICATED
    assert outcome["foreign"][1]["oauth-error"] == "invalid_token"
    assert outcome["scope"] == grpc.StatusCode.PERMISSION_DENIED


class GatedNotes(notes_pb2_grpc.NotesServicer):
    """ListNotes sends one note, waits for the test to open the gate, then sends another, in
    each way a handler can send: async by yielding, async by `context.write`, sync by yielding."""

    def __init__(self, style: str) -> None:
        self.style = style
        self.gate = asyncio.Event()
        self.sync_gate = threading.Event()

    async def _async_list(self, request: Any, context: Any) -> AsyncIterator[Any]:
        yield notes_pb2.Note(id="1", owner=current_claims().sub)
        await self.gate.wait()
        yield notes_pb2.Note(id="2", owner=current_claims().sub)

    async def _write_list(self, request: Any, context: Any) -> None:
        await context.write(notes_pb2.Note(id="1", owner=current_claims().sub))
        await self.gate.wait()
        await context.write(notes_pb2.Note(id="2", owner=current_claims().sub))

    def _sync_list(self, request: Any, context: Any) -> Iterator[Any]:
        yield notes_pb2.Note(id="1", owner=current_claims().sub)
        assert self.sync_gate.wait(10)
        yield notes_pb2.Note(id="2", owner=current_claims().sub)

    def handler(self) -> Any:
        behavior = {"yield": self._async_list, "write": self._write_list, "sync": self._sync_list}
        return grpc.method_handlers_generic_handler(
            "notes.v1.Notes",
            {
                "ListNotes": grpc.unary_stream_rpc_method_handler(
                    behavior[self.style],
                    request_deserializer=notes_pb2.ListNotesRequest.FromString,
                    response_serializer=notes_pb2.Note.SerializeToString,
                )
            },
        )

    def open(self) -> None:
        self.gate.set()
        self.sync_gate.set()


@pytest.mark.parametrize("style", ["yield", "write", "sync"])
async def test_a_stream_ends_when_its_token_is_revoked_while_it_runs(
    fake_authority: tuple[FakeAuthority, str], signer: Signer, clock: ManualClock, style: str
) -> None:
    authority, address = fake_authority
    auth = AsyncAuthInterceptor(address, issuer=ISSUER, audience="notes", clock=clock)
    executor = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.aio.server(executor, interceptors=[auth])
    notes = GatedNotes(style)
    server.add_generic_rpc_handlers((notes.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    token = signer.mint(sub="erin", jti="jti-live")
    async with auth:
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stream = notes_pb2_grpc.NotesStub(channel).ListNotes(
                    notes_pb2.ListNotesRequest(), metadata=(("authorization", f"Bearer {token}"),)
                )
                first = await stream.read()
                await authority.publish(expires_at=timestamp(NOW + 600), jti_revoked="jti-live")
                await wait_for(lambda: revoked(auth, token))
                notes.open()
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    await stream.read()
        finally:
            notes.open()
            await server.stop(None)
            # A sync handler's thread hands grpc.aio its messages through this loop; let it
            # finish while the loop still runs them, not after the test's loop is closed.
            await asyncio.to_thread(executor.shutdown)
    assert first.owner == "erin"
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert trailers(ended.value)["oauth-error"] == "invalid_token"


async def test_the_sync_interceptor_ends_a_stream_whose_token_is_revoked(
    fake_authority: tuple[FakeAuthority, str], signer: Signer, clock: ManualClock
) -> None:
    authority, address = fake_authority
    auth = AuthInterceptor(address, issuer=ISSUER, audience="notes", clock=clock)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[auth])
    notes = GatedNotes("sync")
    server.add_generic_rpc_handlers((notes.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await asyncio.to_thread(auth.start)
    server.start()
    token = signer.mint(sub="erin", jti="jti-live")

    def first_then_rest(stream: Any) -> tuple[Any, Any]:
        first = next(stream)
        return first, stream

    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream = notes_pb2_grpc.NotesStub(channel).ListNotes(
                notes_pb2.ListNotesRequest(), metadata=(("authorization", f"Bearer {token}"),)
            )
            first, stream = await asyncio.to_thread(first_then_rest, stream)
            await authority.publish(expires_at=timestamp(NOW + 600), jti_revoked="jti-live")
            await wait_for(lambda: revoked(auth, token))
            notes.open()
            with pytest.raises(grpc.RpcError) as ended:
                await asyncio.to_thread(next, stream)
    finally:
        notes.open()
        server.stop(None)
        await asyncio.to_thread(auth.close)
    assert first.owner == "erin"
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_plain_function_returning_an_iterator_sees_its_claims() -> None:
    from authsvc_client._interceptors import _sync_with_claims

    seen: list[Any] = []

    def listing(request: Any, context: Any) -> Iterator[int]:
        seen.append(current_claims())  # runs when called, before any step
        return iter([1])

    handler = grpc.unary_stream_rpc_method_handler(listing)
    wrapped = _sync_with_claims(handler, "claims")  # type: ignore[arg-type]
    assert list(wrapped.unary_stream(None, None)) == [1]
    assert seen == ["claims"]


@pytest.mark.parametrize("interceptor_class", [AsyncAuthInterceptor, AuthInterceptor])
@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("leeway", float("nan")),  # every time comparison false: exp never checked
        ("leeway", float("inf")),  # any expired token accepted
        ("leeway", 301.0),  # beyond authsvc's own bound
        ("leeway", -1.0),
        ("staleness_bound", float("nan")),  # never stale: fails open
        ("staleness_bound", float("inf")),
        ("staleness_bound", 0.0),
        ("min_key_refresh_interval", float("nan")),
        ("min_key_refresh_interval", -1.0),
    ],
)
def test_a_setting_that_would_switch_a_check_off_is_refused_at_construction(
    interceptor_class: Any, setting: str, value: float
) -> None:
    with pytest.raises(ValueError, match=setting):
        interceptor_class("127.0.0.1:1", issuer=ISSUER, audience="notes", **{setting: value})


@pytest.mark.parametrize("interceptor_class", [AsyncAuthInterceptor, AuthInterceptor])
def test_the_bounds_of_each_setting_are_accepted(interceptor_class: Any) -> None:
    interceptor_class(
        "127.0.0.1:1",
        issuer=ISSUER,
        audience="notes",
        leeway=300,
        staleness_bound=0.5,
        min_key_refresh_interval=0,
    )
    interceptor_class("127.0.0.1:1", issuer=ISSUER, audience="notes", leeway=0)


class _CallEnded(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """The outermost interceptor: notes when a call's interceptor chain has ended (returned,
    raised, or was cancelled with the call)."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        try:
            return await continuation(details)
        finally:
            self.ended.set()


async def test_a_caller_who_hangs_up_does_not_cancel_the_key_refresh_its_kid_started(
    fake_authority: tuple[FakeAuthority, str], clock: ManualClock
) -> None:
    """A token naming an unknown `kid` takes the one refresh of the interval. The refresh ran in
    that caller's task, which grpc.aio cancels when the caller hangs up: the key authsvc had just
    published never arrived, and a token it signed was refused for the rest of the interval.
    Anyone could do it, with a made-up `kid` and no valid token, once an interval."""
    authority, address = fake_authority
    newer = Signer()
    ended = _CallEnded()
    auth = AsyncAuthInterceptor(address, issuer=ISSUER, audience="notes", clock=clock)
    server = grpc.aio.server(interceptors=[ended, auth])
    notes_pb2_grpc.add_NotesServicer_to_server(protected_service.Notes(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    async with auth:
        await server.start()
        try:
            authority.signers.append(newer)  # published, and no key event has said so
            clock.advance(11)  # past the minimum interval since the keys were loaded
            authority.hold_keys = asyncio.Event()
            authority.keys_requested.clear()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = notes_pb2_grpc.NotesStub(channel)
                made_up = (("authorization", f"Bearer {Signer().mint()}"),)
                hanging_up = stub.WhoAmI(notes_pb2.WhoAmIRequest(), metadata=made_up)
                async with asyncio.timeout(5):
                    await authority.keys_requested.wait()  # its refresh is in flight
                hanging_up.cancel()
                async with asyncio.timeout(5):
                    await ended.ended.wait()
                authority.hold_keys.set()  # authsvc answers
                await wait_for(lambda: newer.kid in auth.verifier.keys.keys, within=3)
                signed = (("authorization", f"Bearer {newer.mint()}"),)
                who = await stub.WhoAmI(notes_pb2.WhoAmIRequest(), metadata=signed, timeout=5)
        finally:
            authority.hold_keys.set()
            await server.stop(None)
    assert who.subject == "alice"


async def test_the_sync_interceptor_waits_no_longer_than_ready_timeout(
    fake_authority: tuple[FakeAuthority, str], clock: ManualClock
) -> None:
    """`start(ready_timeout)` waits at most that long, as the async one does. The sync one
    fetched the keys itself first, with the call's own 10 s timeout: with authsvc taking
    PublishKeys and not answering, `start(0.5)` (and, started lazily, the first protected call)
    was held 10 s."""
    authority, address = fake_authority
    authority.hold_keys = asyncio.Event()
    auth = AuthInterceptor(address, issuer=ISSUER, audience="notes", clock=clock)
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        await asyncio.to_thread(auth.start, 0.5)
        took = loop.time() - started
    finally:
        authority.hold_keys.set()
        await asyncio.to_thread(auth.close)
    assert took < 3.0, f"start(ready_timeout=0.5) took {took:.1f}s"


async def test_credentials_closed_under_a_running_interceptor_end_no_key_loop(
    fake_authority: tuple[FakeAuthority, str], clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A service that closes its credentials before its interceptor: the next key refresh
    raised CredentialsClosed, which ended the key loop for good, reached the caller whose
    unknown kid had asked for the refresh as UNKNOWN, and then escaped close()."""
    authority, address = fake_authority
    creds = ServiceCredentials(address, client_id="svc", client_secret="s3cret", clock=clock)
    auth = AsyncAuthInterceptor(
        address, issuer=ISSUER, audience="notes", clock=clock, credentials=creds
    )
    await auth.start()
    notes = _notes_behind(auth)
    try:
        creds.close(timeout=5)
        clock.advance(authority.token_lifetime)  # the cached token is gone: a refresh needs one
        async with notes as stub:
            made_up = (("authorization", f"Bearer {Signer().mint()}"),)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.WhoAmI(notes_pb2.WhoAmIRequest(), metadata=made_up, timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "key refresh failed unexpectedly" in caplog.text
        assert all(not task.done() for task in auth._feed._tasks)
    finally:
        await auth.close()


async def test_calls_that_arrive_while_a_lazy_start_loads_the_keys_wait_for_it(
    fake_authority: tuple[FakeAuthority, str], signer: Signer, clock: ManualClock
) -> None:
    """An async interceptor started by its first call: a second call arriving while that start
    still loaded the keys was judged with none and refused with invalid_token (and its caller
    dropped a good token), where it can wait for the same start. (A sync grpc.server runs every
    call's interceptors on its one polling thread, so there the start holds every call anyway.)"""
    authority, address = fake_authority
    authority.hold_keys = asyncio.Event()
    authority.keys_requested.clear()
    token = (("authorization", f"Bearer {signer.mint()}"),)
    auth = AsyncAuthInterceptor(address, issuer=ISSUER, audience="notes", clock=clock)
    notes = _notes_behind(auth)
    try:
        async with notes as stub:
            request = notes_pb2.WhoAmIRequest()
            first = asyncio.ensure_future(stub.WhoAmI(request, metadata=token, timeout=10))
            async with asyncio.timeout(5):
                await authority.keys_requested.wait()  # the first call's start loads the keys
            second = asyncio.ensure_future(stub.WhoAmI(request, metadata=token, timeout=10))
            # It waits for the start, or (as before) is judged at once without keys.
            lock = auth._start_lock
            await wait_for(lambda: bool(lock._waiters) or second.done())
            authority.hold_keys.set()
            answers = await asyncio.gather(first, second, return_exceptions=True)
    finally:
        authority.hold_keys.set()
        await auth.close()
    assert [getattr(answer, "subject", answer) for answer in answers] == ["alice", "alice"]


async def test_a_sync_server_waits_at_most_a_second_for_the_refresh_an_unknown_kid_started(
    fake_authority: tuple[FakeAuthority, str], signer: Signer, clock: ManualClock
) -> None:
    """grpc.server runs every call's interceptors on its one polling thread: a call with an
    unknown `kid` that waited out a PublishKeys authsvc took and did not answer (10 s) held
    every other call as long. It now waits `UNKNOWN_KID_WAIT`; the refresh finishes later."""
    authority, address = fake_authority
    newer = Signer()
    auth = AuthInterceptor(address, issuer=ISSUER, audience="notes", clock=clock)
    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[auth])
    notes_pb2_grpc.add_NotesServicer_to_server(SyncNotes(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await asyncio.to_thread(auth.start)
    server.start()
    loop = asyncio.get_running_loop()
    try:
        authority.signers.append(newer)  # published, and no key event has said so
        clock.advance(11)  # past the minimum interval since the keys were loaded
        authority.hold_keys = asyncio.Event()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = notes_pb2_grpc.NotesStub(channel)
            signed = (("authorization", f"Bearer {newer.mint()}"),)
            started = loop.time()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.WhoAmI(notes_pb2.WhoAmIRequest(), metadata=signed, timeout=20)
            took = loop.time() - started
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert took < 5.0, f"the unknown kid held the server {took:.1f}s"
            authority.hold_keys.set()  # authsvc answers at last; the refresh installs the key
            await wait_for(lambda: newer.kid in auth.verifier.keys.keys)
            who = await stub.WhoAmI(notes_pb2.WhoAmIRequest(), metadata=signed, timeout=5)
    finally:
        authority.hold_keys.set()
        server.stop(None)
        await asyncio.to_thread(auth.close)
    assert who.subject == "alice"


async def test_a_first_caller_who_hangs_up_during_a_lazy_start_leaves_it_to_finish(
    fake_authority: tuple[FakeAuthority, str], signer: Signer, clock: ManualClock
) -> None:
    """The lazy start ran in the first caller's task, which grpc.aio cancels when the caller
    hangs up: the start's PublishKeys went with it, the start counted as done all the same, and
    every later call was judged with no keys until the next refresh was allowed."""
    authority, address = fake_authority
    authority.hold_keys = asyncio.Event()
    authority.keys_requested.clear()
    ended = _CallEnded()
    auth = AsyncAuthInterceptor(address, issuer=ISSUER, audience="notes", clock=clock)
    notes = _notes_behind(ended, auth)
    token = (("authorization", f"Bearer {signer.mint()}"),)
    try:
        async with notes as stub:
            first = stub.WhoAmI(notes_pb2.WhoAmIRequest(), metadata=token)
            async with asyncio.timeout(5):
                await authority.keys_requested.wait()  # the lazy start is loading the keys
            first.cancel()
            async with asyncio.timeout(5):
                await ended.ended.wait()
            authority.hold_keys.set()
            second = await stub.WhoAmI(notes_pb2.WhoAmIRequest(), metadata=token, timeout=5)
    finally:
        authority.hold_keys.set()
        await auth.close()
    assert second.subject == "alice"


async def test_an_unknown_kid_reaching_a_closed_sync_interceptor_is_refused_cleanly(
    fake_authority: tuple[FakeAuthority, str], clock: ManualClock
) -> None:
    """A server stopped after its interceptor: a call with an unknown kid found the refresh's
    executor shut down, and its RuntimeError reached the caller as UNKNOWN."""
    _, address = fake_authority
    auth = AuthInterceptor(address, issuer=ISSUER, audience="notes", clock=clock)
    await asyncio.to_thread(auth.start)
    await asyncio.to_thread(auth.close)
    clock.advance(11)  # past the minimum interval: the made-up kid may claim a refresh
    server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=[auth])
    notes_pb2_grpc.add_NotesServicer_to_server(SyncNotes(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = notes_pb2_grpc.NotesStub(channel)
            made_up = (("authorization", f"Bearer {Signer().mint()}"),)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.WhoAmI(notes_pb2.WhoAmIRequest(), metadata=made_up, timeout=5)
    finally:
        server.stop(None)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_closing_the_sync_interceptor_ends_a_key_refresh_in_flight(
    fake_authority: tuple[FakeAuthority, str], clock: ManualClock
) -> None:
    """A refresh an unknown kid started, still waiting for authsvc, outlived close() on its own
    thread for the call's 10 s timeout (and held the process's exit as long)."""
    authority, address = fake_authority
    channel = grpc.insecure_channel(address)
    auth = AuthInterceptor(channel, issuer=ISSUER, audience="notes", clock=clock)
    try:
        await asyncio.to_thread(auth.start)
        clock.advance(11)
        authority.hold_keys = asyncio.Event()
        assert not await asyncio.to_thread(auth._feed.refresh_for_unknown_kid)  # refused in 1 s
        await asyncio.to_thread(auth.close)
        alive = [t.name for t in threading.enumerate() if "unknown-kid" in t.name]
    finally:
        authority.hold_keys.set()
        channel.close()
    assert alive == []


async def test_an_unknown_kid_refresh_racing_close_is_refused_cleanly(
    fake_authority: tuple[FakeAuthority, str], clock: ManualClock
) -> None:
    """A close() on another thread between the feed's check that it is open and its submit to
    the refresher: submit's RuntimeError reached the caller as UNKNOWN."""
    _, address = fake_authority
    auth = AuthInterceptor(address, issuer=ISSUER, audience="notes", clock=clock)
    await asyncio.to_thread(auth.start)
    clock.advance(11)
    feed = auth._feed
    claim = feed.verifier.keys.claim_refresh

    def closed_meanwhile() -> bool:  # as if close() ran on another thread at this point
        feed.close()
        return claim()

    feed.verifier.keys.claim_refresh = closed_meanwhile  # type: ignore[method-assign]
    try:
        assert await asyncio.to_thread(feed.refresh_for_unknown_kid) is False
    finally:
        await asyncio.to_thread(auth.close)


async def test_every_call_waiting_for_a_lazy_start_that_close_ends_is_refused_unavailable(
    fake_authority: tuple[FakeAuthority, str], signer: Signer, clock: ManualClock
) -> None:
    """A second call queued on the start lock when close() ended the start found no start and
    began a new one, with a new channel and feed, after close(): close() closed that feed under
    it, the first channel was never closed, and the call asserted on a feed that was gone."""
    authority, address = fake_authority
    authority.hold_keys = asyncio.Event()
    authority.keys_requested.clear()
    auth = AsyncAuthInterceptor(address, issuer=ISSUER, audience="notes", clock=clock)
    notes = _notes_behind(auth)
    token = (("authorization", f"Bearer {signer.mint()}"),)
    try:
        async with notes as stub:
            first = stub.WhoAmI(notes_pb2.WhoAmIRequest(), metadata=token, timeout=10)
            second = stub.WhoAmI(notes_pb2.WhoAmIRequest(), metadata=token, timeout=10)
            async with asyncio.timeout(5):
                await authority.keys_requested.wait()  # the first call waits for the start
            await wait_for(lambda: bool(auth._start_lock._waiters))  # the second on its lock
            await auth.close()
            codes = []
            for call in (first, second):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call
                codes.append(refused.value.code())
            left = (auth._feed, auth._channel, auth._starting)
    finally:
        authority.hold_keys.set()
        await auth.close()
    assert codes == [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    assert left == (None, None, None)  # nothing opened after close()


async def test_an_unknown_kid_refresh_that_close_ends_is_a_clean_refusal(
    fake_authority: tuple[FakeAuthority, str], clock: ManualClock
) -> None:
    """close() cancels the feed's refreshes, and a call awaiting one got the CancelledError: no
    status at all, until its deadline (for ever, without one)."""
    authority, address = fake_authority
    auth = AsyncAuthInterceptor(address, issuer=ISSUER, audience="notes", clock=clock)
    await auth.start()
    notes = _notes_behind(auth)
    clock.advance(11)
    authority.hold_keys = asyncio.Event()
    authority.keys_requested.clear()
    try:
        async with notes as stub:
            made_up = (("authorization", f"Bearer {Signer().mint()}"),)
            call = stub.WhoAmI(notes_pb2.WhoAmIRequest(), metadata=made_up, timeout=10)
            async with asyncio.timeout(5):
                await authority.keys_requested.wait()  # the unknown kid's refresh waits
            await auth.close()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
    finally:
        authority.hold_keys.set()
        await auth.close()
    assert refused.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE)


@contextlib.asynccontextmanager
async def _notes_behind(*interceptors: Any) -> AsyncIterator[Any]:
    """A stub of the notes service served on a grpc.aio server behind `interceptors`; the server
    stops (its calls cancelled) when the block ends."""
    server = grpc.aio.server(interceptors=list(interceptors))
    notes_pb2_grpc.add_NotesServicer_to_server(protected_service.Notes(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield notes_pb2_grpc.NotesStub(channel)
    finally:
        await server.stop(None)
