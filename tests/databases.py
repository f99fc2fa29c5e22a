"""Throwaway databases for tests: a SQLite file, or a fresh PostgreSQL database per test.

PostgreSQL tests run when AUTHSVC_TEST_POSTGRES_URL names a server (`.ci/run` sets it). Each test
gets its own database, copied from a template migrated once per session (a copy takes ~50 ms, a
migration several times that), and dropped afterwards. Names carry the pid of the pytest process,
so a later session can drop what a killed one left behind without touching a concurrent session's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import sqlite3
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.engine import URL, make_url

from authsvc.config import Settings
from authsvc.storage import migrate
from authsvc.storage.engine import create_engine

POSTGRES_URL_VARIABLE = "AUTHSVC_TEST_POSTGRES_URL"
PREFIX = "authsvc_test"
_NAME = re.compile(rf"^{PREFIX}_(?:template|db)_(\d+)_\w*$")
T = TypeVar("T")


def run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` to completion on a loop of its own, even from inside a running loop
    (session fixtures may first be requested from an async test)."""
    with ThreadPoolExecutor(1) as worker:
        return worker.submit(asyncio.run, coroutine).result()


def postgres_server_url() -> str | None:
    """The server the PostgreSQL tests use, or None when they should be skipped."""
    return os.environ.get(POSTGRES_URL_VARIABLE) or None


def asyncpg_dsn(url: str | URL) -> str:
    """The SQLAlchemy URL as a plain libpq DSN that asyncpg (and psql) accept."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def execute(database_url: str, statement: str) -> None:
    """Run one statement on its own connection, outside the code under test."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        with contextlib.closing(sqlite3.connect(url.database)) as conn:
            conn.execute(statement)
            conn.commit()
        return
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@asynccontextmanager
async def table_renamed(database_url: str, table: str) -> AsyncIterator[None]:
    """`table` under another name for the block: every statement that reads it fails, on SQLite
    or PostgreSQL, as on a database that is broken while its server still answers."""
    await execute(database_url, f"ALTER TABLE {table} RENAME TO {table}_away")
    try:
        yield
    finally:
        await execute(database_url, f"ALTER TABLE {table}_away RENAME TO {table}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class PostgresDatabases:
    """Creates and drops databases on the test server; one instance per pytest session."""

    server_url: str
    template: str = ""

    def url_for(self, name: str) -> str:
        url = make_url(self.server_url).set(database=name)
        return url.render_as_string(hide_password=False)

    async def _admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(asyncpg_dsn(self.server_url), timeout=10)

    async def prepare(self) -> None:
        """Drop databases left by dead sessions, then create and migrate this session's template."""
        conn = await self._admin()
        try:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE $1", f"{PREFIX}_%"
            )
            for row in rows:
                match = _NAME.match(row["datname"])
                if match and not _alive(int(match.group(1))):
                    await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
            self.template = f"{PREFIX}_template_{os.getpid()}_{secrets.token_hex(3)}"
            await conn.execute(f'CREATE DATABASE "{self.template}" TEMPLATE template0')
        finally:
            await conn.close()
        engine = create_engine(Settings(database_url=self.url_for(self.template)))
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()

    async def create(self, *, empty: bool = False) -> str:
        """A new database, migrated to head (copied from the template) unless `empty`; its URL."""
        return await self._copy_of("template0" if empty else self.template)

    async def copy(self, url: str) -> str:
        """A copy of the database at `url` as it is now (nothing may be connected to it); the
        copy's URL."""
        source = make_url(url).database
        assert source is not None
        return await self._copy_of(source)

    async def _copy_of(self, template: str) -> str:
        name = f"{PREFIX}_db_{os.getpid()}_{secrets.token_hex(4)}"
        conn = await self._admin()
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        finally:
            await conn.close()
        return self.url_for(name)

    async def drop(self, url: str) -> None:
        """Drop the database, disconnecting whatever still holds a connection to it."""
        name = make_url(url).database
        assert name is not None
        assert name.startswith(PREFIX), name
        conn = await self._admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    def finish(self) -> None:
        if self.template:
            run_blocking(self.drop(self.url_for(self.template)))
