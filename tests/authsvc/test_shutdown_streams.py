"""A stop with verifiers subscribed: their revocation streams end cleanly at once (so they
resume on another replica), while unary calls in flight still get the grace. Before, every
rolling restart waited the whole grace for streams that never end, then cut them.

The grace here is an hour: a stop that completes within BOUND did not wait for it.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
import pytest
from authsvc_client.v1 import authsvc_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authsvc.rpc.server import stop_server
from authsvc.storage.records import FamilyRecord
from authsvc.testing import RunningAuthority
from tests.authsvc.calls import Metadata
from tests.authsvc.test_server import _until_refused
from tests.fleet import Fleet, Replica
from tests.waiting import eventually

BOUND = 20.0  # seconds for anything to happen before a test gives up
GRACE = 3600.0


async def ended_cleanly(stream: grpc.aio.UnaryStreamCall) -> grpc.StatusCode:
    """Read the stream to its end (bounded); the status it ended with."""
    async with asyncio.timeout(BOUND):
        while await stream.read() is not grpc.aio.EOF:
            pass
        code: grpc.StatusCode = await stream.code()
    return code


async def caught_up(stream: grpc.aio.UnaryStreamCall) -> None:
    """Read the backlog up to its heartbeat: the stream is live (bounded)."""
    async with asyncio.timeout(BOUND):
        while not (await stream.read()).HasField("heartbeat"):
            pass


async def test_a_stop_ends_revocation_streams_at_once_and_serves_unary_calls_in_flight(
    running: RunningAuthority, tokens, admin: Metadata, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    list_sessions = running.authority.list_sessions

    async def held(subject: str) -> list[FamilyRecord]:
        entered.set()
        await release.wait()
        return await list_sessions(subject)

    monkeypatch.setattr(running.authority, "list_sessions", held)
    stream = tokens.WatchRevocations(pb.WatchRevocationsRequest(cursor=0), metadata=admin)
    await caught_up(stream)
    in_flight = asyncio.ensure_future(
        tokens.ListSessions(pb.ListSessionsRequest(subject="alice"), metadata=admin)
    )
    await asyncio.wait_for(entered.wait(), BOUND)

    stopping = asyncio.ensure_future(
        stop_server(running.server, GRACE, end_streams=running.authority.end_subscriptions)
    )
    assert await ended_cleanly(stream) == grpc.StatusCode.OK
    await _until_refused(running.address)  # no verifier reconnects to this replica
    assert not stopping.done()  # the unary call in flight holds the stop, within its grace

    release.set()
    assert list((await asyncio.wait_for(in_flight, BOUND)).sessions) == []
    await asyncio.wait_for(stopping, BOUND)  # and the stop ends with it


def _sqlite_fleet(tmp_path: Path, **settings: str) -> Fleet:
    """`authsvc serve` processes on a SQLite file of the test's own."""
    return Fleet(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'authsvc.db'}", **settings)


async def _stopped_cleanly(replica: Replica) -> None:
    """The process exits 0 (bounded) after logging its last word."""
    assert await asyncio.wait_for(replica.process.wait(), BOUND) == 0, replica.log_text()
    assert '"stopped"' in replica.log_text()


async def test_authsvc_serve_ends_revocation_streams_and_exits_without_waiting_the_grace(
    tmp_path: Path,
) -> None:
    fleet = _sqlite_fleet(tmp_path, shutdown_grace=str(GRACE))
    try:
        await fleet.cli("migrate")
        await fleet.create_admin()
        replica = await fleet.start("a")
        stream = replica.tokens.WatchRevocations(
            pb.WatchRevocationsRequest(cursor=0), metadata=await fleet.admin_metadata(replica)
        )
        await caught_up(stream)

        replica.process.send_signal(signal.SIGTERM)
        assert await ended_cleanly(stream) == grpc.StatusCode.OK
        await _stopped_cleanly(replica)
    finally:
        await fleet.stop_all()


async def test_with_a_drain_authsvc_serve_says_not_serving_and_still_serves_until_told_again(
    tmp_path: Path,
) -> None:
    # AUTHSVC_SHUTDOWN_DRAIN: load balancers that poll health see NOT_SERVING and stop sending
    # calls before the replica refuses them. An hour here: the second signal ends it.
    fleet = _sqlite_fleet(tmp_path, shutdown_drain=str(GRACE))
    try:
        await fleet.cli("migrate")
        replica = await fleet.start("a")
        health = health_pb2_grpc.HealthStub(replica.channel)

        async def not_serving() -> bool:
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            return answer.status == health_pb2.HealthCheckResponse.NOT_SERVING

        replica.process.send_signal(signal.SIGTERM)
        await eventually(not_serving, within=BOUND)
        keys = await replica.tokens.PublishKeys(pb.PublishKeysRequest(), timeout=5)
        assert keys.keys  # still answering
        assert replica.running
        assert '"draining"' in replica.log_text()

        replica.process.send_signal(signal.SIGTERM)
        await _stopped_cleanly(replica)
    finally:
        await fleet.stop_all()
