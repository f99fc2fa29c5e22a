"""PostgreSQL errors sorted once: conflicts run again, outages answer temporarily_unavailable, a
refusal (no such database) is a configuration error.

The deadlocks and serialization failures here are real ones, provoked on a real server.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_client.v1 import authsvc_pb2_grpc
from sqlalchemy import text

from authsvc.config import Settings
from authsvc.errors import TemporarilyUnavailable
from authsvc.storage.engine import create_engine
from authsvc.storage.sql import (
    CONFLICT_ATTEMPTS,
    DatabaseRefused,
    SqlStore,
    TransactionConflict,
    retry_conflicts,
)
from authsvc.testing import start_authority
from authsvc.tokens import opaque
from tests.authsvc.storage.conftest import NOW, client_record, family_record
from tests.databases import asyncpg_dsn

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg_store(postgres_url: str) -> AsyncIterator[SqlStore]:
    store = SqlStore(create_engine(Settings(database_url=postgres_url, db_pool_size=4)))
    async with store.transaction() as tx:
        await tx.insert_client(client_record())
        await tx.insert_family(family_record("f1"))
        await tx.insert_family(family_record("f2"))
    try:
        yield store
    finally:
        await store.close()


async def test_a_deadlock_is_rolled_back_and_run_again(pg_store: SqlStore) -> None:
    both_hold_their_first_row = asyncio.Barrier(2)
    attempts: Counter[str] = Counter()

    async def touch_in_order(name: str, first: str, second: str) -> None:
        async def work() -> None:
            attempts[name] += 1
            async with pg_store.transaction() as tx:
                await tx.touch_family(first, NOW + 1, NOW + 2)
                if attempts[name] == 1:
                    await both_hold_their_first_row.wait()
                await tx.touch_family(second, NOW + 1, NOW + 2)

        await retry_conflicts(work)

    await asyncio.gather(touch_in_order("a", "f1", "f2"), touch_in_order("b", "f2", "f1"))
    # PostgreSQL broke the deadlock by rolling one back; it ran again and both units completed.
    assert sorted(attempts.values()) == [1, 2]


async def test_a_serialization_failure_is_rolled_back_and_run_again(pg_store: SqlStore) -> None:
    both_have_read = asyncio.Barrier(2)
    attempts: Counter[str] = Counter()

    async def add_first_family_of_bob(name: str) -> None:
        # Write skew: both read "bob has no family", both add one. SERIALIZABLE refuses one.
        async def work() -> None:
            attempts[name] += 1
            async with pg_store.transaction() as tx:
                await (await tx.connection()).execute(
                    text("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                )
                existing = await tx.live_families("bob", NOW)
                if attempts[name] == 1:
                    await both_have_read.wait()
                if not existing:
                    await tx.insert_family(family_record(f"bob-{name}", subject="bob"))

        await retry_conflicts(work)

    await asyncio.gather(add_first_family_of_bob("a"), add_first_family_of_bob("b"))
    assert sorted(attempts.values()) == [1, 2]
    async with pg_store.transaction(readonly=True) as tx:
        assert len(await tx.live_families("bob", NOW)) == 1


async def test_endless_conflicts_end_as_temporarily_unavailable() -> None:
    calls = 0

    async def always_conflicts() -> None:
        nonlocal calls
        calls += 1
        raise TransactionConflict("40P01")

    with pytest.raises(TemporarilyUnavailable) as raised:
        await retry_conflicts(always_conflicts)
    assert calls == CONFLICT_ATTEMPTS
    assert isinstance(raised.value.__cause__, TransactionConflict)


async def test_a_statement_past_its_timeout_is_temporarily_unavailable(postgres_url: str) -> None:
    settings = Settings(database_url=postgres_url, db_pool_size=1, db_statement_timeout_ms=50)
    store = SqlStore(create_engine(settings))
    try:
        with pytest.raises(TemporarilyUnavailable, match="in time"):
            async with store.transaction(readonly=True) as tx:
                await (await tx.connection()).execute(text("SELECT pg_sleep(5)"))
    finally:
        await store.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _first_transaction_at(url: str) -> None:
    store = SqlStore(create_engine(Settings(database_url=url, db_pool_size=1)))
    try:
        async with store.transaction(readonly=True) as tx:
            await tx.last_event_cursor()
    finally:
        await store.close()


async def test_an_unreachable_database_is_temporarily_unavailable() -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/nothing"
    with pytest.raises(TemporarilyUnavailable, match="unreachable"):
        await _first_transaction_at(url)


async def test_a_database_that_refuses_the_connection_is_a_configuration_error(
    postgres_url: str,
) -> None:
    # Connections come from the pool without engine.connect(), which used to wrap the driver
    # adapter's errors: a DBAPIError still, so database_errors sorts it (here: not an outage, and
    # not a bug either; the database named does not exist).
    url = postgres_url.rsplit("/", 1)[0] + "/authsvc_no_such_database"
    with pytest.raises(DatabaseRefused, match=r'no such database .*"authsvc_no_such_database"'):
        await _first_transaction_at(url)


async def test_a_transaction_cancelled_mid_statement_gives_up_its_connection(
    pg_store: SqlStore,
) -> None:
    started = asyncio.Event()

    async def stuck() -> None:
        async with pg_store.transaction() as tx:
            conn = await tx.connection()
            started.set()
            await conn.execute(text("SELECT pg_sleep(30)"))

    task = asyncio.create_task(stuck())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pg_store.engine.sync_engine.pool.checkedout() == 0  # invalidated, not handed out
    async with pg_store.transaction() as tx:  # and the pool still serves
        assert await tx.last_event_cursor() >= 0


async def _wait_until_authsvc_waits_on_a_lock(admin: asyncpg.Connection) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        waiting = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'authsvc' AND wait_event_type = 'Lock'"
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("Rotate never blocked on the family row")


async def test_a_deadlock_inside_rotate_is_invisible_to_the_caller(
    tmp_path: Path, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with start_authority(tmp_path, database_url=postgres_url, db_pool_size=2) as running:
        client = await running.create_client(
            "app", grant_types=["refresh_token"], scopes=["read"], audiences=["api"]
        )
        pair = await running.authority.issue_token_pair(subject="alice", client_id=client.client_id)
        parent = opaque.digest(pair.refresh_token)
        caller = (("authorization", f"Bearer {await running.admin_token()}"),)
        other = await asyncpg.connect(asyncpg_dsn(postgres_url))
        channel = grpc.aio.insecure_channel(running.address)
        try:
            tokens = authsvc_pb2_grpc.TokenServiceStub(channel)
            # The test's session waits longest before looking for deadlocks, so authsvc's
            # Rotate is the one PostgreSQL rolls back.
            await other.execute("SET deadlock_timeout = '30s'")
            with caplog.at_level(logging.INFO, logger="authsvc.storage.sql"):
                async with other.transaction():
                    await other.execute(
                        "SELECT 1 FROM families WHERE family_id = $1 FOR UPDATE",
                        pair.family.family_id,
                    )
                    rotation = asyncio.ensure_future(
                        tokens.Rotate(
                            pb.RotateRequest(refresh_token=pair.refresh_token), metadata=caller
                        )
                    )
                    # Rotate holds the parent token's row and waits for the family row; taking
                    # the token's row here closes the cycle.
                    await _wait_until_authsvc_waits_on_a_lock(other)
                    await other.execute(
                        "UPDATE refresh_tokens SET expires_at = expires_at WHERE token_digest = $1",
                        parent,
                    )
                rotated = await asyncio.wait_for(rotation, 30)
        finally:
            await channel.close()
            await other.close()
        assert rotated.refresh_token.startswith("asrt_")
        assert rotated.family_id == pair.family.family_id
        conflicts = [r for r in caplog.records if r.getMessage().startswith("transaction conflict")]
        assert [getattr(r, "sqlstate", None) for r in conflicts] == ["40P01"]
