"""Fixtures shared by every suite: a real authsvc on port 0 over a real database.

`database_url` is parametrised over SQLite and PostgreSQL, so every test that asks for it (or for
`running`, which uses it) runs on both; the PostgreSQL case is skipped, saying why, when
AUTHSVC_TEST_POSTGRES_URL is unset. Each test gets a fresh database, dropped afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from authsvc_client.v1 import authsvc_pb2_grpc

from authsvc.testing import RunningAuthority, start_authority
from tests.databases import (
    POSTGRES_URL_VARIABLE,
    PostgresDatabases,
    postgres_server_url,
    run_blocking,
)

# A PostgreSQL server is shared by every test and every developer; keep each authority's pool small.
TEST_POOL_SIZE = 4


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    """The session's source of throwaway PostgreSQL databases (skips when no server is set)."""
    server = postgres_server_url()
    if server is None:
        pytest.skip(f"{POSTGRES_URL_VARIABLE} is not set (.ci/run sets it): no PostgreSQL server")
    databases = PostgresDatabases(server)
    run_blocking(databases.prepare())
    yield databases
    databases.finish()


@pytest.fixture
async def postgres_url(postgres_databases: PostgresDatabases) -> AsyncIterator[str]:
    """A fresh PostgreSQL database migrated to head, dropped after the test."""
    url = await postgres_databases.create()
    try:
        yield url
    finally:
        await postgres_databases.drop(url)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty-of-data database on each backend: a SQLite file (migrated on first open) or
    a PostgreSQL database migrated to head."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'authsvc.db'}"
        return
    databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
    url = await databases.create()
    try:
        yield url
    finally:
        await databases.drop(url)


@pytest.fixture
async def running(tmp_path: Path, database_url: str) -> AsyncIterator[RunningAuthority]:
    async with start_authority(
        tmp_path, database_url=database_url, db_pool_size=TEST_POOL_SIZE
    ) as running:
        yield running


@pytest.fixture
async def channel(running: RunningAuthority) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(running.address) as channel:
        yield channel


@pytest.fixture
def tokens(channel: grpc.aio.Channel) -> authsvc_pb2_grpc.TokenServiceStub:
    return authsvc_pb2_grpc.TokenServiceStub(channel)


@pytest.fixture
def authorization(channel: grpc.aio.Channel) -> authsvc_pb2_grpc.AuthorizationServiceStub:
    return authsvc_pb2_grpc.AuthorizationServiceStub(channel)


@pytest.fixture
async def admin(running: RunningAuthority) -> tuple[tuple[str, str], ...]:
    """Call metadata for the bootstrap admin client."""
    return (("authorization", f"Bearer {await running.admin_token()}"),)
