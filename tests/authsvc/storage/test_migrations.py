"""One set of Alembic migrations builds the schema the code uses, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.authority import open_authority
from authsvc.config import Settings
from authsvc.keys.sealing import new_kek_text
from authsvc.storage import migrate, schema
from authsvc.storage.engine import create_engine
from authsvc.storage.schema import metadata
from tests.databases import PostgresDatabases


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings(database_url=database_url, db_pool_size=2))
    try:
        yield engine
    finally:
        await engine.dispose()


async def _differences(engine: AsyncEngine) -> list[Any]:
    def compare(sync_conn: Any) -> list[Any]:
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with engine.connect() as conn:
        return await conn.run_sync(compare)


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda sync_conn: inspect(sync_conn).get_table_names()))


async def _downgrade(engine: AsyncEngine, revision: str) -> None:
    def run(sync_conn: Any) -> None:
        config = migrate.alembic_config()
        config.attributes["connection"] = sync_conn
        command.downgrade(config, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def test_migrations_build_exactly_the_schema_in_code(engine: AsyncEngine) -> None:
    await migrate.upgrade(engine)
    assert await migrate.current_revision(engine) == migrate.head_revision()
    assert await _differences(engine) == []


async def test_migrations_go_down_and_up_again(engine: AsyncEngine) -> None:
    await migrate.upgrade(engine)
    await _downgrade(engine, "base")
    assert await _tables(engine) <= {"alembic_version"}
    await migrate.upgrade(engine)
    assert await _tables(engine) >= set(metadata.tables)
    assert await _differences(engine) == []


async def test_duplicate_jti_events_are_merged_before_the_unique_index(
    engine: AsyncEngine,
) -> None:
    # A database written before 0002 may hold a jti revoked twice; the upgrade must not fail on it.
    await migrate.upgrade(engine)
    await _downgrade(engine, "0001")
    e = schema.revocation_events
    rows = [
        ("jti", "j1", 100.0),
        ("subject", "alice", 100.0),
        ("jti", "j1", 160.0),
        ("jti", "j2", 100.0),
        ("subject", "alice", 100.0),
        ("jti", "j1", 130.0),
    ]
    async with engine.begin() as conn:
        for kind, value, expires_at in rows:
            await conn.execute(
                insert(e).values(occurred_at=1.0, expires_at=expires_at, kind=kind, value=value)
            )
    await migrate.upgrade(engine)
    async with engine.connect() as conn:
        kept = (await conn.execute(select(e.c.cursor, e.c.kind, e.c.value, e.c.expires_at))).all()
    assert sorted(tuple(row) for row in kept) == [
        (1, "jti", "j1", 160.0),
        (2, "subject", "alice", 100.0),
        (4, "jti", "j2", 100.0),
        (5, "subject", "alice", 100.0),
    ]


@pytest.mark.postgres
async def test_replicas_starting_together_on_an_empty_database_migrate_once(
    tmp_path: Path, postgres_databases: PostgresDatabases
) -> None:
    url = await postgres_databases.create(empty=True)
    kek = new_kek_text()
    try:
        replicas = await asyncio.gather(
            *(
                open_authority(Settings(data_dir=tmp_path, database_url=url, kek=kek))
                for _ in range(3)
            )
        )
        try:
            async with replicas[0].ctx.store.transaction(readonly=True) as tx:
                keys = await tx.list_keys()
            # One replica created the first key ring; the others found it.
            assert sorted(k.state for k in keys) == ["active", "pending"]
            signers = {replica.publish_keys().signer.kid for replica in replicas}
            assert len(signers) == 1
        finally:
            for replica in replicas:
                await replica.close()
    finally:
        await postgres_databases.drop(url)
