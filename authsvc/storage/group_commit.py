"""Short SQLite transactions run on the event loop; concurrent writes share one commit.

Through aiosqlite every statement is a round trip to the driver's thread and every transaction its
own fsync: an `IssueTokenPair` cost about 4 ms of CPU for 4 statements. SQLite answers a short
statement on cached pages in microseconds, so here statements run at once on the event-loop thread,
on two synchronous connections (one writer, one reader; WAL lets readers run beside the writer).

Group commit: write transactions that arrive together share one `BEGIN IMMEDIATE … COMMIT`. Each
runs inside its own SAVEPOINT, one after another (a body never waits on anything but the database,
so units never interleave); a unit that raises is rolled back to its savepoint and leaves the others
alone. The COMMIT, with its fsync (`synchronous=FULL`), runs in a worker thread so the loop keeps
serving while the disk flushes; units arriving meanwhile form the next batch. Every unit's
`transaction()` returns only after the COMMIT that made it durable, so nothing is told to a caller
before it is on disk; if that COMMIT fails, every unit of the batch fails with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from authsvc.errors import TemporarilyUnavailable

MAX_BATCH = 256  # bounds how long the first unit of a batch waits for its commit
UNAVAILABLE = (OperationalError, InterfaceError, sqlite3.OperationalError, OSError)


class InlineConnection:
    """The awaitable `execute` a `Tx` expects, over a synchronous connection: runs at once."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        raw = connection.connection.dbapi_connection
        assert isinstance(raw, sqlite3.Connection)
        #: The sqlite3 connection itself, for the hot statements (`authsvc.storage.sql.Tx`).
        self.raw: sqlite3.Connection = raw

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return self._connection.execute(statement, parameters)


@dataclass(eq=False)
class _Batch:
    durable: asyncio.Future[None]
    units: int = 0
    broken: BaseException | None = None


@dataclass(eq=False)
class GroupCommit:
    """Runs short SQLite transactions inline, with group commit for the writes.

    `writer_lock` is the store's lock for SQLite's single writer: a batch holds it from BEGIN to
    the end of its COMMIT, so bulk transactions on the driver's thread never overlap a batch.
    """

    engine: Engine
    writer_lock: asyncio.Lock
    max_batch: int = MAX_BATCH
    _writer: Connection | None = field(default=None, init=False)
    _reader: Connection | None = field(default=None, init=False)
    _units: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    _reads: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    _waiting: int = field(default=0, init=False)
    _batch: _Batch | None = field(default=None, init=False)
    _commits: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    # reads

    @asynccontextmanager
    async def read(self) -> AsyncIterator[InlineConnection]:
        """A read-only transaction on the reader connection (sees only committed data)."""
        async with self._reads:
            if self._reader is None:
                self._reader = self.engine.connect()
            raw = self._raw(self._reader)
            with _unavailable_on_failure():
                raw.execute("BEGIN")
            try:
                yield InlineConnection(self._reader)
            finally:
                with _unavailable_on_failure():
                    raw.execute("COMMIT")

    # writes

    @asynccontextmanager
    async def write(self) -> AsyncIterator[InlineConnection]:
        """One unit of a batch; returns after the batch's COMMIT, or raises what the body raised
        (its own writes undone) or why the COMMIT failed."""
        batch = await self._join()
        savepoint = f"unit_{batch.units}"
        try:
            raw = self._raw(self._writer)
            with _unavailable_on_failure():
                raw.execute(f"SAVEPOINT {savepoint}")
            try:
                assert self._writer is not None
                yield InlineConnection(self._writer)
            except BaseException:
                self._undo(batch, raw, savepoint)
                raise
            try:
                raw.execute(f"RELEASE {savepoint}")
            except sqlite3.Error as exc:
                batch.broken = exc
                raise TemporarilyUnavailable("the database failed, retry later") from exc
            batch.units += 1
        finally:
            self._leave(batch)
        await asyncio.shield(batch.durable)

    async def _join(self) -> _Batch:
        """Take the unit slot and return the open batch, opening one if there is none."""
        self._waiting += 1
        try:
            await self._units.acquire()
        except BaseException:
            self._waiting -= 1
            self._close_if_idle()
            raise
        self._waiting -= 1
        try:
            if self._batch is None:
                await self.writer_lock.acquire()  # also waits out the previous batch's COMMIT
                try:
                    if self._writer is None:
                        self._writer = self.engine.connect()
                    # In the worker thread: another process may hold the lock (busy_timeout).
                    raw = self._raw(self._writer)
                    with _unavailable_on_failure():
                        await asyncio.to_thread(raw.execute, "BEGIN IMMEDIATE")
                except BaseException:
                    self.writer_lock.release()
                    raise
                self._batch = _Batch(asyncio.get_running_loop().create_future())
            return self._batch
        except BaseException:
            self._units.release()
            raise

    def _undo(self, batch: _Batch, raw: sqlite3.Connection, savepoint: str) -> None:
        try:
            raw.execute(f"ROLLBACK TO {savepoint}")
            raw.execute(f"RELEASE {savepoint}")
        except sqlite3.Error as exc:
            # SQLite already rolled the whole transaction back (I/O error, disk full): no unit of
            # this batch can commit.
            batch.broken = exc

    def _leave(self, batch: _Batch) -> None:
        self._units.release()
        if batch.broken is not None or batch.units >= self.max_batch:
            self._start_commit(batch)
        else:
            # Let every unit already waiting join first; the last one out starts the commit.
            asyncio.get_running_loop().call_soon(self._close_if_idle)

    def _close_if_idle(self) -> None:
        batch = self._batch
        if batch is not None and self._waiting == 0 and not self._units.locked():
            self._start_commit(batch)

    def _start_commit(self, batch: _Batch) -> None:
        if self._batch is batch:
            self._batch = None
            task = asyncio.create_task(self._commit(batch), name="sqlite-group-commit")
            self._commits.add(task)
            task.add_done_callback(self._commits.discard)

    async def _commit(self, batch: _Batch) -> None:
        raw = self._raw(self._writer)
        try:
            if batch.broken is not None:
                raise batch.broken
            await asyncio.to_thread(raw.execute, "COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                raw.execute("ROLLBACK")
            failure = TemporarilyUnavailable("the database failed to commit, retry later")
            failure.__cause__ = exc
            batch.durable.set_exception(failure)
            batch.durable.exception()  # retrieved: a batch whose units all failed has no waiter
        else:
            batch.durable.set_result(None)
        finally:
            self.writer_lock.release()

    async def close(self) -> None:
        """Finish commits in flight, then close both connections."""
        if self._commits:
            await asyncio.gather(*self._commits, return_exceptions=True)
        for connection in (self._writer, self._reader):
            if connection is not None:
                connection.close()
        self._writer = self._reader = None
        self.engine.dispose()

    @staticmethod
    def _raw(connection: Connection | None) -> sqlite3.Connection:
        assert connection is not None
        raw = connection.connection.dbapi_connection
        assert isinstance(raw, sqlite3.Connection)
        return raw


@contextlib.contextmanager
def _unavailable_on_failure() -> Any:
    try:
        yield
    except UNAVAILABLE as exc:
        raise TemporarilyUnavailable("the database is unavailable, retry later") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise TemporarilyUnavailable("the database connection was lost") from exc
        raise
