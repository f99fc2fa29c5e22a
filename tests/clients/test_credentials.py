"""ServiceCredentials against the real authsvc: single-flight fetching, renewal before expiry, and
one retry with a fresh token on UNAUTHENTICATED, on aio and sync channels."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import notes_pb2
import notes_pb2_grpc
import pytest
from authsvc_client import InvalidClient, ServiceCredentials, TemporarilyUnavailable

from authsvc.rpc.server import stop_server

from .deployments import Deployment, deployment, rejected_within


class CountingInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Counts the ClientCredentials requests that leave for authsvc."""

    def __init__(self) -> None:
        self.fetches = 0
        self._lock = threading.Lock()

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        if details.method.endswith("/ClientCredentials"):
            with self._lock:
                self.fetches += 1
        return continuation(details, request)


@pytest.fixture
async def deployed(tmp_path: Path) -> AsyncIterator[Deployment]:
    async with deployment(tmp_path) as deployed:
        yield deployed


@pytest.fixture
def counter() -> CountingInterceptor:
    return CountingInterceptor()


@pytest.fixture
def credentials(deployed: Deployment, counter: CountingInterceptor) -> Any:
    channel = grpc.intercept_channel(grpc.insecure_channel(deployed.authority.address), counter)
    creds = ServiceCredentials(
        channel,
        client_id=deployed.caller.client_id,
        client_secret=deployed.caller.client_secret,
        scope=["notes:read"],
        audience=["notes"],
        clock=deployed.authority.clock,
    )
    yield creds
    channel.close()


async def who_am_i(channel: grpc.aio.Channel) -> Any:
    return await notes_pb2_grpc.NotesStub(channel).WhoAmI(notes_pb2.WhoAmIRequest(), timeout=10)


async def test_one_hundred_concurrent_calls_make_one_token_request(
    deployed: Deployment, credentials: ServiceCredentials, counter: CountingInterceptor
) -> None:
    local = grpc.local_channel_credentials()
    async with credentials.aio_secure_channel(deployed.notes_address, local) as channel:
        answers = await asyncio.gather(*(who_am_i(channel) for _ in range(100)))
    assert {a.client_id for a in answers} == {deployed.caller.client_id}
    assert counter.fetches == 1


async def test_concurrent_threads_share_one_fetch(
    deployed: Deployment, credentials: ServiceCredentials, counter: CountingInterceptor
) -> None:
    # Threads, because the token fetch blocks; authsvc runs on this test's event loop.
    def hundred_at_once() -> set[str]:
        with ThreadPoolExecutor(max_workers=32) as pool:
            return set(pool.map(lambda _: credentials.token(), range(100)))

    tokens = await asyncio.to_thread(hundred_at_once)
    assert len(tokens) == 1
    assert counter.fetches == 1


async def test_a_token_is_renewed_after_most_of_its_lifetime(
    deployed: Deployment, credentials: ServiceCredentials, counter: CountingInterceptor
) -> None:
    ttl = deployed.authority.settings.access_token_ttl
    first = await credentials.token_async()
    deployed.authority.clock.advance(ttl * 0.8 - 5)
    assert await credentials.token_async() == first
    assert counter.fetches == 1
    deployed.authority.clock.advance(6)
    assert await credentials.token_async() != first
    assert counter.fetches == 2


async def test_unauthenticated_is_retried_once_with_a_fresh_token_on_aio(
    deployed: Deployment, credentials: ServiceCredentials, counter: CountingInterceptor
) -> None:
    local = grpc.local_channel_credentials()
    async with credentials.aio_secure_channel(deployed.notes_address, local) as channel:
        await who_am_i(channel)
        stale = await credentials.token_async()
        await revoke_client_tokens(deployed, stale)
        answer = await who_am_i(channel)
    assert answer.client_id == deployed.caller.client_id
    assert counter.fetches == 2


async def test_unauthenticated_is_retried_once_with_a_fresh_token_on_sync(
    deployed: Deployment, credentials: ServiceCredentials, counter: CountingInterceptor
) -> None:
    local = grpc.local_channel_credentials()
    channel = credentials.secure_channel(deployed.notes_address, local)
    call = notes_pb2_grpc.NotesStub(channel).WhoAmI
    try:
        await asyncio.to_thread(call, notes_pb2.WhoAmIRequest(), timeout=10)
        await revoke_client_tokens(deployed, credentials.token())
        answer = await asyncio.to_thread(call, notes_pb2.WhoAmIRequest(), timeout=10)
    finally:
        channel.close()
    assert answer.client_id == deployed.caller.client_id
    assert counter.fetches == 2


async def revoke_client_tokens(deployed: Deployment, token: str) -> None:
    """Revoke every token of the caller so far, wait until notes refuses `token`, then move past
    the revocation's second (tokens of that second count as revoked too)."""
    await deployed.admin.revoke_client(deployed.caller.client_id, reason="rotate credentials")
    await rejected_within(deployed, token)
    deployed.authority.clock.advance(1)


async def test_a_failed_fetch_raises_the_oauth_error(deployed: Deployment) -> None:
    creds = ServiceCredentials(
        deployed.authority.address,
        client_id=deployed.caller.client_id,
        client_secret="asc_wrong",
        clock=deployed.authority.clock,
    )
    try:
        with pytest.raises(InvalidClient):
            await creds.token_async()
        local = grpc.local_channel_credentials()
        async with creds.aio_secure_channel(deployed.notes_address, local) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await who_am_i(channel)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "asc_wrong" not in repr(creds)
        assert "asc_wrong" not in (caught.value.details() or "")
    finally:
        creds.close()


async def test_a_failed_renewal_keeps_using_the_token_until_it_expires(
    deployed: Deployment, credentials: ServiceCredentials, counter: CountingInterceptor
) -> None:
    ttl = deployed.authority.settings.access_token_ttl
    first = await credentials.token_async()
    await stop_server(deployed.authority.server, grace=0)
    deployed.authority.clock.advance(ttl * 0.9)  # due for renewal, 60 s of life left
    assert await credentials.token_async() == first
    assert counter.fetches == 2  # the renewal was tried
    deployed.authority.clock.advance(ttl * 0.1)  # now expired: nothing to fall back on
    with pytest.raises(TemporarilyUnavailable):
        await credentials.token_async()
