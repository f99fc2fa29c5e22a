"""The PostgreSQL engine applies the configured pool, timeouts and recycling to every connection."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text

from authsvc.config import ConfigError, Settings
from authsvc.storage.engine import create_engine
from tests.databases import asyncpg_dsn


@pytest.mark.postgres
async def test_every_connection_carries_the_configured_limits(postgres_url: str) -> None:
    settings = Settings.from_env(
        {
            "AUTHSVC_DATABASE_URL": postgres_url,
            "AUTHSVC_DB_POOL_SIZE": "3",
            "AUTHSVC_DB_STATEMENT_TIMEOUT_MS": "1500",
            "AUTHSVC_DB_POOL_RECYCLE": "10m",
            "AUTHSVC_DB_CONNECT_TIMEOUT": "2.5",
        }
    )
    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            shown = {
                name: (await conn.execute(text(f"SHOW {name}"))).scalar_one()
                for name in (
                    "statement_timeout",
                    "idle_in_transaction_session_timeout",
                    "application_name",
                )
            }
        assert shown == {
            "statement_timeout": "1500ms",
            "idle_in_transaction_session_timeout": "10s",
            "application_name": "authsvc",
        }
        assert engine.pool.size() == 3
        assert engine.pool._recycle == 600
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_connections_the_server_closed_are_replaced_before_use(postgres_url: str) -> None:
    """What a database restart does to the pool: no call fails on a connection found dead."""
    settings = Settings.from_env(
        {"AUTHSVC_DATABASE_URL": postgres_url, "AUTHSVC_DB_POOL_SIZE": "2"}
    )
    engine = create_engine(settings)
    try:
        async with engine.connect() as first, engine.connect() as second:  # two pooled
            pids = [await c.scalar(text("SELECT pg_backend_pid()")) for c in (first, second)]
        admin = await asyncpg.connect(asyncpg_dsn(postgres_url))
        try:
            for pid in pids:  # waits until each backend has exited and its socket is closed
                assert await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
        finally:
            await admin.close()
        for _ in range(3):
            async with engine.connect() as conn:
                assert await conn.scalar(text("SELECT pg_backend_pid()")) not in pids
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("AUTHSVC_DB_STATEMENT_TIMEOUT_MS", "-1", id="negative-statement-timeout"),
        pytest.param("AUTHSVC_DB_CONNECT_TIMEOUT", "0", id="zero-connect-timeout"),
        pytest.param("AUTHSVC_DB_POOL_SIZE", "0", id="empty-pool"),
        pytest.param("AUTHSVC_DATABASE_URL", "postgresql://h/db", id="sync-driver"),
    ],
)
def test_bad_database_settings_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})
