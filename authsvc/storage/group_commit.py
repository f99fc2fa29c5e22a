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

A batch is opened (the writer lock, then `BEGIN IMMEDIATE` in the worker thread, where another
process's lock is waited for) by a task of its own on behalf of every unit waiting for it: a unit
cancelled meanwhile leaves the opening alone, and if the batch cannot be opened, the units waiting
for it fail together instead of each waiting out the busy timeout again.
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
from sqlalchemy.exc import DBAPIError, OperationalError

from authsvc.errors import TemporarilyUnavailable

MAX_BATCH = 256  # bounds how long the first unit of a batch waits for its commit

#: SQLite's primary result codes that say the statement itself is wrong, not the database out of
#: reach: SQLITE_ERROR (a missing table, too many variables, a syntax error), SQLITE_TOOBIG,
#: SQLITE_MISMATCH, SQLITE_MISUSE, SQLITE_RANGE. Retrying cannot help; it is a bug to report.
SQLITE_BUG_CODES = frozenset({1, 18, 20, 21, 25})


def is_outage(exc: BaseException) -> bool:
    """Whether a database failure means the database is out of reach for now (busy, locked,
    I/O, disk full, unopenable, connection lost), so the caller should retry later, rather than
    a bug in the statement, which must surface as one. An InterfaceError is the driver refusing
    a call (a parameter it cannot bind, more arguments than the protocol allows) unless the
    connection went with it; PostgreSQL's errors with a SQLSTATE are sorted before this
    (`authsvc.storage.sql.classify`)."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        if not isinstance(exc, OperationalError):
            return False
        return not _sqlite_bug(exc.orig)
    if isinstance(exc, sqlite3.OperationalError):
        return not _sqlite_bug(exc)
    return isinstance(exc, OSError)


def _sqlite_bug(exc: BaseException | None) -> bool:
    return sqlite_result_code(exc) in SQLITE_BUG_CODES


def sqlite_result_code(exc: BaseException | None) -> int | None:
    """The primary result code of an error SQLite raised (SQLITE_BUSY, SQLITE_CANTOPEN, ...);
    None for any other error, and for an sqlite3 error SQLite itself did not raise."""
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(exc, sqlite3.Error) or not isinstance(code, int):
        return None
    return code & 0xFF


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


class _Waiters:
    """Tasks waiting for one outcome, each on a future of its own, so that one waiter's
    cancellation leaves the others waiting; all of them wake in the same pass of the loop."""

    __slots__ = ("_futures",)

    def __init__(self) -> None:
        self._futures: list[asyncio.Future[None]] = []

    def wait(self) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self._futures.append(future)
        return future

    def succeed(self) -> None:
        for future in self._futures:
            if not future.done():
                future.set_result(None)

    def fail(self, exc: BaseException) -> None:
        """Raise `exc` in every waiter; cancel them if it is not an error (the task stopped)."""
        for future in self._futures:
            if future.done():
                continue
            if isinstance(exc, Exception):
                future.set_exception(exc)
            else:
                future.cancel()


@dataclass(eq=False)
class _Batch:
    durable: _Waiters = field(default_factory=_Waiters)
    units: int = 0
    broken: BaseException | None = None


@dataclass(eq=False)
class GroupCommit:
    """Runs short SQLite transactions inline, with group commit for the writes.

    `writer_lock` is the store's lock for SQLite's single writer: a batch holds it from BEGIN to
    the end of its COMMIT, so bulk transactions on the driver's thread never overlap a batch.

    A batch's life takes as few passes of the event loop as it can, because on a busy loop each
    pass is a wait while SQLite's one writer waits too: units that arrive while a batch is being
    opened all wake together when it opens and run one after another in that pass (a body never
    waits, so none of them waits for the unit slot); the COMMIT is handed to the worker thread by
    the unit that fills the batch, or in the pass right after the last unit left; the worker
    thread reports the commit with one callback, which lets the next batch open before it wakes
    this batch's units.
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
    _opening: _Waiters | None = field(default=None, init=False)
    _background: set[asyncio.Future[None]] = field(default_factory=set, init=False)

    # reads

    @asynccontextmanager
    async def read(self) -> AsyncIterator[InlineConnection]:
        """A read-only transaction on the reader connection (sees only committed data)."""
        async with self._reads:
            if self._reader is None:
                self._reader = self.engine.connect()
            raw = self._raw(self._reader)
            with unavailable_on_failure():
                raw.execute("BEGIN")
            try:
                yield InlineConnection(self._reader)
            finally:
                with unavailable_on_failure():
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
            with unavailable_on_failure():
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
            durable = batch.durable.wait()
        finally:
            self._leave(batch)
        await durable

    async def _join(self) -> _Batch:
        """Take the unit slot in the open batch, waiting for a batch to open if none is."""
        self._waiting += 1
        try:
            while True:
                batch = self._batch
                if batch is None:
                    if self._opening is None:
                        self._opening = _Waiters()
                        self._in_background(self._open(self._opening))
                    await self._opening.wait()
                    continue
                await self._units.acquire()
                if self._batch is batch:
                    break
                self._units.release()  # it filled up and went to commit: wait for the next one
        except BaseException:
            self._waiting -= 1
            self._close_if_idle()  # this unit may be the one the open batch waited for
            raise
        self._waiting -= 1
        return batch

    async def _open(self, waiters: _Waiters) -> None:
        """Open the next batch for the units waiting for one; they fail with it if it cannot."""
        try:
            await self.writer_lock.acquire()  # also waits out the previous batch's COMMIT
            try:
                if self._writer is None:
                    self._writer = self.engine.connect()
                raw = self._raw(self._writer)
                with unavailable_on_failure():
                    # In the worker thread: another process may hold the lock (busy_timeout).
                    await asyncio.to_thread(raw.execute, "BEGIN IMMEDIATE")
            except BaseException:
                self.writer_lock.release()
                raise
        except BaseException as exc:
            self._opening = None
            waiters.fail(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._opening = None
        self._batch = _Batch()
        waiters.succeed()
        # Should every waiter have gone meanwhile, commit the empty batch, so the writer is free.
        asyncio.get_running_loop().call_soon(self._close_if_idle)

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
        if self._batch is not batch:
            return
        self._batch = None
        if batch.broken is not None:
            self._committed(batch, batch.broken)
            return
        loop = asyncio.get_running_loop()
        raw = self._raw(self._writer)
        self._in_background(loop.run_in_executor(None, self._flush, loop, raw, batch))

    def _flush(
        self, loop: asyncio.AbstractEventLoop, raw: sqlite3.Connection, batch: _Batch
    ) -> None:
        """In the worker thread: the batch's COMMIT, then one callback on the loop."""
        error: BaseException | None = None
        try:
            raw.execute("COMMIT")
        except BaseException as exc:
            error = exc
        loop.call_soon_threadsafe(self._committed, batch, error)

    def _committed(self, batch: _Batch, error: BaseException | None) -> None:
        """On the loop, once the batch's COMMIT has returned or could not be run."""
        if error is not None:
            with contextlib.suppress(sqlite3.Error):
                self._raw(self._writer).execute("ROLLBACK")
        self.writer_lock.release()  # the next batch opens first, then this one's units answer
        if error is None:
            batch.durable.succeed()
            return
        failure = TemporarilyUnavailable("the database failed to commit, retry later")
        failure.__cause__ = error
        batch.durable.fail(failure)

    def _in_background(self, work: Any) -> None:
        future = asyncio.ensure_future(work)
        self._background.add(future)
        future.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Finish the batches in flight, then close both connections."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
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
def unavailable_on_failure() -> Any:
    """Raise an outage inside the block (`is_outage`) as TemporarilyUnavailable; anything else,
    a bug among them, as itself."""
    try:
        yield
    except Exception as exc:
        if is_outage(exc):
            raise TemporarilyUnavailable("the database is unavailable, retry later") from exc
        raise
