"""Alembic migrations: empty to head, models equal to migrations, down and up again; SQLite and,
when AUTHSVC_TEST_POSTGRES_URL names a server, PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from authsvc.authority import open_authority
from authsvc.config import ConfigError, Settings
from authsvc.keys.sealing import new_kek_text
from authsvc.storage import migrate
from authsvc.storage.engine import create_engine
from authsvc.storage.records import RevocationEventRecord
from authsvc.storage.schema import metadata
from authsvc.storage.sql import EVENT_APPEND_LOCK, MIGRATION_LOCK, SqlStore
from authsvc.testing import throwaway_settings
from tests.waiting import eventually

POSTGRES_URL = os.environ.get("AUTHSVC_TEST_POSTGRES_URL", "")
TABLES = {table.name for table in metadata.sorted_tables}


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param(
            "postgresql",
            id="postgresql",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(
                    not POSTGRES_URL,
                    reason="AUTHSVC_TEST_POSTGRES_URL is unset: no PostgreSQL server to migrate",
                ),
            ],
        ),
    ]
)
async def empty_database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty database: a fresh SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        engine = create_engine(Settings(data_dir=tmp_path))
        try:
            yield engine
        finally:
            await engine.dispose()
        return
    schema = f"authsvc_migrations_{secrets.token_hex(4)}"
    admin = create_async_engine(POSTGRES_URL)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_async_engine(
        POSTGRES_URL, connect_args={"server_settings": {"search_path": schema}}
    )
    try:
        yield engine
    finally:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


async def _differences(engine: AsyncEngine) -> list[Any]:
    def compare(sync_conn: Any) -> list[Any]:
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with engine.connect() as conn:
        return await conn.run_sync(compare)


async def _downgrade(engine: AsyncEngine, revision: str) -> None:
    def run(sync_conn: Any) -> None:
        config = migrate.alembic_config()
        config.attributes["connection"] = sync_conn
        command.downgrade(config, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def test_empty_to_head_matches_the_models(empty_database: AsyncEngine) -> None:
    assert await migrate.current_revision(empty_database) is None
    await migrate.upgrade(empty_database)
    assert await migrate.current_revision(empty_database) == migrate.head_revision()
    assert await _tables(empty_database) == TABLES | {"alembic_version"}
    assert await _differences(empty_database) == []


async def test_upgrade_at_head_is_a_no_op(empty_database: AsyncEngine) -> None:
    await migrate.upgrade(empty_database)
    await migrate.upgrade(empty_database)
    assert await migrate.current_revision(empty_database) == migrate.head_revision()


async def test_down_to_base_and_up_again(empty_database: AsyncEngine) -> None:
    await migrate.upgrade(empty_database)
    await _downgrade(empty_database, "base")
    assert await _tables(empty_database) == {"alembic_version"}
    assert await migrate.current_revision(empty_database) is None
    await migrate.upgrade(empty_database)
    assert await _differences(empty_database) == []


async def test_the_comparison_sees_a_drift(empty_database: AsyncEngine) -> None:
    # The check above can fail: a column the models do not know is reported.
    await migrate.upgrade(empty_database)
    async with empty_database.begin() as conn:
        await conn.execute(text("ALTER TABLE clients ADD COLUMN stray INTEGER"))
    assert await _differences(empty_database) != []


async def test_authority_refuses_an_unmigrated_database_when_told_not_to_migrate(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, kek=new_kek_text())
    with pytest.raises(ConfigError, match=r"^AUTHSVC_DATABASE_URL: .*run `authsvc migrate`"):
        await open_authority(settings, migrate_policy="never")


async def test_authority_migrates_an_empty_database_by_default(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, kek=new_kek_text())
    authority = await open_authority(settings)
    try:
        assert await migrate.current_revision(authority.ctx.store.engine) == (
            migrate.head_revision()
        )
    finally:
        await authority.close()


async def _event_stream(engine: AsyncEngine) -> tuple[str, int]:
    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT stream_id, last_cursor FROM event_stream"))).one()
    return row.stream_id, row.last_cursor


async def _append_event(engine: AsyncEngine, value: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO revocation_events (occurred_at, expires_at, kind, value)"
                " VALUES (1, 2, 'jti', :value)"
            ),
            {"value": value},
        )


async def test_the_event_stream_starts_at_the_newest_cursor_handed_out(
    empty_database: AsyncEngine,
) -> None:
    await migrate.upgrade(empty_database, "0001")
    for value in ("a", "b", "c"):
        await _append_event(empty_database, value)
    async with empty_database.begin() as conn:  # the newest event was purged
        await conn.execute(text("DELETE FROM revocation_events WHERE value = 'c'"))
    await migrate.upgrade(empty_database)
    _, last_cursor = await _event_stream(empty_database)
    if empty_database.dialect.name == "postgresql":
        assert last_cursor == 3  # the sequence had handed out 3
    else:
        assert last_cursor == 2  # SQLite would have handed out 3 again


async def test_a_downgrade_leaves_the_sequence_past_every_cursor_assigned(
    empty_database: AsyncEngine,
) -> None:
    if empty_database.dialect.name != "postgresql":
        pytest.skip("SQLite has no sequence: after 0001 its next cursor is one past the largest")
    await migrate.upgrade(empty_database)
    async with empty_database.begin() as conn:
        await conn.execute(text("UPDATE event_stream SET last_cursor = 41"))
    await _downgrade(empty_database, "0001")
    await _append_event(empty_database, "after")  # the cursor is the database's own again
    async with empty_database.connect() as conn:
        cursor = (await conn.execute(text("SELECT max(cursor) FROM revocation_events"))).scalar()
    assert cursor == 42


async def test_a_replica_of_an_older_build_appending_after_the_migration_breaks_no_cursor(
    empty_database: AsyncEngine,
) -> None:
    """Between `authsvc migrate` and its restart, a replica of a build before 0003 appends events
    with the column's default. That was the sequence, which the event stream's row never
    counted: this build's next append took a cursor the table held, and every append failed."""
    if empty_database.dialect.name != "postgresql":
        pytest.skip("SQLite serves one process: no replica of another build appends meanwhile")
    await migrate.upgrade(empty_database, "0002")
    await _append_event(empty_database, "before the migration")
    await migrate.upgrade(empty_database)
    await _append_event(empty_database, "from an older replica")
    store = SqlStore(empty_database)
    now = time.time()
    async with store.transaction() as tx:
        [cursor] = await tx.append_events([RevocationEventRecord(0, now, now + 60, "jti", "new")])
    await _append_event(empty_database, "from the older replica again")
    async with store.transaction(readonly=True) as tx:
        events = await tx.events_after(0)
    assert [e.value for e in events] == [
        "before the migration",
        "from an older replica",
        "new",
        "from the older replica again",
    ]
    assert [e.cursor for e in events] == [1, 2, 3, 4]
    assert cursor == 3
    _, last_cursor = await _event_stream(empty_database)
    assert last_cursor == 4


async def test_0006_repairs_a_stream_that_an_older_replica_overtook_already(
    empty_database: AsyncEngine,
) -> None:
    """A database at 0003-0005 where a replica of a build before 0003 appended already: the
    table holds the cursor the row would hand out next, and every append failed on it."""
    if empty_database.dialect.name != "postgresql":
        pytest.skip("SQLite serves one process: no replica of another build appends meanwhile")
    await migrate.upgrade(empty_database, "0002")
    await _append_event(empty_database, "before 0003")
    await migrate.upgrade(empty_database, "0005")
    await _append_event(empty_database, "from an older replica")  # by the column's sequence
    await migrate.upgrade(empty_database)
    store = SqlStore(empty_database)
    now = time.time()
    async with store.transaction() as tx:
        [cursor] = await tx.append_events([RevocationEventRecord(0, now, now + 60, "jti", "new")])
    async with store.transaction(readonly=True) as tx:
        events = await tx.events_after(0)
    assert [e.value for e in events] == ["before 0003", "from an older replica", "new"]
    assert cursor == 3


@pytest.mark.parametrize("direction", ["upgrade", "downgrade"])
async def test_0006_on_a_live_database_waits_for_an_append_in_progress_without_a_deadlock(
    empty_database: AsyncEngine, direction: str
) -> None:
    """A replica appends as `append_events` does: the append lock, the stream's row, then the
    table. 0006 had locked the table first, then the row: the two waited on each other, and
    PostgreSQL aborted the migration (deadlock detected). Its downgrade read the row unlocked,
    so a cursor handed out before its setval could be handed out again by the sequence."""
    if empty_database.dialect.name != "postgresql":
        pytest.skip("SQLite serves one process: no replica appends during the migration")
    await migrate.upgrade(empty_database, "0005" if direction == "upgrade" else "head")
    async with empty_database.connect() as appender, empty_database.connect() as watcher:
        await appender.begin()
        pid = (await appender.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await appender.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": EVENT_APPEND_LOCK})
        cursor = (
            await appender.execute(
                text("UPDATE event_stream SET last_cursor = last_cursor + 1 RETURNING last_cursor")
            )
        ).scalar_one()
        migration = asyncio.create_task(
            migrate.upgrade(empty_database)
            if direction == "upgrade"
            else _downgrade(empty_database, "0005")
        )

        async def migration_waits_for_the_appender() -> bool:
            found = await watcher.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"
                ),
                {"pid": pid},
            )
            await watcher.rollback()
            return bool(found.scalar_one())

        await eventually(migration_waits_for_the_appender)
        await appender.execute(
            text(
                "INSERT INTO revocation_events (cursor, occurred_at, expires_at, kind, value)"
                " VALUES (:cursor, 1, 2, 'jti', 'mid-migration')"
            ),
            {"cursor": cursor},
        )
        await appender.commit()
        await migration
    if direction == "upgrade":
        assert await migrate.current_revision(empty_database) == migrate.head_revision()
        return
    assert await migrate.current_revision(empty_database) == "0005"
    await _append_event(empty_database, "by the sequence again")  # as a build before 0003
    async with empty_database.connect() as conn:
        cursors = (await conn.execute(text("SELECT cursor FROM revocation_events"))).scalars()
        assert sorted(cursors) == [cursor, cursor + 1]


async def test_0005_keeps_one_code_of_each_authorization_request(
    empty_database: AsyncEngine,
) -> None:
    await migrate.upgrade(empty_database, "0004")
    rows = [  # (digest, client, challenge, created_at, used_at)
        (b"a" * 32, "app", "c1", 1.0, None),
        (b"b" * 32, "app", "c1", 3.0, None),  # the newest of app's c1
        (b"c" * 32, "app", "c1", 2.0, None),
        (b"d" * 32, "app", "c2", 1.0, None),
        (b"e" * 32, "other", "c1", 1.0, None),  # another client's request
        (b"f" * 32, "app", "c3", 5.0, None),
        (b"g" * 32, "app", "c3", 5.0, None),  # the same instant: the larger digest stays
        (b"h" * 32, "app", "c4", 1.0, 2.0),  # redeemed: kept, so that its reuse is detected
        (b"i" * 32, "app", "c4", 3.0, None),
        (b"j" * 32, "app", "c4", 0.5, 1.0),
    ]
    async with empty_database.begin() as conn:
        for client_id in ("app", "other"):
            await conn.execute(
                text(
                    "INSERT INTO clients (client_id, name, public, first_party, grant_types,"
                    " redirect_uris, scopes, audiences, created_at)"
                    " VALUES (:id, :id, true, false, '', '[]', '', '', 0)"
                ),
                {"id": client_id},
            )
        for digest, client_id, challenge, created_at, used_at in rows:
            await conn.execute(
                text(
                    "INSERT INTO authorization_codes (code_digest, client_id, redirect_uri,"
                    " subject, scope, audience, code_challenge, device_id, created_at,"
                    " expires_at, used_at) VALUES (:digest, :client_id, '', 'alice', '', '',"
                    " :challenge, 'web', :created_at, :expires_at, :used_at)"
                ),
                {
                    "digest": digest,
                    "client_id": client_id,
                    "challenge": challenge,
                    "created_at": created_at,
                    "expires_at": created_at + 60,
                    "used_at": used_at,
                },
            )
    await migrate.upgrade(empty_database)
    async with empty_database.connect() as conn:
        kept = await conn.execute(
            text("SELECT code_digest, redirect_uri_sent FROM authorization_codes")
        )
        rows_kept = sorted((bytes(row[0])[:1], bool(row[1])) for row in kept)
    assert rows_kept == [(name, True) for name in (b"b", b"d", b"e", b"g", b"h")]


async def test_the_first_open_names_the_event_stream_and_later_opens_keep_it(
    tmp_path: Path,
) -> None:
    names, kek = [], new_kek_text()
    for data_dir in (tmp_path / "one", tmp_path / "one", tmp_path / "two"):
        authority = await open_authority(Settings(data_dir=data_dir, kek=kek))
        try:
            async with authority.ctx.store.transaction(readonly=True) as tx:
                names.append((await tx.event_stream()).stream_id)
        finally:
            await authority.close()
    first, reopened, other = names
    assert len(first) == 32
    assert reopened == first
    assert other != first


# Waiting for another replica's migration


@pytest.fixture
async def fresh_postgres_settings(tmp_path: Path) -> AsyncIterator[Settings]:
    """Settings on a database of the test's own, with a short statement timeout: the driver's
    command timeout for calls is twice it, 0.4 s."""
    if not POSTGRES_URL:
        pytest.skip("AUTHSVC_TEST_POSTGRES_URL is unset: no PostgreSQL server to migrate")
    name = f"authsvc_migrate_{secrets.token_hex(4)}"
    admin = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield throwaway_settings(tmp_path, database_url=url, db_statement_timeout_ms=200)
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def _while_another_replica_migrates(settings: Settings, migrating: Any) -> Any:
    """Run `migrating` while another connection holds the migration lock, past the calls' command
    timeout; then release it. The task, done or not."""
    url = settings.database_url.replace("postgresql+asyncpg://", "postgresql://")
    holder = await asyncpg.connect(url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        task = asyncio.ensure_future(migrating)
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"

        async def blocked() -> bool:
            return task.done() or await holder.fetchval(waiting) > 0

        await eventually(blocked)
        # Not synchronisation: the point is to wait longer than the 0.4 s command timeout.
        await asyncio.wait({task}, timeout=1.0)
        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        await asyncio.wait({task}, timeout=10)
        return task
    finally:
        await holder.close()


@pytest.mark.postgres
async def test_a_replica_waits_for_another_replicas_migration_past_the_call_timeout(
    fresh_postgres_settings: Settings,
) -> None:
    settings = fresh_postgres_settings
    engine = create_engine(settings)
    try:
        task = await _while_another_replica_migrates(
            settings, migrate.upgrade_database(engine, settings)
        )
        task.result()
        assert await migrate.current_revision(engine) == migrate.head_revision()
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_the_engine_for_calls_would_give_up_there(fresh_postgres_settings: Settings) -> None:
    # Why migrations get an engine of their own: the pool's connections time out after 0.4 s.
    engine = create_engine(fresh_postgres_settings)
    try:
        task = await _while_another_replica_migrates(
            fresh_postgres_settings, migrate.upgrade(engine)
        )
        with pytest.raises(TimeoutError):
            task.result()
    finally:
        await engine.dispose()
