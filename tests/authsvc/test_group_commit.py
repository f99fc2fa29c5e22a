"""Group commit on SQLite: concurrent writes share a commit, and each keeps its own outcome."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

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
    original = group._start_commit

    def counting(batch: Any) -> None:
        open_batch = group._batch
        if open_batch is not None and open_batch is batch:  # not a batch already committing
            commits.append(open_batch.units)
        original(batch)

    monkeypatch.setattr(group, "_start_commit", counting)
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


class _HookedWriter:
    """The writer connection as `GroupCommit` sees it, running `hooks[sql]` in the worker thread
    (BEGIN IMMEDIATE and COMMIT run there) before the statement `sql`."""

    def __init__(self, raw: sqlite3.Connection, hooks: dict[str, Callable[[], None]]) -> None:
        self._raw = raw
        self._hooks = hooks

    def execute(self, sql: str, *args: Any) -> Any:
        hook = self._hooks.get(sql)
        if hook is not None:
            hook()
        return self._raw.execute(sql, *args)


def hook_writer(monkeypatch: pytest.MonkeyPatch, **hooks: Callable[[], None]) -> None:
    """Hook the writer's statements: `BEGIN=`, `COMMIT=`."""
    by_sql = {"BEGIN IMMEDIATE" if name == "BEGIN" else name: hook for name, hook in hooks.items()}
    real_raw = GroupCommit._raw
    monkeypatch.setattr(
        GroupCommit,
        "_raw",
        staticmethod(lambda connection: _HookedWriter(real_raw(connection), by_sql)),
    )


class _HeldBegins:
    """A BEGIN IMMEDIATE hook that waits until released, as it does while another process holds
    SQLite's write lock."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()

    def __call__(self) -> None:
        if not self.released.is_set():
            self.entered.set()
            self.released.wait(timeout=10)

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 10)


async def test_a_unit_cancelled_while_its_batch_opens_leaves_the_writer_usable(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    begins = _HeldBegins()
    hook_writer(monkeypatch, BEGIN=begins)
    cancelled = asyncio.create_task(add_user(store, "mallory"))
    await begins.wait_entered()  # its batch is being opened
    cancelled.cancel()  # a caller's deadline, say
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    begins.released.set()  # the BEGIN asked for on its behalf completes after all
    assert await add_user(store, "niaj") == "niaj"
    assert committed_usernames(store) == {"niaj"}


async def test_units_that_wait_for_a_batch_to_open_share_it(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    begins = _HeldBegins()
    hook_writer(monkeypatch, BEGIN=begins)
    commits = count_commits(store, monkeypatch)
    first = asyncio.create_task(add_user(store, "olivia"))
    await begins.wait_entered()
    others = [asyncio.create_task(add_user(store, f"waiting{i}")) for i in range(5)]
    await asyncio.sleep(0)  # they are all waiting for the batch being opened
    begins.released.set()
    assert await asyncio.gather(first, *others) == ["olivia", *(f"waiting{i}" for i in range(5))]
    assert commits == [6]


async def test_a_batch_that_cannot_open_fails_its_waiting_units_and_the_next_one_opens(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusals = [sqlite3.OperationalError("database is locked")]  # once, past the busy timeout

    def busy() -> None:
        if refusals:
            raise refusals.pop()

    hook_writer(monkeypatch, BEGIN=busy)
    results = await asyncio.gather(
        add_user(store, "peggy"), add_user(store, "rupert"), return_exceptions=True
    )
    assert all(isinstance(r, TemporarilyUnavailable) for r in results)
    assert await add_user(store, "sybil") == "sybil"
    assert committed_usernames(store) == {"sybil"}


def disk_fails() -> None:
    raise sqlite3.OperationalError("disk I/O error")


async def test_a_failed_commit_fails_every_unit_of_its_batch(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook_writer(monkeypatch, COMMIT=disk_fails)
    results = await asyncio.gather(
        add_user(store, "carol"), add_user(store, "dave"), return_exceptions=True
    )
    assert all(isinstance(r, TemporarilyUnavailable) for r in results)
    monkeypatch.undo()
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
