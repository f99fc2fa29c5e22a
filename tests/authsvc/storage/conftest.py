"""A `store` on each backend (SQLite file, PostgreSQL database), with a client and a family to
hang rows on."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest

from authsvc.config import Settings
from authsvc.storage import migrate
from authsvc.storage.engine import create_engine
from authsvc.storage.records import ClientRecord, FamilyRecord, RefreshTokenRecord
from authsvc.storage.sql import SqlStore

NOW = 1_800_000_000.123456
CLIENT = "client-1"


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def client_record(client_id: str = CLIENT, *, public: bool = False) -> ClientRecord:
    return ClientRecord(
        client_id=client_id,
        name="a client",
        public=public,
        first_party=public,
        grant_types=("authorization_code", "refresh_token"),
        redirect_uris=("https://app.example/callback",),
        scopes=("read", "write"),
        audiences=("api",),
        created_at=NOW,
        disabled_at=None,
        secret_digest=None if public else digest(f"secret of {client_id}"),
    )


def family_record(
    family_id: str, *, subject: str = "alice", expires_in: float = 3600
) -> FamilyRecord:
    return FamilyRecord(
        family_id=family_id,
        subject=subject,
        client_id=CLIENT,
        device_id="phone",
        scope=("read",),
        audience=("api",),
        created_at=NOW,
        last_used_at=NOW,
        expires_at=NOW + expires_in,
        idle_expires_at=NOW + expires_in,
        revoked_at=None,
        revoke_reason=None,
    )


def token_record(name: str, family_id: str, *, expires_in: float = 3600) -> RefreshTokenRecord:
    return RefreshTokenRecord(
        family_id=family_id,
        issued_at=NOW,
        used_at=None,
        expires_at=NOW + expires_in,
        token_digest=digest(name),
    )


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    """A migrated store holding one confidential client, `client-1`."""
    store = SqlStore(create_engine(Settings(database_url=database_url, db_pool_size=4)))
    try:
        await migrate.upgrade(store.engine)
        async with store.transaction() as tx:
            await tx.insert_client(client_record())
        yield store
    finally:
        await store.close()
