"""AuthClient and AsyncAuthClient: twins covering every RPC, against the real authsvc, and what they
do when authsvc refuses their token."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from authsvc_client import (
    AsyncAuthClient,
    AuthClient,
    AuthError,
    InsufficientScope,
    InvalidClient,
    InvalidGrant,
    InvalidToken,
    NotFound,
    ServiceCredentials,
)
from authsvc_client.v1 import authsvc_pb2

from authsvc.testing import RunningAuthority, start_authority


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


RPCS = [
    snake(method.name)
    for service in authsvc_pb2.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]


@pytest.mark.parametrize("name", RPCS)
def test_every_rpc_has_a_method_of_the_same_shape_in_both_clients(name: str) -> None:
    sync_method = getattr(AuthClient, name)
    async_method = getattr(AsyncAuthClient, name)
    assert inspect.signature(sync_method).parameters == inspect.signature(async_method).parameters
    assert sync_method.__doc__ == async_method.__doc__
    assert sync_method.__doc__


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[RunningAuthority]:
    async with start_authority(tmp_path, heartbeat_interval=0.2) as running:
        yield running


@pytest.fixture
async def credentials(running: RunningAuthority) -> AsyncIterator[ServiceCredentials]:
    credentials = ServiceCredentials(
        running.address,
        client_id=running.admin.client_id,
        client_secret=running.admin.client_secret,
        audience=[running.settings.audience],
        clock=running.clock,
    )
    yield credentials
    credentials.close()


@pytest.fixture
async def admin(
    running: RunningAuthority, credentials: ServiceCredentials
) -> AsyncIterator[AsyncAuthClient]:
    async with AsyncAuthClient.connect(running.address, credentials=credentials) as client:
        yield client


class OnAThread:
    """A sync AuthClient seen through awaitables, so one scenario drives both twins. (authsvc
    runs on this test's event loop, so blocking calls must leave it.)"""

    def __init__(self, client: AuthClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        return lambda *args, **kwargs: asyncio.to_thread(method, *args, **kwargs)


async def revocation_kinds(client: Any, wanted: set[str]) -> set[str]:
    """The kinds of event the revocation stream replays from cursor 0, until `wanted` is seen."""
    kinds: set[str] = set()
    if isinstance(client, OnAThread):

        def replay() -> set[str]:
            events = client._client.watch_revocations(0)
            for event in events:
                kinds.add(event.WhichOneof("event"))
                if wanted <= kinds:
                    break
            events.close()
            return kinds

        return await asyncio.to_thread(replay)
    events = client.watch_revocations(0)
    async for event in events:
        kinds.add(event.WhichOneof("event"))
        if wanted <= kinds:
            break
    await events.aclose()
    return kinds


@pytest.fixture(params=["async", "sync"])
async def either_client(
    request: pytest.FixtureRequest,
    running: RunningAuthority,
    admin: AsyncAuthClient,
    credentials: ServiceCredentials,
) -> AsyncIterator[Any]:
    """The async client, or the sync one on a thread, both authenticated by `credentials`."""
    if request.param == "async":
        yield admin
        return
    sync_client = AuthClient.connect(running.address, credentials=credentials)
    try:
        yield OnAThread(sync_client)
    finally:
        sync_client.close()


async def test_every_rpc_through_both_clients(
    running: RunningAuthority, either_client: Any
) -> None:
    await every_rpc(running, either_client)


async def every_rpc(running: RunningAuthority, admin: Any) -> None:
    web = await running.create_client(
        "web",
        grant_types=["authorization_code", "refresh_token"],
        scopes=["notes:read"],
        audiences=["notes"],
        redirect_uris=["https://web.test/cb"],
        first_party=True,
    )
    service = await running.create_client("svc", scopes=["notes:read"], audiences=["notes"])
    subject = await running.create_user("alice", "correct horse battery staple")

    # AuthorizationService, the code flow the gateway runs.
    assert (await admin.authenticate_client(web.client_id, web.client_secret)).name == "web"
    assert list((await admin.get_client(web.client_id)).redirect_uris) == ["https://web.test/cb"]
    login = await admin.authenticate_user("alice", "correct horse battery staple")
    assert login.subject == subject
    verifier = "v" * 64
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    code = await admin.create_authorization_code(
        web.client_id, "https://web.test/cb", subject, challenge.decode(), scope=["notes:read"]
    )
    first = await admin.exchange_authorization_code(
        web.client_id, code.code, "https://web.test/cb", verifier
    )
    assert first.refresh_token.startswith("asrt_")

    # TokenService.
    pair = await admin.issue_token_pair(subject, web.client_id, device_id="laptop")
    rotated = await admin.rotate(pair.refresh_token, client_id=web.client_id)
    assert rotated.family_id == pair.family_id
    verified = await admin.verify(rotated.access_token, "notes")
    assert verified.claims.sub == subject
    assert (await admin.introspect(rotated.access_token)).active
    sessions = await admin.list_sessions(subject)
    assert {s.family_id for s in sessions.sessions} >= {pair.family_id, first.family_id}
    assert (await admin.revoke_family(pair.family_id, reason="test")).revoked
    keys = await admin.publish_keys()
    assert keys.keys
    assert keys.max_age_seconds > 0
    issued = await admin.client_credentials(service.client_id, service.client_secret)
    assert issued.token_type == "Bearer"
    await admin.revoke(issued.access_token)
    assert (await admin.revoke_subject(subject, reason="log out everywhere")).families_revoked >= 1
    await admin.revoke_client(service.client_id, reason="retired", disable=True)
    rotation = await admin.rotate_keys()
    assert rotation.active_kid

    wanted = {"family_revoked", "subject_revoked", "client_revoked", "jti_revoked", "key_changed"}
    assert await revocation_kinds(admin, wanted) == wanted


async def test_errors_carry_the_oauth_code(
    running: RunningAuthority, admin: AsyncAuthClient
) -> None:
    with pytest.raises(InvalidGrant) as reused:
        await admin.rotate("asrt_" + "A" * 43)
    assert reused.value.status == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(InvalidClient):
        await admin.client_credentials(running.admin.client_id, "asc_wrong")
    with pytest.raises(NotFound):
        await admin.get_client("nobody")
    async with AsyncAuthClient.connect(running.address) as anonymous:
        with pytest.raises(InvalidToken) as caught:
            await anonymous.rotate_keys()
        assert caught.value.status == grpc.StatusCode.UNAUTHENTICATED
    weak = await running.create_client("weak", audiences=[running.settings.audience])
    token = await running.access_token(weak, audience=[running.settings.audience])
    async with AsyncAuthClient.connect(running.address, access_token=token) as client:
        with pytest.raises(InsufficientScope):
            await client.rotate_keys()


async def test_the_sync_client_on_its_own_thread(running: RunningAuthority) -> None:
    token = await running.admin_token()
    service = await running.create_client("svc", scopes=["notes:read"], audiences=["notes"])

    def use() -> tuple[int, str, str]:
        with AuthClient.connect(running.address, access_token=token) as client:
            keys = client.publish_keys()
            issued = client.client_credentials(service.client_id, service.client_secret)
            claims = client.verify(issued.access_token, "notes").claims
            try:
                client.get_client("nobody")
            except NotFound as exc:
                missing = exc.error
            events = client.watch_revocations(0)
            client.revoke(issued.access_token)
            revoked = next(e.jti_revoked for e in events if e.WhichOneof("event") == "jti_revoked")
            events.close()
            return len(keys.keys), claims.client_id, f"{missing}/{revoked == claims.jti}"

    count, client_id, rest = await asyncio.to_thread(use)
    assert count >= 1
    assert client_id == service.client_id
    assert rest == "not_found/True"


async def test_a_stream_resumed_with_another_databases_cursor_is_out_of_range(
    admin: AsyncAuthClient,
) -> None:
    events = admin.watch_revocations(0)
    first = await anext(events)
    await events.aclose()
    stream_id, cursor = first.stream_id, first.cursor
    assert stream_id
    resumed = admin.watch_revocations(cursor, stream_id=stream_id)
    assert (await anext(resumed)).stream_id == stream_id
    await resumed.aclose()
    with pytest.raises(AuthError) as raised:
        await anext(admin.watch_revocations(cursor + 1, stream_id="another-database"))
    assert raised.value.status == grpc.StatusCode.OUT_OF_RANGE
    assert "from cursor 0" in raised.value.description


async def refused_within(running: RunningAuthority, token: str, seconds: float = 2.0) -> None:
    """Call authsvc with `token` until it is refused (bounded), then move past the second of the
    revocation (tokens of that second count as revoked too)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with AsyncAuthClient.connect(running.address, access_token=token) as fixed:
        while True:
            try:
                await fixed.get_client(running.admin.client_id)
            except InvalidToken:
                break
            if loop.time() - started > seconds:
                raise AssertionError(f"token still accepted after {seconds}s")
    running.clock.advance(1)


async def test_a_refused_token_is_dropped_so_the_next_call_uses_a_fresh_one(
    running: RunningAuthority, either_client: Any, credentials: ServiceCredentials
) -> None:
    await either_client.get_client(running.admin.client_id)
    refused, fetched = await credentials.token_async(), credentials.generation
    await either_client.revoke_client(running.admin.client_id, reason="rotate credentials")
    await refused_within(running, refused)
    with pytest.raises(InvalidToken) as caught:  # not retried: the caller decides that
        await either_client.get_client(running.admin.client_id)
    assert caught.value.status == grpc.StatusCode.UNAUTHENTICATED
    answer = await either_client.get_client(running.admin.client_id)
    assert answer.client_id == running.admin.client_id
    assert credentials.generation == fetched + 1  # one fresh token, kept for what follows
    assert await credentials.token_async() != refused
    await either_client.get_client(running.admin.client_id)
    assert credentials.generation == fetched + 1


async def test_a_wrong_client_secret_in_the_request_keeps_the_callers_token(
    running: RunningAuthority, either_client: Any, credentials: ServiceCredentials
) -> None:
    await either_client.get_client(running.admin.client_id)
    token, fetched = await credentials.token_async(), credentials.generation
    with pytest.raises(InvalidClient) as caught:  # UNAUTHENTICATED, about the request
        await either_client.authenticate_client(running.admin.client_id, "asc_wrong")
    assert caught.value.status == grpc.StatusCode.UNAUTHENTICATED
    assert credentials.generation == fetched
    assert await credentials.token_async() == token


async def test_a_fixed_access_token_that_is_refused_stays_refused(
    running: RunningAuthority,
) -> None:
    token = await running.admin_token()
    async with AsyncAuthClient.connect(running.address, access_token=token) as fixed:
        await fixed.get_client(running.admin.client_id)
        await fixed.revoke_client(running.admin.client_id, reason="rotate credentials")
        await refused_within(running, token)
        with pytest.raises(InvalidToken):
            await fixed.get_client(running.admin.client_id)
