"""Group commit on SQLite: concurrent writes share a commit, and each keeps its own outcome."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from authsvc.errors import InvalidRequest, TemporarilyUnavailable
from authsvc.storage import migrate
from authsvc.storage.engine import create_engine
from authsvc.storage.group_commit import GroupCommit
from authsvc.storage.records import UserRecord
from authsvc.storage.sql import SqlStore
from authsvc.testing import throwaway_settings


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    engine = create_engine(throwaway_settings(tmp_path))
    await migrate.upgrade(engine)
    store = SqlStore(engine)
    try:
        yield store
    finally:
        await store.close()


def committed_usernames(store: SqlStore) -> set[str]:
    """What a separate connection sees: only what was committed."""
    path = store.engine.url.database
    assert path
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT username FROM users")}


async def add_user(store: SqlStore, name: str, *, fail: bool = False) -> str:
    async with store.transaction() as tx:
        await tx.insert_user(UserRecord(f"sub-{name}", name, 0.0, "hash"))
        if fail:
            raise InvalidRequest(f"{name} changed its mind")
    return name


def count_commits(store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    group = store._inline
    assert isinstance(group, GroupCommit)
    commits: list[int] = []
    original = group._commit

    async def counting(batch):  # type: ignore[no-untyped-def]
        commits.append(batch.units)
        await original(batch)

    monkeypatch.setattr(group, "_commit", counting)
    return commits


async def test_concurrent_writes_share_commits_and_are_durable_on_return(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = count_commits(store, monkeypatch)
    names = [f"user{i}" for i in range(40)]

    async def add_and_check(name: str) -> None:
        await add_user(store, name)
        assert name in committed_usernames(store)  # on disk before the caller hears back

    await asyncio.gather(*(add_and_check(name) for name in names))
    assert committed_usernames(store) == set(names)
    assert sum(commits) == len(names)
    assert len(commits) < len(names)  # some commits carried several transactions


async def test_a_failing_unit_leaves_the_rest_of_its_batch_alone(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = count_commits(store, monkeypatch)
    results = await asyncio.gather(
        add_user(store, "alice"),
        add_user(store, "mallory", fail=True),
        add_user(store, "bob"),
        return_exceptions=True,
    )
    assert results[0] == "alice"
    assert results[2] == "bob"
    assert isinstance(results[1], InvalidRequest)
    assert committed_usernames(store) == {"alice", "bob"}
    assert commits == [2]  # one batch, the failed unit rolled back to its savepoint


async def test_a_failed_commit_fails_every_unit_of_its_batch(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_to_thread = asyncio.to_thread

    async def failing_commit(function, *args):  # type: ignore[no-untyped-def]
        if args == ("COMMIT",):
            raise sqlite3.OperationalError("disk I/O error")
        return await real_to_thread(function, *args)

    monkeypatch.setattr(asyncio, "to_thread", failing_commit)
    results = await asyncio.gather(
        add_user(store, "carol"), add_user(store, "dave"), return_exceptions=True
    )
    assert all(isinstance(r, TemporarilyUnavailable) for r in results)
    monkeypatch.setattr(asyncio, "to_thread", real_to_thread)
    assert committed_usernames(store) == set()
    assert await add_user(store, "erin") == "erin"  # the store recovers
    assert committed_usernames(store) == {"erin"}


async def test_reads_see_only_committed_writes(store: SqlStore) -> None:
    seen: list[object] = []

    async def read_during_write() -> None:
        async with store.transaction(readonly=True) as tx:
            seen.append(await tx.get_user("frank"))

    async with store.transaction() as tx:
        await tx.insert_user(UserRecord("sub-frank", "frank", 0.0, "hash"))
        await read_during_write()
    assert seen == [None]
    async with store.transaction(readonly=True) as tx:
        found = await tx.get_user("frank")
    assert found is not None
    assert found.subject == "sub-frank"


async def test_bulk_transactions_do_not_overlap_a_batch(store: SqlStore) -> None:
    async def bulk_add(name: str) -> None:
        async with store.transaction(bulk=True) as tx:
            await tx.insert_user(UserRecord(f"sub-{name}", name, 0.0, "hash"))

    await asyncio.gather(
        *(add_user(store, f"inline{i}") for i in range(10)),
        *(bulk_add(f"bulk{i}") for i in range(3)),
    )
    assert len(committed_usernames(store)) == 13
