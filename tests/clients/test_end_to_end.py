"""The notes example protected by the interceptor, against a real authsvc on port 0.

Tokens are minted by the real authority; revocations travel through the real WatchRevocations
stream; the interceptor's clock is the authority's ManualClock, so moving time is one call.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import notes_pb2
import notes_pb2_grpc
import pytest
from authsvc_client import AuthInterceptor, ServiceCredentials, WhenStale, current_claims

from authsvc import events
from authsvc.rpc.server import stop_server
from authsvc.testing import start_authority
from tests.authsvc.calls import newest_cursor
from tests.waiting import eventually

from .deployments import (
    AUTHORITY_SETTINGS,
    NOTES_SCOPES,
    OK,
    UNAUTHENTICATED,
    Deployment,
    deployment,
    rejected_within,
)

log = logging.getLogger(__name__)


@pytest.fixture
async def deployed(tmp_path: Path) -> AsyncIterator[Deployment]:
    async with deployment(tmp_path) as deployed:
        yield deployed


def tampered(token: str, **claims: Any) -> str:
    header, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded.update(claims)
    forged = base64.urlsafe_b64encode(json.dumps(decoded).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


async def test_a_valid_token_passes_with_its_claims(deployed: Deployment) -> None:
    token = await deployed.caller_token()
    who = await deployed.notes.WhoAmI(
        notes_pb2.WhoAmIRequest(), metadata=(("authorization", f"Bearer {token}"),)
    )
    assert who.client_id == deployed.caller.client_id
    assert list(who.scope) == sorted(NOTES_SCOPES)


async def test_an_expired_token_is_unauthenticated(deployed: Deployment) -> None:
    token = await deployed.caller_token()
    assert await deployed.status(token) == OK
    settings = deployed.authority.settings
    deployed.authority.clock.advance(settings.access_token_ttl + settings.leeway + 1)
    assert await deployed.status(token) == UNAUTHENTICATED


async def test_a_token_of_another_authority_is_unauthenticated(
    deployed: Deployment, tmp_path: Path
) -> None:
    # Same issuer name, same audience, its own key ring: the signature is the only difference.
    async with start_authority(tmp_path / "foreign", **AUTHORITY_SETTINGS) as foreign:
        stranger = await foreign.create_client("reports", scopes=NOTES_SCOPES, audiences=["notes"])
        token = await foreign.access_token(stranger, scope=NOTES_SCOPES, audience=["notes"])
    assert foreign.settings.issuer == deployed.authority.settings.issuer
    assert await deployed.status(token) == UNAUTHENTICATED


async def test_a_tampered_token_is_unauthenticated(deployed: Deployment) -> None:
    token = await deployed.caller_token(scope=("notes:read",))
    assert await deployed.status(token) == OK
    assert await deployed.status(tampered(token, scope="notes:read notes:write")) == UNAUTHENTICATED
    assert await deployed.status(tampered(token, sub="mallory")) == UNAUTHENTICATED


async def test_revoked_tokens_are_unauthenticated(deployed: Deployment) -> None:
    by_jti = await deployed.caller_token()
    pair = await deployed.user_pair("alice", "phone")
    by_subject = await deployed.user_pair("bob", "laptop")
    for token in (by_jti, pair.access_token, by_subject.access_token):
        assert await deployed.status(token) == OK
    await deployed.admin.revoke(by_jti)
    await deployed.admin.revoke_family(pair.family_id, reason="lost phone")
    await deployed.admin.revoke_subject("bob", reason="log out everywhere")
    for token in (by_jti, pair.access_token, by_subject.access_token):
        await rejected_within(deployed, token)


async def test_revoking_a_client_rejects_its_tokens(deployed: Deployment) -> None:
    token = await deployed.caller_token()
    assert await deployed.status(token) == OK
    await deployed.admin.revoke_client(deployed.caller.client_id, reason="compromised")
    await rejected_within(deployed, token)


async def test_a_verifier_that_falls_behind_a_burst_of_revocations_resumes_and_holds_them_all(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # authsvc queues 20 events for a subscriber here: a subject's 30 sessions overflow it, and
    # authsvc ends the stream ("fell behind; resume from cursor") rather than drop an event.
    monkeypatch.setattr(events, "SUBSCRIBER_QUEUE", 20)
    pairs = [await deployed.user_pair("alice", f"device-{i}") for i in range(30)]
    revocations = deployed.interceptor.verifier.revocations
    held = len(revocations)
    await deployed.admin.revoke_subject("alice", reason="log out everywhere")
    newest = await newest_cursor(deployed.authority)
    await eventually(lambda: revocations.cursor == newest)
    assert "stream failed: RESOURCE_EXHAUSTED: fell behind; resume from cursor" in caplog.text
    assert len(revocations) == held + 1 + len(pairs)  # the subject and each of its families
    for pair in pairs:
        assert await deployed.status(pair.access_token) == UNAUTHENTICATED


@pytest.mark.parametrize(
    ("method", "request_message"),
    [
        pytest.param("WriteNote", notes_pb2.WriteNoteRequest(id="n"), id="proto-option"),
        pytest.param("DeleteNote", notes_pb2.DeleteNoteRequest(id="n"), id="mapping"),
    ],
)
async def test_scopes_are_enforced(deployed: Deployment, method: str, request_message: Any) -> None:
    reader = await deployed.caller_token(scope=("notes:read",))
    writer = await deployed.caller_token(scope=("notes:write",))
    denied = await deployed.status(reader, method, request_message)
    assert denied == grpc.StatusCode.PERMISSION_DENIED
    assert await deployed.status(writer, method, request_message) == OK
    assert await deployed.status(reader, "ReadNote", notes_pb2.ReadNoteRequest(id="n")) in (
        OK,
        grpc.StatusCode.NOT_FOUND,  # the handler ran: the scope was enough
    )


async def test_revoke_family_reaches_the_interceptor_within_100_ms(deployed: Deployment) -> None:
    pair = await deployed.user_pair()
    assert await deployed.status(pair.access_token) == OK  # verified and cached
    await deployed.admin.revoke_family(pair.family_id, reason="propagation test")
    took = await rejected_within(deployed, pair.access_token, seconds=1.0)
    log.warning("RevokeFamily -> rejection: %.1f ms", took * 1000)
    print(f"\nRevokeFamily returned -> interceptor rejected: {took * 1000:.1f} ms")
    assert took < 0.100


async def test_the_revocation_stream_outlives_the_token_it_was_opened_with(tmp_path: Path) -> None:
    # authsvc ends a stream whose token has expired; the interceptor's feed reconnects with a
    # fresh one and resumes from its cursor, so the revocation still arrives. (The bound is beside
    # the point: the clock jumps past it.)
    async with deployment(tmp_path, staleness_bound=10_000) as deployed:
        deployed.authority.clock.advance(deployed.authority.settings.longest_access_token_life + 1)
        pair = await deployed.user_pair()
        assert await deployed.status(pair.access_token) == OK
        await deployed.admin.revoke_family(pair.family_id, reason="after the stream's token")
        await rejected_within(deployed, pair.access_token, seconds=2.0)


async def test_a_key_rotation_under_traffic_fails_no_call(tmp_path: Path) -> None:
    # The bound is beside the point here, and each rotation moves the clock by a cache lifetime.
    # So do the feed's reconnects: tokens outlive the four moves, so that its stream is never
    # ended for an expired token mid-test (the test above covers that), which would make this
    # one depend on how fast the feed reconnects against keys promoted 50 ms after publication.
    longer = {"access_token_ttl": 3600}
    async with deployment(tmp_path, settings=longer, staleness_bound=10_000) as deployed:
        lead = deployed.authority.settings.jwks_max_age
        stop = asyncio.Event()
        outcomes: list[Any] = []
        signers: set[str] = set()

        async def traffic() -> None:
            while not stop.is_set():
                token = await deployed.caller_token()
                signers.add(json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"])
                outcomes.extend(await asyncio.gather(*(deployed.status(token) for _ in range(5))))

        async def rotations() -> None:
            for _ in range(4):
                deployed.authority.clock.advance(lead + 1)  # the pending key is now old enough
                await deployed.admin.rotate_keys()
                await asyncio.sleep(0.05)  # let traffic run on the new key (not synchronisation)
            stop.set()

        await asyncio.gather(traffic(), rotations())
    assert len(signers) >= 4, "the traffic never used the rotated keys"
    assert outcomes
    assert set(outcomes) == {OK}, f"{len(outcomes) - outcomes.count(OK)} calls failed"


@pytest.mark.parametrize(
    ("when_stale", "after_bound"),
    [
        pytest.param(WhenStale.REJECT, grpc.StatusCode.UNAVAILABLE, id="reject"),
        pytest.param(WhenStale.ACCEPT, OK, id="accept"),
    ],
)
async def test_authsvc_stopped(tmp_path: Path, when_stale: WhenStale, after_bound: Any) -> None:
    async with deployment(tmp_path, staleness_bound=30, when_stale=when_stale) as deployed:
        seen = await deployed.caller_token()
        unseen = await deployed.caller_token()  # minted before the stop, never verified yet
        assert await deployed.status(seen) == OK
        await stop_server(deployed.authority.server, grace=0)

        assert await deployed.status(seen) == OK
        assert await deployed.status(unseen) == OK  # cached keys still verify
        assert await deployed.status(tampered(unseen, sub="x")) == UNAUTHENTICATED

        deployed.authority.clock.advance(31)
        assert await deployed.status(seen) == after_bound
        assert await deployed.status(unseen) == after_bound


class SyncWhoAmI(notes_pb2_grpc.NotesServicer):
    def WhoAmI(self, request: Any, context: Any) -> Any:
        return notes_pb2.WhoAmIResponse(subject=current_claims().sub)


async def test_the_sync_interceptor_on_a_sync_server(deployed: Deployment) -> None:
    running = deployed.authority
    stream_client = await running.create_client("sync-notes", audiences=["authsvc"])
    credentials = ServiceCredentials(
        running.address,
        client_id=stream_client.client_id,
        client_secret=stream_client.client_secret,
        audience=["authsvc"],
        clock=running.clock,
    )
    auth = AuthInterceptor(
        running.address,
        issuer=running.settings.issuer,
        audience="notes",
        credentials=credentials,
        clock=running.clock,
    )
    server = grpc.server(ThreadPoolExecutor(max_workers=4), interceptors=[auth])
    notes_pb2_grpc.add_NotesServicer_to_server(SyncWhoAmI(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await asyncio.to_thread(auth.start)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    who_am_i = notes_pb2_grpc.NotesStub(channel).WhoAmI

    def status(token: str) -> Any:
        try:
            who_am_i(notes_pb2.WhoAmIRequest(), metadata=(("authorization", f"Bearer {token}"),))
        except grpc.RpcError as exc:
            return exc.code()
        return OK

    try:
        pair = await deployed.user_pair()
        assert await asyncio.to_thread(status, pair.access_token) == OK
        await deployed.admin.revoke_family(pair.family_id)
        loop = asyncio.get_running_loop()
        started = loop.time()
        while await asyncio.to_thread(status, pair.access_token) == OK:
            assert loop.time() - started < 2, "revocation never reached the sync interceptor"
        assert await asyncio.to_thread(status, "not-a-token") == UNAUTHENTICATED
    finally:
        channel.close()
        server.stop(None)
        await asyncio.to_thread(auth.close)
        credentials.close()
