"""The async engine for SQLite (embedded default) or PostgreSQL (several replicas).

SQLite runs in WAL mode with `synchronous=FULL`, so a commit the caller was told about survives a power
loss. Write transactions start with `BEGIN IMMEDIATE`, taking the write lock up front instead of
upgrading a read lock mid-transaction (the upgrade is what makes SQLite answer SQLITE_BUSY under load).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from authsvc.config import Settings

SQLITE_BUSY_TIMEOUT_MS = 10_000


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(settings: Settings) -> AsyncEngine:
    """An engine configured for the database named by `settings.database_url`."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, settings)
    return _postgres_engine(url, settings)


def _sqlite_engine(url: URL, settings: Settings) -> AsyncEngine:
    if url.database and url.database != ":memory:":
        from pathlib import Path

        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, pool_size=settings.db_pool_size, max_overflow=0)

    event.listen(engine.sync_engine, "connect", _configure_sqlite)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        readonly = connection.get_execution_options().get("readonly", False)
        connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # Transactions are started explicitly (BEGIN IMMEDIATE for writes): pysqlite's own implicit
    # BEGIN would otherwise defer the write lock.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def inline_sqlite_engine(engine: AsyncEngine) -> Engine | None:
    """A synchronous engine on the same SQLite file, with the same pragmas, for the transactions
    that run on the event loop (see `authsvc.storage.group_commit`); None for other databases and
    for in-memory SQLite, which a second connection would not share."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    sync = create_sync_engine(url.set(drivername="sqlite"), poolclass=NullPool)
    event.listen(sync, "connect", _configure_sqlite)
    return sync


def _postgres_engine(url: URL, settings: Settings) -> AsyncEngine:
    connect_args = {
        "server_settings": {
            "statement_timeout": str(settings.db_statement_timeout_ms),
            "application_name": "authsvc",
        },
    }
    return create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_recycle=settings.db_pool_recycle,
        pool_pre_ping=True,
        connect_args=connect_args,
    )
