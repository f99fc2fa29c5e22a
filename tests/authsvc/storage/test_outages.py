"""An outage (busy, locked, I/O, disk full) tells the caller to retry later, and a bug in a
statement (a missing table, too many variables) surfaces as the bug it is: retrying cannot help,
and "retry later" would send every client round the loop and hide the bug from the logs. SQLite's
errors are sorted by their result code; the store's four kinds of transaction are run on each
backend."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from authsvc.errors import TemporarilyUnavailable
from authsvc.storage.group_commit import is_outage
from authsvc.storage.records import UserRecord
from authsvc.storage.sql import SqlStore, classify, driver_errors


def raised_by_sqlite(tmp_path: Path, sql: str, *, locked: bool = False) -> sqlite3.Error:
    """The error SQLite itself raises for `sql` (with its result code), optionally while
    another connection holds the write lock."""
    path = tmp_path / "errors.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE IF NOT EXISTS t (x)")
    if locked:
        holder.execute("BEGIN EXCLUSIVE")
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute(sql)
    except sqlite3.Error as exc:
        return exc
    finally:
        conn.close()
        holder.close()
    raise AssertionError(f"{sql!r} did not fail")


def wrapped(orig: BaseException, cls: type[DBAPIError] = OperationalError) -> DBAPIError:
    return cls("SELECT 1", {}, orig)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM no_such_table",  # SQLITE_ERROR: the schema is not what the code expects
        "SELECT " + ", ".join("?" for _ in range(40_000)),  # too many SQL variables
        "SELEC 1",  # a syntax error
    ],
)
def test_a_bug_in_a_statement_is_not_an_outage(tmp_path: Path, sql: str) -> None:
    error = raised_by_sqlite(tmp_path, sql)
    assert not is_outage(error)
    assert not is_outage(wrapped(error))
    assert classify(wrapped(error)) is not None
    assert not isinstance(classify(wrapped(error)), TemporarilyUnavailable)


def test_a_locked_database_is_an_outage(tmp_path: Path) -> None:
    error = raised_by_sqlite(tmp_path, "INSERT INTO t VALUES (1)", locked=True)
    assert error.sqlite_errorcode == sqlite3.SQLITE_BUSY
    assert is_outage(error)
    assert is_outage(wrapped(error))
    assert isinstance(classify(wrapped(error)), TemporarilyUnavailable)


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        # Raised by Python code, not SQLite: no result code, so taken as an outage as before.
        (sqlite3.OperationalError("disk I/O error"), True),
        (OSError("connection refused"), True),
        (wrapped(sqlite3.OperationalError("disk I/O error")), True),
        # The driver refusing a call (a parameter it cannot bind, too many arguments) is a bug,
        # unless the connection went with it (below).
        (wrapped(sqlite3.InterfaceError("Error binding parameter 1"), InterfaceError), False),
        (
            wrapped(
                ValueError("the number of query arguments cannot exceed 32767"), InterfaceError
            ),
            False,
        ),
        (wrapped(sqlite3.IntegrityError("UNIQUE constraint failed"), IntegrityError), False),
        (sqlite3.IntegrityError("UNIQUE constraint failed"), False),
        (ValueError("not a database error"), False),
    ],
)
def test_is_outage(error: BaseException, outage: bool) -> None:
    assert is_outage(error) is outage


@pytest.mark.parametrize("cls", [IntegrityError, InterfaceError, OperationalError])
def test_a_lost_connection_is_an_outage_whatever_its_error(cls: type[DBAPIError]) -> None:
    error = wrapped(sqlite3.IntegrityError("mid-statement"), cls)
    error.connection_invalidated = True
    assert is_outage(error)


@pytest.mark.parametrize(
    ("readonly", "bulk"),
    [(False, False), (True, False), (False, True), (True, True)],
    ids=["inline write", "inline read", "bulk write", "bulk read"],
)
async def test_a_bug_reaches_the_caller_as_itself_and_the_store_keeps_working(
    store: SqlStore, readonly: bool, bulk: bool
) -> None:

    async def a_query_on_a_missing_table() -> None:
        async with store.transaction(readonly=readonly, bulk=bulk) as tx:
            conn = await tx.connection()
            await conn.execute(text("SELECT * FROM no_such_table"))

    # The bug itself (SQLite's OperationalError, PostgreSQL's ProgrammingError), not
    # TemporarilyUnavailable.
    with pytest.raises(DBAPIError, match="no_such_table"):
        await a_query_on_a_missing_table()
    async with store.transaction() as tx:
        await tx.insert_user(UserRecord("sub-ada", "ada", 0.0, "hash"))  # the store still works
    async with store.transaction(readonly=True) as tx:
        assert await tx.get_user("ada") is not None


TOO_MANY_ARGUMENTS = 40_000  # asyncpg's protocol carries at most 32,767


async def test_too_many_arguments_for_postgres_is_a_bug_on_either_path(store: SqlStore) -> None:
    if store.sqlite:
        pytest.skip("PostgreSQL's driver limit; SQLite's own is a result code (above)")
    import asyncpg

    placeholders = ", ".join(f"${i}" for i in range(1, TOO_MANY_ARGUMENTS + 1))
    async with store.transaction() as tx:
        # The hot paths' bare driver: asyncpg refuses the call on a connection still open.
        with pytest.raises(asyncpg.InterfaceError, match="32767"):
            async with driver_errors(tx.driver):
                await tx.driver.fetch(
                    f"SELECT 1 WHERE 1 IN ({placeholders})", *range(TOO_MANY_ARGUMENTS)
                )

    async def through_sqlalchemy() -> None:
        async with store.transaction() as tx:
            conn = await tx.connection()
            names = {f"p{i}": i for i in range(TOO_MANY_ARGUMENTS)}
            in_list = ", ".join(f":{name}" for name in names)
            await conn.execute(text(f"SELECT 1 WHERE 1 IN ({in_list})"), names)

    with pytest.raises(InterfaceError, match="32767"):
        await through_sqlalchemy()
    async with store.transaction() as tx:  # and the store still works
        await tx.insert_user(UserRecord("sub-bea", "bea", 0.0, "hash"))


async def test_a_closed_postgres_connection_is_an_outage(store: SqlStore) -> None:
    if store.sqlite:
        pytest.skip("PostgreSQL's driver")
    import asyncpg

    url = store.engine.url.set(drivername="postgresql")
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    await conn.close()
    with pytest.raises(TemporarilyUnavailable, match="connection was lost"):
        async with driver_errors(conn):
            await conn.fetch("SELECT 1")
