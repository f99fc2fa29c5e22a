"""The async engine for SQLite (embedded default) or PostgreSQL (several replicas).

SQLite runs in WAL mode with `synchronous=FULL`, so a commit the caller was told about survives a power
loss. Write transactions start with `BEGIN IMMEDIATE`, taking the write lock up front instead of
upgrading a read lock mid-transaction (the upgrade is what makes SQLite answer SQLITE_BUSY under load).

PostgreSQL: every wait is bounded, so an unreachable or stuck database turns into a prompt
temporarily_unavailable instead of a hung call. Connecting gives up after `db_connect_timeout`; a
statement after `db_statement_timeout_ms` (server side, including waits for row locks), with a client
side backstop for a network that silently drops packets; a transaction left idle (a replica frozen
mid-transaction) is ended by the server so its row locks do not stall the other replicas. Each
connection taken from the pool is checked to be still open, so after a database restart the dead
ones are replaced before use instead of failing a call each: PostgreSQL closes every connection
when it stops or crashes, and asyncpg sees that on the socket, so the check is free. (SQLAlchemy's
`pool_pre_ping` costs three round trips per transaction, BEGIN, `;`, ROLLBACK, a third of an
issuance's.) A connection that dies while in use fails that one call with temporarily_unavailable,
and SQLAlchemy then replaces every connection the pool held before it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from authsvc.config import Settings, make_directory

SQLITE_BUSY_TIMEOUT_MS = 10_000
POOL_TIMEOUT = 10.0  # seconds a call waits for a free connection before temporarily_unavailable


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(settings: Settings, *, migrations: bool = False) -> AsyncEngine:
    """An engine configured for the database named by `settings.database_url`.

    `migrations=True`: one for schema migrations only. On PostgreSQL its connections have no
    client-side command timeout, which is meant for calls (a migration may rewrite a large table,
    or wait for another replica's migration to finish), and are not pooled.
    """
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, settings)
    if migrations:
        connect_args = postgres_connect_args(settings, "authsvc-migrate")
        connect_args["command_timeout"] = None
        return create_async_engine(url, poolclass=NullPool, connect_args=connect_args)
    return _postgres_engine(url, settings)


def _sqlite_engine(url: URL, settings: Settings) -> AsyncEngine:
    if url.database and url.database != ":memory:":
        directory = Path(url.database).parent
        named = settings.data_dir.resolve() == directory  # the default: the data directory's
        make_directory(
            directory, "AUTHSVC_DATA_DIR" if named else "AUTHSVC_DATABASE_URL's directory"
        )
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


def postgres_connect_args(settings: Settings, application_name: str = "authsvc") -> dict[str, Any]:
    """asyncpg.connect() options for every authsvc connection (the pool's and the listener's)."""
    statement_timeout_ms = settings.db_statement_timeout_ms
    server_settings = {
        "application_name": application_name,
        "statement_timeout": str(statement_timeout_ms),
        # Our transactions never wait on anything but the database; one idle this long belongs
        # to a replica that froze or lost its network, and holds row locks others need.
        "idle_in_transaction_session_timeout": str(max(2 * statement_timeout_ms, 10_000)),
    }
    return {
        "timeout": settings.db_connect_timeout,
        # Client side: the server's statement_timeout answers first unless the network is gone.
        "command_timeout": 2 * statement_timeout_ms / 1000 if statement_timeout_ms else None,
        "server_settings": server_settings,
    }


def _postgres_engine(url: URL, settings: Settings) -> AsyncEngine:
    engine = create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_recycle=settings.db_pool_recycle,
        pool_timeout=POOL_TIMEOUT,
        connect_args=postgres_connect_args(settings),
    )
    event.listen(engine.sync_engine.pool, "checkout", _refuse_closed_connection)
    return engine


def _refuse_closed_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    # DisconnectionError on checkout makes the pool drop this connection and hand out another.
    driver = dbapi_connection.driver_connection
    if driver.is_closed():
        raise DisconnectionError("the database closed this connection")
    if driver.is_in_transaction():  # every transaction ends before its connection is returned
        raise DisconnectionError("this connection came back from the pool inside a transaction")
