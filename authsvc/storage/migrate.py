"""Alembic migrations, run programmatically: `authsvc migrate`, and the first `serve` of an empty database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.config import Settings
from authsvc.storage.engine import create_engine
from authsvc.storage.sql import MIGRATION_LOCK

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    def read(sync_conn: Any) -> str | None:
        return MigrationContext.configure(sync_conn).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(read)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to `revision` in one transaction.

    On PostgreSQL the transaction first takes an advisory lock, so replicas started together on an
    empty database migrate one after the other: the later ones find the schema at head and do
    nothing (PostgreSQL DDL is transactional; they read the version after the first commits). The
    statement timeout meant for calls does not apply on the server; `upgrade_database` runs this
    on an engine without the driver's command timeout too (a migration may rewrite a large table,
    or wait here for another replica's).
    """

    def run(sync_conn: Any) -> None:
        config = alembic_config()
        config.attributes["connection"] = sync_conn
        command.upgrade(config, revision)

    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SET LOCAL statement_timeout = 0"))
            await conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        await conn.run_sync(run)


async def upgrade_database(engine: AsyncEngine, settings: Settings, revision: str = "head") -> None:
    """`upgrade` the database of `engine`, made with `settings`: on PostgreSQL through an engine
    of its own, made for migrations (`create_engine(migrations=True)`); on SQLite, which has no
    command timeout, through `engine` itself (an in-memory database exists only there)."""
    if engine.dialect.name != "postgresql":
        await upgrade(engine, revision)
        return
    migrations = create_engine(settings, migrations=True)
    try:
        await upgrade(migrations, revision)
    finally:
        await migrations.dispose()


async def revise(engine: AsyncEngine, message: str) -> None:
    """Autogenerate a revision from the schema (developers only)."""

    def run(sync_conn: Any) -> None:
        config = alembic_config()
        config.attributes["connection"] = sync_conn
        command.revision(config, message=message, autogenerate=True)

    async with engine.begin() as conn:
        await conn.run_sync(run)
