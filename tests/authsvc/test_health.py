"""Health that reflects the database: the verdict as a pure function, the probe against real
databases (broken, too slow, stopped), and what a real client reads with Check and Watch.

Tests call `probe_now()` instead of waiting for the probe interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authsvc.health import Outcome, Probe, Verdict, decide
from authsvc.testing import RunningAuthority, start_authority
from tests.databases import asyncpg_dsn, table_renamed
from tests.private_postgres import PrivatePostgres
from tests.waiting import eventually

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
NAMES = ["", "authsvc.v1.TokenService", "authsvc.v1.AuthorizationService"]
BOUND = 20.0  # seconds for anything to happen before a test gives up
ANSWERED = Probe(Outcome.ANSWERED, 0.001)


# the verdict


@pytest.mark.parametrize(
    ("last", "shutting_down", "reason"),
    [
        pytest.param(
            Probe(Outcome.FAILED, 0.01, "the database is unreachable, retry later"),
            False,
            "the database probe failed: the database is unreachable, retry later",
            id="probe-failed",
        ),
        pytest.param(
            Probe(Outcome.TIMED_OUT, 2.0),
            False,
            "the database did not answer within 2.0 s",
            id="probe-timed-out",
        ),
        pytest.param(ANSWERED, True, "shutting down", id="shutting-down-database-fine"),
        pytest.param(None, True, "shutting down", id="shutting-down-never-probed"),
        pytest.param(Probe(Outcome.FAILED, 0.01, "x"), True, "shutting down", id="shutting-down"),
    ],
)
def test_each_way_to_not_serving(last: Probe | None, shutting_down: bool, reason: str) -> None:
    assert decide(last, shutting_down=shutting_down) == Verdict(False, reason)


@pytest.mark.parametrize(
    "last",
    [
        pytest.param(ANSWERED, id="database-answered"),
        # Before the first probe, or with the probe off: the process could not have started
        # without its database, so it alone decides.
        pytest.param(None, id="not-probed"),
    ],
)
def test_serving(last: Probe | None) -> None:
    assert decide(last, shutting_down=False).serving


# the probe, and gRPC health


async def _statuses(channel: grpc.aio.Channel) -> list[int]:
    health = health_pb2_grpc.HealthStub(channel)
    return [
        (await health.Check(health_pb2.HealthCheckRequest(service=name))).status for name in NAMES
    ]


@asynccontextmanager
async def watching(channel: grpc.aio.Channel) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """A Watch of the overall service (""), as balancers follow a server; what it yields reads
    the next status the server sends (each is a change)."""
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))

    async def next_status() -> int:
        return int((await asyncio.wait_for(watch.read(), BOUND)).status)

    try:
        yield next_status
    finally:
        watch.cancel()


async def test_an_answered_probe_keeps_every_service_serving(
    running: RunningAuthority, channel: grpc.aio.Channel
) -> None:
    verdict = await running.authority.health.probe_now()
    assert verdict == Verdict(True, "the database answered")
    assert running.authority.health.last is not None
    assert running.authority.health.last.outcome is Outcome.ANSWERED
    assert await _statuses(channel) == [SERVING] * len(NAMES)


async def test_a_broken_database_is_not_serving_until_it_answers_again(
    running: RunningAuthority, channel: grpc.aio.Channel
) -> None:
    health = running.authority.health
    async with watching(channel) as next_status:
        assert await next_status() == SERVING
        async with table_renamed(running.settings.database_url, "event_stream"):
            assert not (await health.probe_now()).serving
            assert await next_status() == NOT_SERVING
            assert await _statuses(channel) == [NOT_SERVING] * len(NAMES)
        assert (await health.probe_now()).serving  # no restart, no other step
        assert await next_status() == SERVING
        assert await _statuses(channel) == [SERVING] * len(NAMES)


@pytest.mark.postgres
async def test_a_probe_that_outlasts_its_timeout_is_not_serving(
    tmp_path: Path, postgres_url: str
) -> None:
    async with start_authority(
        tmp_path, database_url=postgres_url, db_pool_size=2, health_probe_timeout=0.2
    ) as running:
        health = running.authority.health
        blocker = await asyncpg.connect(asyncpg_dsn(postgres_url))
        try:
            async with blocker.transaction():  # the probe's read waits for this lock
                await blocker.execute("LOCK TABLE event_stream IN ACCESS EXCLUSIVE MODE")
                verdict = await health.probe_now()
            assert health.last is not None
            assert health.last.outcome is Outcome.TIMED_OUT
            assert verdict == Verdict(False, "the database did not answer within 0.2 s")
        finally:
            await blocker.close()
        # The timed-out probe left no broken connection behind: the next one answers.
        assert (await health.probe_now()).serving
        async with grpc.aio.insecure_channel(running.address) as channel:
            assert await _statuses(channel) == [SERVING] * len(NAMES)


async def test_shutdown_wins_over_an_answered_probe(
    running: RunningAuthority, channel: grpc.aio.Channel
) -> None:
    health = running.authority.health
    async with watching(channel) as next_status:
        assert await next_status() == SERVING
        await health.begin_shutdown()  # what `authsvc serve` does first on SIGTERM
        assert await next_status() == NOT_SERVING
        verdict = await health.probe_now()
        assert health.last is not None
        assert health.last.outcome is Outcome.ANSWERED
        assert verdict == Verdict(False, "shutting down")
        assert await _statuses(channel) == [NOT_SERVING] * len(NAMES)


async def test_not_serving_while_postgres_is_down_and_serving_once_it_is_back(
    tmp_path: Path, private_postgres: PrivatePostgres
) -> None:
    async with (
        start_authority(tmp_path, database_url=private_postgres.url, db_pool_size=2) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        health = running.authority.health
        async with watching(channel) as next_status:
            assert await next_status() == SERVING
            await asyncio.to_thread(private_postgres.stop, "fast")
            assert not (await health.probe_now()).serving
            assert health.last is not None
            assert health.last.outcome is Outcome.FAILED
            assert await next_status() == NOT_SERVING

            await asyncio.to_thread(private_postgres.start)
            assert (await health.probe_now()).serving
            assert await next_status() == SERVING


# the probe's life


def _background_tasks() -> set[str]:
    return {task.get_name() for task in asyncio.all_tasks()} & {"database-health", "maintenance"}


async def test_the_probe_runs_with_the_background_work_and_stops_with_it(tmp_path: Path) -> None:
    async with start_authority(tmp_path) as running:
        running.authority.start_background()
        assert _background_tasks() == {"database-health", "maintenance"}
        await eventually(lambda: running.authority.health.last is not None)  # the first, at once
    assert _background_tasks() == set()


async def test_an_interval_of_zero_turns_the_probe_off(tmp_path: Path) -> None:
    async with start_authority(tmp_path, health_probe_interval=0) as running:
        running.authority.start_background()
        assert _background_tasks() == {"maintenance"}
        assert running.authority.health.verdict == Verdict(True, "the database is not probed")
