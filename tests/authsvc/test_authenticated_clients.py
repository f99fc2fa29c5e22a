"""The cache of authenticated clients never outlives a secret rotation or a disable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_client.v1 import authsvc_pb2_grpc

from authsvc import client_registry
from authsvc.authenticated_clients import AuthenticatedClients
from authsvc.authority import open_authority
from authsvc.client_registry import RegisteredClient
from authsvc.clock import ManualClock
from authsvc.errors import InvalidClient, TemporarilyUnavailable
from authsvc.storage.records import ClientRecord, RevocationEventRecord
from authsvc.testing import RunningAuthority

DIGEST = b"d" * 32
OTHER_DIGEST = b"e" * 32


def _record(client_id: str = "client-1") -> ClientRecord:
    return ClientRecord(
        client_id=client_id,
        name=client_id,
        public=False,
        first_party=False,
        grant_types=("client_credentials",),
        redirect_uris=(),
        scopes=(),
        audiences=(),
        created_at=0.0,
        disabled_at=None,
        secret_digest=DIGEST,
    )


def _event(kind: str, value: str = "client-1") -> RevocationEventRecord:
    return RevocationEventRecord(cursor=1, occurred_at=0, expires_at=10, kind=kind, value=value)


def _remembered(clock: ManualClock, *records: ClientRecord) -> AuthenticatedClients:
    cache = AuthenticatedClients(clock, max_age=10)
    for record in records:
        cache.remember(record, DIGEST, generation=cache.generation, read_at=clock.now())
    return cache


# The cache alone


def test_a_remembered_client_answers_only_the_same_secret() -> None:
    cache = _remembered(ManualClock(1000.0), _record())
    assert cache.get("client-1", DIGEST) == _record()
    assert cache.get("client-1", OTHER_DIGEST) is None
    assert cache.get("client-2", DIGEST) is None


def test_an_entry_is_forgotten_max_age_after_its_read() -> None:
    clock = ManualClock(1000.0)
    cache = _remembered(clock, _record())
    clock.advance(9.9)
    assert cache.get("client-1", DIGEST) is not None
    clock.advance(0.1)
    assert cache.get("client-1", DIGEST) is None
    assert len(cache) == 0


@pytest.mark.parametrize(
    "kind",
    [pytest.param("client", id="client-revoked"), pytest.param("client_secret", id="secret")],
)
def test_a_client_change_drops_that_client_only(kind: str) -> None:
    cache = _remembered(ManualClock(1000.0), _record("client-1"), _record("client-2"))
    cache.forget(_event(kind, "client-1"))
    assert cache.get("client-1", DIGEST) is None
    assert cache.get("client-2", DIGEST) is not None


@pytest.mark.parametrize("kind", ["family", "jti", "subject", "key"])
def test_other_events_drop_nothing(kind: str) -> None:
    cache = _remembered(ManualClock(1000.0), _record())
    cache.forget(_event(kind))
    assert cache.get("client-1", DIGEST) is not None


def test_a_read_that_began_before_a_change_is_not_remembered() -> None:
    clock = ManualClock(1000.0)
    cache = AuthenticatedClients(clock)
    generation = cache.generation  # the read of the old secret begins
    cache.forget(_event("client_secret"))  # the rotation commits meanwhile
    cache.remember(_record(), DIGEST, generation=generation, read_at=clock.now())
    assert cache.get("client-1", DIGEST) is None


def test_memory_is_bounded() -> None:
    clock = ManualClock(1000.0)
    cache = AuthenticatedClients(clock, max_entries=3)
    for i in range(7):
        cache.remember(_record(f"c{i}"), DIGEST, generation=0, read_at=clock.now())
    assert len(cache) <= 3
    assert cache.get("c6", DIGEST) is not None


# Through the authority, on both databases


async def _authenticates(running: RunningAuthority, client: RegisteredClient) -> bool:
    try:
        await running.authority.authenticate_client(client.client_id, client.client_secret)
    except InvalidClient:
        return False
    return True


async def test_a_rotated_secret_fails_at_once(running: RunningAuthority) -> None:
    client = await running.create_client("svc")
    assert await _authenticates(running, client)
    assert len(running.authority.ctx.authenticated_clients) == 1
    rotated = await running.authority.rotate_client_secret(client.client_id)
    assert not await _authenticates(running, client)
    assert await _authenticates(running, rotated)
    with pytest.raises(InvalidClient):
        await running.authority.client_credentials(
            client_id=client.client_id, client_secret=client.client_secret
        )


async def test_a_disabled_client_fails_at_once(running: RunningAuthority) -> None:
    client = await running.create_client("svc")
    assert await _authenticates(running, client)
    await running.authority.revoke_client(client.client_id, disable=True)
    assert not await _authenticates(running, client)


async def test_a_client_disabled_while_its_authentication_reads_gets_no_token(
    running: RunningAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read sees the client enabled, the disable commits and reaches this replica before the
    read returns (PostgreSQL awaits the server): the token would be signed after the revocation,
    its `iat` past the client's "not before", and verify for its whole life."""
    client = await running.create_client("svc", grant_types=["client_credentials"])

    async def disabled_meanwhile(read: int, client_id: str) -> None:
        if read == 1:
            await running.authority.revoke_client(client_id, disable=True)

    reads = _changing_during_reads(monkeypatch, disabled_meanwhile)
    with pytest.raises(InvalidClient):
        await running.authority.client_credentials(
            client_id=client.client_id, client_secret=client.client_secret
        )
    assert len(reads) == 2
    assert len(running.authority.ctx.authenticated_clients) == 0


async def test_an_authentication_overtaken_at_every_read_gives_no_token(
    running: RunningAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other clients change during the first reads, this one is disabled during the last: the
    last read may be stale like the others, so no token comes of it."""
    target = await running.create_client("svc", grant_types=["client_credentials"])
    last = client_registry.AUTHENTICATION_READS
    others = [await running.create_client(f"other-{i}") for i in range(last - 1)]

    async def overtaken(read: int, client_id: str) -> None:
        if read < last:
            await running.authority.rotate_client_secret(others[read - 1].client_id)
        elif read == last:
            await running.authority.revoke_client(client_id, disable=True)

    reads = _changing_during_reads(monkeypatch, overtaken)
    with pytest.raises(TemporarilyUnavailable):
        await running.authority.client_credentials(
            client_id=target.client_id, client_secret=target.client_secret
        )
    assert len(reads) == last


def _changing_during_reads(
    monkeypatch: pytest.MonkeyPatch, change: Callable[[int, str], Awaitable[None]]
) -> list[str]:
    """After each authentication's database read, before it returns, `change(n, client_id)` for
    the n-th read (from 1): as if a change committed while the read was in flight. The client
    ids of the reads begun, in order."""
    read = client_registry.authenticate_client
    reads: list[str] = []

    async def read_then_change(tx: Any, client_id: str, client_secret: str) -> ClientRecord:
        reads.append(client_id)
        record = await read(tx, client_id, client_secret)
        await change(len(reads), client_id)
        return record

    monkeypatch.setattr(client_registry, "authenticate_client", read_then_change)
    return reads


async def test_a_rotation_by_another_process_reaches_this_one_through_the_feed(
    running: RunningAuthority,
) -> None:
    client = await running.create_client("svc")
    assert await _authenticates(running, client)
    # Another replica, or the CLI, on the same database.
    other = await open_authority(running.settings, ManualClock(time.time()))
    try:
        await other.rotate_client_secret(client.client_id)
    finally:
        await other.close()
    await running.authority.ctx.feed.catch_up()  # what the tailer does when woken or polled
    assert not await _authenticates(running, client)


async def test_secret_rotations_are_not_streamed_to_verifiers(running: RunningAuthority) -> None:
    client = await running.create_client("svc")
    await running.authority.rotate_client_secret(client.client_id)
    await running.authority.revoke_client(client.client_id)
    metadata = (("authorization", f"Bearer {await running.admin_token()}"),)
    async with grpc.aio.insecure_channel(running.address) as channel:
        stream = authsvc_pb2_grpc.TokenServiceStub(channel).WatchRevocations(
            pb.WatchRevocationsRequest(cursor=0), metadata=metadata
        )

        async def replay() -> list[str | None]:
            kinds = []
            while (kind := (await stream.read()).WhichOneof("event")) != "heartbeat":
                kinds.append(kind)
            return kinds

        kinds = await asyncio.wait_for(replay(), 5)
        stream.cancel()
    assert "client_revoked" in kinds
    assert None not in kinds
