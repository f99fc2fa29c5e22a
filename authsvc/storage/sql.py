"""The SQL store: every query the domain runs, on SQLite or PostgreSQL through SQLAlchemy Core.

The domain opens a `transaction()` and calls the methods of `Tx`; each method is one statement. A
transaction is short: no network call and no signing happens inside one.

Database failures are sorted here, once. A deadlock or serialization failure (SQLSTATE 40P01, 40001)
becomes `TransactionConflict`: PostgreSQL rolled the transaction back, so `retry_conflicts` runs
the whole unit of work again. An unreachable, restarting, overloaded or too slow database becomes
`TemporarilyUnavailable`, so a caller is told to retry instead of seeing an internal error. A server
that answers but refuses us (no such database, no such role, a wrong password: SQLSTATE classes 3D,
28) becomes `DatabaseRefused`: at start a `ConfigError` (retrying cannot help, AUTHSVC_DATABASE_URL
must change), to a caller while serving a `TemporarilyUnavailable` like any outage. Anything else
(a constraint violated, a bad statement) is a bug and propagates as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
from collections import namedtuple
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import (
    Engine,
    Insert,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.dialects.sqlite import pysqlite as sqlite_dialect
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from authsvc.config import ConfigError
from authsvc.errors import InvalidRequest, TemporarilyUnavailable
from authsvc.storage import schema as t
from authsvc.storage.engine import inline_sqlite_engine, is_sqlite
from authsvc.storage.group_commit import (
    GroupCommit,
    InlineConnection,
    is_outage,
    sqlite_result_code,
    unavailable_on_failure,
)
from authsvc.storage.records import (
    AuthorizationCodeRecord,
    ClientRecord,
    EventStreamRecord,
    FamilyRecord,
    KeyRecord,
    RefreshTokenRecord,
    RevocationEventRecord,
    UserRecord,
)

log = logging.getLogger(__name__)

# Transaction-scoped PostgreSQL advisory lock ids (pg_advisory_xact_lock). Serialising the rare
# transactions that append revocation events makes cursor order equal commit order, so a tailer
# reading `cursor > last` can never skip an event that commits late.
EVENT_APPEND_LOCK = 0x61757468_0001
KEY_ROTATION_LOCK = 0x61757468_0002
MAINTENANCE_LOCK = 0x61757468_0003
MIGRATION_LOCK = 0x61757468_0004
# The PostgreSQL NOTIFY channel on which committed revocation events are announced to every replica.
EVENTS_CHANNEL = "authsvc_events"

# SQLSTATEs after which PostgreSQL has rolled the transaction back and running it again can work.
CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
# SQLSTATE classes that mean "the database cannot serve us right now": connection exception (08),
# insufficient resources (53, e.g. too many connections), operator intervention (57: shutdown,
# restart, statement timeout), system error (58).
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58"})
LOCK_NOT_AVAILABLE = "55P03"
#: Data exceptions (class 22) that only a value the caller sent can cause, said in the caller's
#: terms: a NUL character, which PostgreSQL's text cannot hold (SQLite stores it), or a string
#: longer than its column. The domain checks what it knows (`subjects.check_subject`); this is
#: the one place that answers invalid_request for every other field, instead of INTERNAL.
UNSTORABLE_VALUE_SQLSTATES = {
    "22021": "a value contains a character the database cannot store (NUL)",
    "22P05": "a value contains a character the database cannot store",
    "22001": "a value is longer than the database stores",
}
# SQLSTATE classes with which a server refuses the connection itself, and what to change then:
# invalid catalog name (3D: no such database), invalid authorization specification (28: no such
# role, a wrong password, or pg_hba.conf does not let the role connect from here).
REFUSED_SQLSTATE_CLASSES = {
    "3D": "create it, or name an existing database in the URL's path",
    "28": "check the user and password in the URL, and that the server's pg_hba.conf lets that "
    "user connect from here",
}
REFUSALS = {
    "3D000": "no such database",
    "28000": "no such role, or it may not connect from here",
    "28P01": "authentication failed",
}
#: SQLite's primary result codes that say the database file cannot be used as configured, which no
#: retry mends: it cannot be opened (SQLITE_CANTOPEN: no such directory, no permission) or written
#: (SQLITE_READONLY: a read-only file or file system; SQLITE_PERM).
SQLITE_REFUSALS = {
    14: "SQLite cannot open the database file",
    8: "SQLite cannot write the database file",
    3: "SQLite may not access the database file",
}
CONFLICT_ATTEMPTS = 5
CONFLICT_BACKOFF = 0.02  # seconds before the second attempt; doubles each time, with jitter

T = TypeVar("T")


class TransactionConflict(Exception):
    """PostgreSQL rolled a transaction back to break a deadlock or keep transactions serializable.

    Nothing it wrote remains, so running the whole unit of work again is safe (`retry_conflicts`).
    Never reaches a caller: after the last attempt it becomes `TemporarilyUnavailable`.
    """

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"transaction rolled back by the database (SQLSTATE {sqlstate})")
        self.sqlstate = sqlstate


class DatabaseRefused(ConfigError, TemporarilyUnavailable):
    """The database server answered and refused us: no such database or role, a wrong password.

    At start it is a configuration error: its message (`str()`) names AUTHSVC_DATABASE_URL, what
    is wrong and what the server said (which names the database or role, never a password), and
    `naming` adds the URL itself, its password hidden. To a caller while serving (a password
    rotated under a running replica) it is temporarily_unavailable, with a description that
    tells nothing of the configuration.
    """

    def __init__(self, problem: str, url: str | URL | None = None) -> None:
        self.problem = problem
        shown = "" if url is None else f"={printable_url(url)}"
        ValueError.__init__(self, f"AUTHSVC_DATABASE_URL{shown}: {problem}")
        self.description = "the database refused the connection, retry later"

    def naming(self, url: str | URL) -> DatabaseRefused:
        """The same refusal, its message naming `url` (password hidden)."""
        return DatabaseRefused(self.problem, url)


def _parsed_without_password(url: str | URL) -> URL:
    """`url` parsed, with any password in its user part already replaced. A password holding an
    unescaped `@` would otherwise be split at its first `@` by the parser, and its tail taken
    for the host: the user part ends at the last `@` before the query."""
    text = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
    scheme, sep, rest = text.partition("://")
    location, question, query = rest.partition("?")
    userinfo, at, host_and_path = location.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        text = f"{scheme}{sep}{user}{':***' if colon else ''}@{host_and_path}{question}{query}"
    return make_url(text)


def printable_url(url: str | URL) -> str:
    """`url` safe to print or log: its password hidden, in the user part or in the query."""
    parsed = _parsed_without_password(url)
    hidden = {key: "redacted" for key in parsed.query if "password" in key.lower()}
    return parsed.update_query_dict(hidden).render_as_string(hide_password=True)


def database_address(url: str | URL) -> str | None:
    """host:port that `url` connects to (PostgreSQL's port 5432 unless it says otherwise); None
    for SQLite, or a URL without a host (a Unix socket)."""
    parsed = _parsed_without_password(url)
    if parsed.host is None or is_sqlite(parsed):
        return None
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    return f"{host}:{parsed.port or 5432}"


def _refusal(code: str, said: str) -> DatabaseRefused:
    what = REFUSALS.get(code, "the server refused the connection")
    return DatabaseRefused(
        f"{what} (the server said: {said}); {REFUSED_SQLSTATE_CLASSES[code[:2]]}"
    )


def sqlstate_of(exc: DBAPIError) -> str | None:
    """The SQLSTATE PostgreSQL sent with the error, if any (SQLite errors have none)."""
    code = getattr(exc.orig, "sqlstate", None)
    return code if isinstance(code, str) else None


def _sqlstate_meaning(code: str | None, said: str) -> Exception | None:
    """A conflict to retry, a temporary outage or a refusal, by SQLSTATE (`said` is the server's
    message); None when it is none of these."""
    if code is not None and code[:2] in REFUSED_SQLSTATE_CLASSES:
        return _refusal(code, said)
    if code in CONFLICT_SQLSTATES:
        return TransactionConflict(code)
    if code in UNSTORABLE_VALUE_SQLSTATES:
        return InvalidRequest(UNSTORABLE_VALUE_SQLSTATES[code])
    if code is not None and (
        code[:2] in UNAVAILABLE_SQLSTATE_CLASSES or code == LOCK_NOT_AVAILABLE
    ):
        if code == "57014":  # query_canceled: our statement_timeout fired
            return TemporarilyUnavailable("the database did not answer in time, retry later")
        return TemporarilyUnavailable("the database is unavailable, retry later")
    return None


def classify(exc: DBAPIError) -> Exception:
    """What a database error means for the caller: a conflict to retry, a temporary outage, a
    refusal to fix in the configuration, or (returned unchanged) a bug."""
    meaning = _sqlstate_meaning(sqlstate_of(exc), str(exc.orig))
    if meaning is not None:
        return meaning
    code = sqlite_result_code(exc.orig)
    if code is not None and code in SQLITE_REFUSALS:
        return DatabaseRefused(
            f"{SQLITE_REFUSALS[code]} ({exc.orig}); its directory must exist, and this user may "
            "write both the directory and the file"
        )
    if exc.connection_invalidated:
        return TemporarilyUnavailable("the database connection was lost, retry later")
    if is_outage(exc):
        return TemporarilyUnavailable("the database is unreachable, retry later")
    return exc


@asynccontextmanager
async def database_errors() -> AsyncIterator[None]:
    """Raise what a database failure inside the block means (see `classify`): a
    `TransactionConflict`, `TemporarilyUnavailable`, `DatabaseRefused`, or the error itself when
    it is a bug."""
    try:
        yield
    except DBAPIError as exc:
        meaning = classify(exc)
        if meaning is exc:
            raise
        raise meaning from exc
    except PoolTimeout as exc:
        raise TemporarilyUnavailable("every database connection is busy, retry later") from exc
    except OSError as exc:  # connection refused or reset, connect timeout (TimeoutError)
        raise TemporarilyUnavailable("the database is unreachable, retry later") from exc


@asynccontextmanager
async def driver_errors(connection: Any) -> AsyncIterator[None]:
    """`database_errors` for statements run on `connection`, the bare asyncpg connection (`Tx`
    hot paths): asyncpg's own exceptions, sorted by the same SQLSTATE table."""
    import asyncpg

    try:
        yield
    except asyncpg.PostgresError as exc:
        meaning = _sqlstate_meaning(exc.sqlstate, str(exc))
        if meaning is None:
            raise
        raise meaning from exc
    except asyncpg.InterfaceError as exc:
        if not connection.is_closed():
            # Refused before it was sent, on a connection still open: a misuse (more than
            # 32,767 arguments, a second operation at once), which retrying cannot fix.
            raise
        raise TemporarilyUnavailable("the database connection was lost, retry later") from exc
    except (asyncpg.InternalClientError, OSError, TimeoutError) as exc:
        # The client-side timeout fired on a silent network, or asyncpg was left mid-operation.
        raise TemporarilyUnavailable("the database connection was lost, retry later") from exc


async def retry_conflicts(
    work: Callable[[], Awaitable[T]], *, attempts: int = CONFLICT_ATTEMPTS
) -> T:
    """Run `work` (one or more whole transactions) again after each `TransactionConflict`, at most
    `attempts` times, backing off with jitter so the same two transactions do not collide again."""
    for attempt in range(1, attempts + 1):
        try:
            return await work()
        except TransactionConflict as exc:
            if attempt == attempts:
                raise TemporarilyUnavailable("the database is busy, retry later") from exc
            delay = CONFLICT_BACKOFF * 2 ** (attempt - 1) * (0.5 + random.random())  # noqa: S311 (jitter, not a secret)
            log.info(
                "transaction conflict; running it again",
                extra={"sqlstate": exc.sqlstate, "attempt": attempt, "delay": round(delay, 3)},
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


# The statements of the hot paths (issuance, rotation, client authentication), built once: building
# a Core statement and its cache key cost about ten times more than executing it. Parameters whose
# names differ from the columns they set are bound explicitly (`b_` names).
_SELECT_CLIENT = select(t.clients).where(t.clients.c.client_id == bindparam("b_client_id"))
_INSERT_FAMILY = insert(t.families)
_INSERT_REFRESH_TOKEN = insert(t.refresh_tokens)
_INSERT_AUDIT = insert(t.audit_events)
_SELECT_REFRESH_TOKEN_WITH_FAMILY = (
    select(
        t.refresh_tokens.c.issued_at,
        t.refresh_tokens.c.used_at,
        t.refresh_tokens.c.expires_at.label("token_expires_at"),
        t.families,
    )
    .join(t.families, t.families.c.family_id == t.refresh_tokens.c.family_id)
    .where(t.refresh_tokens.c.token_digest == bindparam("b_digest"))
)
_MARK_REFRESH_TOKEN_USED = (
    update(t.refresh_tokens)
    .where(t.refresh_tokens.c.token_digest == bindparam("b_digest"))
    .where(t.refresh_tokens.c.used_at.is_(None))
    .values(used_at=bindparam("b_at"))
)
_TOUCH_FAMILY = (
    update(t.families)
    .where(t.families.c.family_id == bindparam("b_family_id"), t.families.c.revoked_at.is_(None))
    .values(last_used_at=bindparam("b_at"), idle_expires_at=bindparam("b_idle_expires_at"))
)


def _append_event(dialect_insert: Any) -> Any:
    """Insert one event, unless it revokes a jti that already has one (`uq_revocation_events_jti`:
    the database keeps the first, and RETURNING then yields no cursor)."""
    e = t.revocation_events
    return (
        dialect_insert(e)
        .on_conflict_do_nothing(index_elements=[e.c.value], index_where=t.JTI_EVENTS)
        .returning(e.c.cursor)
    )


_APPEND_EVENT = {
    "sqlite": _append_event(sqlite.insert),
    "postgresql": _append_event(postgresql.insert),
}


def _lock_login_key(dialect_insert: Any) -> Any:
    """Make a key's row if it has none, and lock it either way, in one statement: the no-op
    update of an existing row takes its row lock, as SELECT … FOR UPDATE would, and a row that
    another transaction is inserting is waited for instead of missed."""
    f = t.login_failures
    statement = dialect_insert(f)
    return statement.on_conflict_do_update(
        index_elements=[f.c.key_digest], set_={"failures": f.c.failures}
    ).returning(f.c.failures)


_LOCK_LOGIN_KEY = {
    "sqlite": _lock_login_key(sqlite.insert),
    "postgresql": _lock_login_key(postgresql.insert),
}


@dataclass(frozen=True)
class DriverStatement:
    """A hot statement as the bare driver runs it: SQL text, bind names in order, row shape."""

    sql: str
    names: tuple[str, ...]
    row: Any  # a namedtuple class of the selected columns, for SELECTs

    @classmethod
    @functools.cache
    def of(cls, statement: Any, dialect_name: str, column_keys: tuple[str, ...]) -> DriverStatement:
        dialect = _DIALECTS[dialect_name]
        compiled = statement.compile(dialect=dialect, column_keys=list(column_keys) or None)
        selected = getattr(statement, "selected_columns", None)
        row = namedtuple("Row", [c.key for c in selected]) if selected is not None else None
        return cls(str(compiled), tuple(compiled.positiontup or ()), row)

    def arguments(self, parameters: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(parameters[name] for name in self.names)


_DIALECTS = {
    "sqlite": sqlite_dialect.dialect(),
    "postgresql": asyncpg_dialect.dialect(),  # type: ignore[no-untyped-call]
}


def _words(value: str) -> tuple[str, ...]:
    return tuple(value.split())


def _client(row: Any) -> ClientRecord:
    return ClientRecord(
        client_id=row.client_id,
        name=row.name,
        public=bool(row.public),
        first_party=bool(row.first_party),
        grant_types=_words(row.grant_types),
        redirect_uris=tuple(json.loads(row.redirect_uris)),
        scopes=_words(row.scopes),
        audiences=_words(row.audiences),
        created_at=row.created_at,
        disabled_at=row.disabled_at,
        secret_digest=row.secret_digest,
    )


def _family(row: Any) -> FamilyRecord:
    return FamilyRecord(
        family_id=row.family_id,
        subject=row.subject,
        client_id=row.client_id,
        device_id=row.device_id,
        scope=_words(row.scope),
        audience=_words(row.audience),
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
        idle_expires_at=row.idle_expires_at,
        revoked_at=row.revoked_at,
        revoke_reason=row.revoke_reason,
    )


def _event(row: Any) -> RevocationEventRecord:
    return RevocationEventRecord(
        cursor=row.cursor,
        occurred_at=row.occurred_at,
        expires_at=row.expires_at,
        kind=row.kind,
        value=row.value,
        not_before=row.not_before,
        state=row.state,
    )


def _key(row: Any) -> KeyRecord:
    return KeyRecord(
        kid=row.kid,
        alg=row.alg,
        state=row.state,
        public_jwk=row.public_jwk,
        published_at=row.published_at,
        activated_at=row.activated_at,
        retired_at=row.retired_at,
        sealed_private=row.sealed_private,
    )


class SqlStore:
    """Opens transactions on one engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sqlite = is_sqlite(engine.url)
        # SQLite has one writer at a time; queueing writers here is cheaper than letting them
        # spin on SQLITE_BUSY inside the driver.
        self._writer = asyncio.Lock() if self.sqlite else None
        inline = inline_sqlite_engine(engine) if self._writer is not None else None
        self._inline = GroupCommit(inline, self._writer) if inline and self._writer else None

    @asynccontextmanager
    async def transaction(self, *, readonly: bool = False, bulk: bool = False) -> AsyncIterator[Tx]:
        """One transaction; committed when the block exits normally, rolled back otherwise.

        On SQLite a short transaction runs on the event loop and writes share commits (see
        `authsvc.storage.group_commit`); `bulk=True` marks a long one (a purge, a backlog, a
        bulk revocation), which runs in the driver's thread instead so it never stalls the loop.
        A bulk write must not be cancelled inside a statement: on SQLite the abandoned cursor
        keeps the write lock until the garbage collector frees it, so one that a caller can
        cancel runs to its end (`authsvc.authority._to_completion`).
        """
        if self._inline is not None and not bulk:
            context = self._inline.read() if readonly else self._inline.write()
            with unavailable_on_failure():
                async with context as conn:
                    yield Tx(conn, sqlite=True)
            return
        if self._writer is not None and not readonly:
            async with self._writer, self._begin(readonly) as tx:
                yield tx
        else:
            async with self._begin(readonly) as tx:
                yield tx

    @asynccontextmanager
    async def _begin(self, readonly: bool) -> AsyncIterator[Tx]:
        if self.sqlite:
            async with database_errors(), self.engine.connect() as conn:
                if readonly:
                    conn = await conn.execution_options(readonly=True)
                async with conn.begin():
                    yield Tx(conn, sqlite=True)
            return
        # PostgreSQL: a connection from SQLAlchemy's pool, with its checks on checkout, its
        # timeout and its recycling, but without a SQLAlchemy Connection around it unless a
        # statement needs one (`Tx.connection`): wrapping each transaction's connection cost
        # about 250 µs of CPU, as much as BEGIN and COMMIT themselves (docs/performance.md). The
        # transaction is asyncpg's own, so the hot statements run on the bare driver in it.
        async with database_errors():
            pooled = await self._checkout()
            tx = Tx(None, sqlite=False, driver=pooled.driver_connection)
            tx.open_connection = functools.partial(self._sqlalchemy_connection, pooled)
            clean = False
            try:
                transaction = tx.driver.transaction()
                async with driver_errors(tx.driver):
                    await transaction.start()
                try:
                    yield tx
                except BaseException as exc:
                    # Cancelled, a statement may still be in flight: asyncpg cannot roll back
                    # until it answers, and the error from trying would replace the cancellation.
                    if not isinstance(exc, asyncio.CancelledError):
                        async with driver_errors(tx.driver):
                            await transaction.rollback()
                        clean = True
                    raise
                async with driver_errors(tx.driver):
                    await transaction.commit()
                clean = True
            finally:
                await self._give_back(pooled, tx, clean)

    async def _checkout(self) -> PoolProxiedConnection:
        """A connection from the pool; its failures raised as `engine.connect()` raises them (a
        DBAPIError, which `database_errors` sorts), not as the driver adapter's own errors."""
        dialect = self.engine.dialect
        try:
            return await self.engine.raw_connection()
        except dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(
                None, None, exc, dialect.loaded_dbapi.Error, dialect=dialect
            ) from exc

    async def _sqlalchemy_connection(self, pooled: PoolProxiedConnection) -> AsyncConnection:
        """A SQLAlchemy Connection on a transaction's pooled connection, in autocommit so that
        it runs its statements inside asyncpg's transaction rather than beginning its own (an
        asyncpg transaction begun inside another is a SAVEPOINT)."""
        conn = AsyncConnection(self.engine, Connection(self.engine.sync_engine, connection=pooled))
        return await conn.execution_options(isolation_level="AUTOCOMMIT")

    @staticmethod
    async def _give_back(pooled: PoolProxiedConnection, tx: Tx, clean: bool) -> None:
        """Return a transaction's connection to the pool, once: through its SQLAlchemy Connection
        where one was made (which resets the isolation level it set), directly otherwise."""
        conn = tx.conn if isinstance(tx.conn, AsyncConnection) else None
        if not clean:
            # BEGIN, COMMIT or ROLLBACK failed, or the call was cancelled: whatever state asyncpg
            # is left in, the pool must not hand this connection out again. Closing it rolls the
            # transaction back on the server.
            with contextlib.suppress(Exception):
                await (conn.invalidate() if conn is not None else greenlet_spawn(pooled.invalidate))
        await (conn.close() if conn is not None else greenlet_spawn(pooled.close))

    @property
    def engines(self) -> tuple[Engine, ...]:
        """Every engine that runs this store's statements (for instrumentation: the SQLite
        transactions that run on the event loop use a second, synchronous engine)."""
        inline = (self._inline.engine,) if self._inline is not None else ()
        return (self.engine.sync_engine, *inline)

    async def close(self) -> None:
        if self._inline is not None:
            await self._inline.close()
        await self.engine.dispose()


class Tx:
    """The statements of one transaction.

    The statements of the hot paths (client lookup, issuance, rotation) run on the bare driver
    connection of the transaction, compiled once by SQLAlchemy (`DriverStatement`): SQLAlchemy's
    execution layer (execution context, result wrapping, and on PostgreSQL a greenlet switch per
    statement) cost more than the statement itself, 30-60 µs a statement (docs/performance.md).
    The rest go through SQLAlchemy as usual.
    """

    def __init__(
        self, conn: AsyncConnection | InlineConnection | None, *, sqlite: bool, driver: Any = None
    ) -> None:
        self.conn = conn  # on PostgreSQL, made by `open_connection` when first needed
        self.open_connection: Callable[[], Awaitable[AsyncConnection]] | None = None
        self.sqlite = sqlite
        self.driver = driver  # the asyncpg connection whose transaction this is (PostgreSQL)

    async def connection(self) -> AsyncConnection | InlineConnection:
        """The SQLAlchemy connection that runs this transaction's other statements."""
        if self.conn is None:
            assert self.open_connection is not None
            self.conn = await self.open_connection()
        return self.conn

    async def _exec(self, statement: Any, parameters: Any = None) -> Any:
        conn = self.conn if self.conn is not None else await self.connection()
        return await conn.execute(statement, parameters)

    async def _driver_rows(self, statement: Any, parameters: dict[str, Any]) -> list[Any]:
        """The rows of a hot SELECT, as namedtuples of its selected columns."""
        if isinstance(self.conn, InlineConnection):
            driver = DriverStatement.of(statement, "sqlite", ())
            cursor = self.conn.raw.execute(driver.sql, driver.arguments(parameters))
            return [driver.row._make(r) for r in cursor.fetchall()]
        if self.sqlite:  # a bulk transaction on the driver's thread: SQLAlchemy as usual
            return list(await self._exec(statement, parameters))
        driver = DriverStatement.of(statement, "postgresql", ())
        async with driver_errors(self.driver):
            records = await self.driver.fetch(driver.sql, *driver.arguments(parameters))
        return [driver.row._make(r.values()) for r in records]

    async def _driver_write(self, statement: Any, parameters: dict[str, Any]) -> int:
        """Run a hot INSERT or UPDATE; the number of rows it changed."""
        keys = tuple(parameters) if isinstance(statement, Insert) else ()
        if isinstance(self.conn, InlineConnection):
            driver = DriverStatement.of(statement, "sqlite", keys)
            return int(self.conn.raw.execute(driver.sql, driver.arguments(parameters)).rowcount)
        if self.sqlite:
            return int((await self._exec(statement, parameters)).rowcount)
        driver = DriverStatement.of(statement, "postgresql", keys)
        async with driver_errors(self.driver):
            status = await self.driver.execute(driver.sql, *driver.arguments(parameters))
        return int(status.rsplit(" ", 1)[-1])  # "UPDATE 1", "INSERT 0 1"

    async def lock(self, lock_id: int) -> None:
        """Take a transaction-scoped exclusive lock (PostgreSQL advisory; SQLite holds one
        writer at a time already)."""
        if not self.sqlite:
            await self._exec(select(func.pg_advisory_xact_lock(lock_id)))

    async def try_lock(self, lock_id: int) -> bool:
        """Take the lock if free; False when another replica holds it."""
        if self.sqlite:
            return True
        result = await self._exec(select(func.pg_try_advisory_xact_lock(lock_id)))
        return bool(result.scalar_one())

    # clients

    async def insert_client(self, client: ClientRecord) -> None:
        await self._exec(
            insert(t.clients).values(
                client_id=client.client_id,
                name=client.name,
                secret_digest=client.secret_digest,
                public=client.public,
                first_party=client.first_party,
                grant_types=" ".join(client.grant_types),
                redirect_uris=json.dumps(list(client.redirect_uris)),
                scopes=" ".join(client.scopes),
                audiences=" ".join(client.audiences),
                created_at=client.created_at,
                disabled_at=client.disabled_at,
            )
        )

    async def get_client(self, client_id: str) -> ClientRecord | None:
        rows = await self._driver_rows(_SELECT_CLIENT, {"b_client_id": client_id})
        return _client(rows[0]) if rows else None

    async def list_clients(self) -> list[ClientRecord]:
        result = await self._exec(select(t.clients).order_by(t.clients.c.created_at))
        return [_client(row) for row in result]

    async def disable_client(self, client_id: str, at: float) -> bool:
        result = await self._exec(
            update(t.clients)
            .where(t.clients.c.client_id == client_id, t.clients.c.disabled_at.is_(None))
            .values(disabled_at=at)
        )
        return int(result.rowcount) == 1

    async def set_client_secret(self, client_id: str, secret_digest: bytes) -> bool:
        result = await self._exec(
            update(t.clients)
            .where(t.clients.c.client_id == client_id, t.clients.c.public.is_(False))
            .values(secret_digest=secret_digest)
        )
        return int(result.rowcount) > 0

    async def lock_new_families(self) -> None:
        """Hold off other transactions' new families until this one ends, once those already
        writing families have ended (PostgreSQL: the families table in SHARE mode, which only
        row writes wait for); SQLite holds one writer at a time already."""
        if not self.sqlite:
            await self._exec(text("LOCK TABLE families IN SHARE MODE"))

    async def is_subject(self, name: str) -> bool:
        """Whether `name` is the subject of a user or of a family (live or not, until purged)."""
        users, families = t.users.c, t.families.c
        statement = select(
            or_(exists().where(users.subject == name), exists().where(families.subject == name))
        )
        return bool((await self._exec(statement)).scalar())

    # users

    async def insert_user(self, user: UserRecord) -> None:
        await self._exec(
            insert(t.users).values(
                subject=user.subject,
                username=user.username,
                password_hash=user.password_hash,
                created_at=user.created_at,
            )
        )

    async def get_user(self, username: str) -> UserRecord | None:
        result = await self._exec(select(t.users).where(t.users.c.username == username))
        row = result.first()
        if row is None:
            return None
        return UserRecord(row.subject, row.username, row.created_at, row.password_hash)

    async def set_password_hash(self, subject: str, password_hash: str) -> None:
        await self._exec(
            update(t.users).where(t.users.c.subject == subject).values(password_hash=password_hash)
        )

    # failed logins

    async def lock_login_failures(
        self, digests: Iterable[bytes], at: float
    ) -> dict[bytes, tuple[float, ...]]:
        """The failures recorded for each key, each row locked until the transaction ends (and
        made, empty and expiring at `at`, where there is none yet).

        Rows are locked one at a time in digest order, so two transactions after the same keys
        queue behind each other instead of deadlocking, and neither loses the other's count.
        """
        statement = _LOCK_LOGIN_KEY["sqlite" if self.sqlite else "postgresql"]
        found: dict[bytes, tuple[float, ...]] = {}
        for digest in sorted(set(digests)):
            result = await self._exec(
                statement, {"key_digest": digest, "failures": "[]", "expires_at": at}
            )
            found[digest] = tuple(float(f) for f in json.loads(result.scalar_one()))
        return found

    async def set_login_failures(
        self, digest: bytes, failures: Iterable[float], expires_at: float
    ) -> None:
        """Replace a key's failures (its row locked by `lock_login_failures`)."""
        f = t.login_failures
        await self._exec(
            update(f)
            .where(f.c.key_digest == digest)
            .values(failures=json.dumps(list(failures)), expires_at=expires_at)
        )

    async def forget_login_failures(self, digest: bytes) -> None:
        """Clear a key's failures (an account after a correct password)."""
        f = t.login_failures
        await self._exec(delete(f).where(f.c.key_digest == digest))

    # families and refresh tokens

    async def insert_family(self, family: FamilyRecord) -> None:
        await self._driver_write(
            _INSERT_FAMILY,
            {
                "family_id": family.family_id,
                "subject": family.subject,
                "client_id": family.client_id,
                "device_id": family.device_id,
                "scope": " ".join(family.scope),
                "audience": " ".join(family.audience),
                "created_at": family.created_at,
                "last_used_at": family.last_used_at,
                "expires_at": family.expires_at,
                "idle_expires_at": family.idle_expires_at,
            },
        )

    async def get_family(self, family_id: str) -> FamilyRecord | None:
        result = await self._exec(select(t.families).where(t.families.c.family_id == family_id))
        row = result.first()
        return _family(row) if row else None

    async def touch_family(self, family_id: str, at: float, idle_expires_at: float) -> bool:
        """Record a rotation on its family; False if the family is revoked (by a transaction
        that committed after this one read it: PostgreSQL re-checks the row it waited for)."""
        changed = await self._driver_write(
            _TOUCH_FAMILY,
            {"b_family_id": family_id, "b_at": at, "b_idle_expires_at": idle_expires_at},
        )
        return changed > 0

    async def revoke_family(self, family_id: str, at: float, reason: str) -> bool:
        """Mark one family revoked; False if it was already revoked or does not exist."""
        result = await self._exec(
            update(t.families)
            .where(t.families.c.family_id == family_id, t.families.c.revoked_at.is_(None))
            .values(revoked_at=at, revoke_reason=reason)
        )
        return int(result.rowcount) > 0

    async def revoke_families_where(self, at: float, reason: str, **match: str) -> list[str]:
        """Revoke every live family matching `subject=` or `client_id=`; their ids.

        One statement with no list of ids: a client may have more live families than a statement
        may carry parameters (32,767 on PostgreSQL, 32,766 in SQLite's default build)."""
        conditions = [t.families.c[name] == value for name, value in match.items()]
        live = and_(*conditions, t.families.c.revoked_at.is_(None), t.families.c.expires_at > at)
        result = await self._exec(
            update(t.families)
            .where(live)
            .values(revoked_at=at, revoke_reason=reason)
            .returning(t.families.c.family_id)
        )
        # Up to a client's every family: scalars() builds the list without a Row per family.
        return list(result.scalars())

    async def live_families(self, subject: str, at: float) -> list[FamilyRecord]:
        result = await self._exec(
            select(t.families)
            .where(
                t.families.c.subject == subject,
                t.families.c.revoked_at.is_(None),
                t.families.c.expires_at > at,
                t.families.c.idle_expires_at > at,
            )
            .order_by(t.families.c.created_at)
        )
        return [_family(row) for row in result]

    async def insert_refresh_token(self, token: RefreshTokenRecord) -> None:
        await self._driver_write(
            _INSERT_REFRESH_TOKEN,
            {
                "token_digest": token.token_digest,
                "family_id": token.family_id,
                "issued_at": token.issued_at,
                "used_at": token.used_at,
                "expires_at": token.expires_at,
            },
        )

    async def refresh_token_with_family(
        self, token_digest: bytes
    ) -> tuple[RefreshTokenRecord, FamilyRecord] | None:
        rows = await self._driver_rows(
            _SELECT_REFRESH_TOKEN_WITH_FAMILY, {"b_digest": token_digest}
        )
        if not rows:
            return None
        row = rows[0]
        token = RefreshTokenRecord(
            family_id=row.family_id,
            issued_at=row.issued_at,
            used_at=row.used_at,
            expires_at=row.token_expires_at,
            token_digest=token_digest,
        )
        return token, _family(row)

    async def mark_refresh_token_used(self, token_digest: bytes, at: float) -> bool:
        """The rotation compare-and-set: True for exactly one caller per token."""
        changed = await self._driver_write(
            _MARK_REFRESH_TOKEN_USED, {"b_digest": token_digest, "b_at": at}
        )
        return changed == 1

    # authorization codes

    async def insert_code(self, code: AuthorizationCodeRecord) -> bool:
        """Store a code, one per client and PKCE challenge (`uq_authorization_codes_challenge`).

        Where the client has one for the challenge already, the new one replaces it if that one
        is unused and for the same subject (the same consent or sign-in posted twice: the
        browser follows the last answer); otherwise nothing is stored and the answer is False.
        A code stored used already is a denial (`deny_request`), which answers the request too.
        One statement, so concurrent posts on PostgreSQL are decided by the index too."""
        dialect_insert = sqlite.insert if self.sqlite else postgresql.insert
        c = t.authorization_codes
        values = {
            "code_digest": code.code_digest,
            "client_id": code.client_id,
            "redirect_uri": code.redirect_uri,
            "redirect_uri_sent": code.redirect_uri_sent,
            "subject": code.subject,
            "scope": " ".join(code.scope),
            "audience": " ".join(code.audience),
            "code_challenge": code.code_challenge,
            "device_id": code.device_id,
            "created_at": code.created_at,
            "expires_at": code.expires_at,
            "used_at": code.used_at,
        }
        statement = dialect_insert(c).values(values)
        # The replacement takes every new value but the request's key and the subject it
        # matched on, and the row starts over unused (or, for a denial, used).
        kept = {"client_id", "code_challenge", "subject"}
        replaced: dict[str, Any] = {"family_id": None}
        replaced |= {name: statement.excluded[name] for name in values if name not in kept}
        result = await self._exec(
            statement.on_conflict_do_update(
                index_elements=[c.c.client_id, c.c.code_challenge],
                set_=replaced,
                where=and_(c.c.used_at.is_(None), c.c.subject == statement.excluded.subject),
            ).returning(c.c.code_digest)
        )
        return result.first() is not None

    async def get_code(self, code_digest: bytes) -> AuthorizationCodeRecord | None:
        c = t.authorization_codes
        result = await self._exec(select(c).where(c.c.code_digest == code_digest))
        row = result.first()
        if row is None:
            return None
        return AuthorizationCodeRecord(
            client_id=row.client_id,
            redirect_uri=row.redirect_uri,
            subject=row.subject,
            scope=_words(row.scope),
            audience=_words(row.audience),
            device_id=row.device_id,
            created_at=row.created_at,
            expires_at=row.expires_at,
            used_at=row.used_at,
            family_id=row.family_id,
            code_challenge=row.code_challenge,
            code_digest=row.code_digest,
            redirect_uri_sent=row.redirect_uri_sent,
        )

    async def mark_code_used(self, code_digest: bytes, at: float) -> bool:
        c = t.authorization_codes
        result = await self._exec(
            update(c)
            .where(c.c.code_digest == code_digest, c.c.used_at.is_(None))
            .values(used_at=at)
        )
        return int(result.rowcount) == 1

    async def discard_unused_codes(self, **match: str) -> int:
        """Delete the codes not yet redeemed that match `subject=` or `client_id=`; how many.
        Redeemed ones stay until they expire, so that a second use is still seen as reuse."""
        c = t.authorization_codes
        conditions = [c.c[name] == value for name, value in match.items()]
        result = await self._exec(delete(c).where(*conditions, c.c.used_at.is_(None)))
        return int(result.rowcount)

    async def set_code_family(self, code_digest: bytes, family_id: str) -> None:
        c = t.authorization_codes
        await self._exec(
            update(c).where(c.c.code_digest == code_digest).values(family_id=family_id)
        )

    # keys

    async def list_keys(self) -> list[KeyRecord]:
        result = await self._exec(select(t.signing_keys).order_by(t.signing_keys.c.published_at))
        return [_key(row) for row in result]

    async def insert_key(self, key: KeyRecord) -> None:
        await self._exec(
            insert(t.signing_keys).values(
                kid=key.kid,
                alg=key.alg,
                state=key.state,
                public_jwk=key.public_jwk,
                sealed_private=key.sealed_private,
                published_at=key.published_at,
                activated_at=key.activated_at,
                retired_at=key.retired_at,
            )
        )

    async def set_key_state(self, kid: str, state: str, at: float) -> None:
        column = {"active": "activated_at", "retired": "retired_at"}[state]
        await self._exec(
            update(t.signing_keys)
            .where(t.signing_keys.c.kid == kid)
            .values(state=state, **{column: at})
        )

    async def delete_key(self, kid: str) -> None:
        await self._exec(delete(t.signing_keys).where(t.signing_keys.c.kid == kid))

    # revocation events and audit

    async def append_events(self, events: Iterable[RevocationEventRecord]) -> list[int | None]:
        """Append events (their `cursor` is ignored and assigned here); the new cursors, in order,
        with None for a `jti` event the table already holds (that jti is revoked already, by an
        earlier or a concurrent transaction: the unique index decides, not a read).

        Cursors come from `event_stream.last_cursor`, never from the table's own rows: the newest
        events may have been purged, and their cursors must not be handed out again.

        On PostgreSQL this also sends NOTIFY on `EVENTS_CHANNEL` with the last cursor; the server
        delivers it to every listening replica when, and only if, this transaction commits.
        """
        await self.lock(EVENT_APPEND_LOCK)
        events = list(events)
        if not events:
            return []
        s = t.event_stream
        result = await self._exec(
            update(s).values(last_cursor=s.c.last_cursor + len(events)).returning(s.c.last_cursor)
        )
        last = int(result.scalar_one())
        assigned = range(last - len(events) + 1, last + 1)
        rows = [
            {
                "cursor": cursor,
                "occurred_at": event.occurred_at,
                "expires_at": event.expires_at,
                "kind": event.kind,
                "value": event.value,
                "not_before": event.not_before,
                "state": event.state,
            }
            for cursor, event in zip(assigned, events, strict=True)
        ]
        # Given many rows (an event per family of a subject), SQLAlchemy sends them as a few
        # multi-row INSERTs ("insertmanyvalues"), each within the database's parameter limit.
        result = await self._exec(_APPEND_EVENT["sqlite" if self.sqlite else "postgresql"], rows)
        inserted = set(result.scalars())
        # A jti revoked already keeps its first event, and its cursor here goes unused.
        cursors = [cursor if cursor in inserted else None for cursor in assigned]
        appended = [c for c in cursors if c is not None]
        used = max(appended, default=last - len(events))
        if used != last:
            # Hand the unused cursors at the end back (this transaction holds the stream's row),
            # so revoking a token again changes nothing; one between two events stays a gap,
            # which no subscriber can tell from a purged event.
            await self._exec(update(s).values(last_cursor=used))
        if appended and not self.sqlite:
            await self._exec(select(func.pg_notify(EVENTS_CHANNEL, str(appended[-1]))))
        return cursors

    async def events_after(self, cursor: int, limit: int = 1000) -> list[RevocationEventRecord]:
        e = t.revocation_events
        result = await self._exec(
            select(e).where(e.c.cursor > cursor).order_by(e.c.cursor).limit(limit)
        )
        return [_event(row) for row in result]

    async def events_in_force(self, at: float, after: int = 0) -> list[RevocationEventRecord]:
        """Every event after `after` whose tokens may still be valid at `at`."""
        e = t.revocation_events
        result = await self._exec(
            select(e).where(e.c.cursor > after, e.c.expires_at > at).order_by(e.c.cursor)
        )
        return [_event(row) for row in result]

    async def event_stream(self) -> EventStreamRecord:
        """This database's event stream: its identity and newest cursor (one row, made by the
        migrations; the id is empty until `name_event_stream`)."""
        row = (await self._exec(select(t.event_stream))).one()
        return EventStreamRecord(stream_id=row.stream_id, last_cursor=int(row.last_cursor))

    async def name_event_stream(self, stream_id: str) -> EventStreamRecord:
        """Give the event stream `stream_id` unless it has a name already; the stream as it is
        now. Of replicas racing to name it, the first to commit wins and the others read its
        name (PostgreSQL checks the condition again once the row is free)."""
        s = t.event_stream
        await self._exec(update(s).where(s.c.stream_id == "").values(stream_id=stream_id))
        return await self.event_stream()

    async def last_event_cursor(self) -> int:
        """The newest cursor ever assigned, whether or not its event has been purged since."""
        return (await self.event_stream()).last_cursor

    async def append_audit(
        self,
        kind: str,
        at: float,
        *,
        subject: str | None = None,
        client_id: str | None = None,
        family_id: str | None = None,
        **detail: Any,
    ) -> None:
        await self._driver_write(
            _INSERT_AUDIT,
            {
                "occurred_at": at,
                "kind": kind,
                "subject": subject,
                "client_id": client_id,
                "family_id": family_id,
                "detail": json.dumps(detail, sort_keys=True),
            },
        )

    async def audit_events(self, kind: str | None = None) -> list[dict[str, Any]]:
        a = t.audit_events
        query = select(a).order_by(a.c.id)
        if kind is not None:
            query = query.where(a.c.kind == kind)
        result = await self._exec(query)
        return [dict(row._mapping) for row in result]

    # cleanup

    async def purge_expired(
        self, at: float, audit_retention: float, *, limit: int
    ) -> dict[str, int]:
        """Delete at most `limit` rows per table that can no longer matter at `at`; counts per
        table. A count of `limit` means that table may hold more: purge again, in a transaction of
        its own, so no transaction grows with the backlog (a long one would hold SQLite's writer,
        and on PostgreSQL outlast the statement timeout and redo the same work every pass)."""
        rt, fam, codes, ev = (
            t.refresh_tokens,
            t.families,
            t.authorization_codes,
            t.revocation_events,
        )
        dead_families = select(fam.c.family_id).where(
            or_(fam.c.expires_at <= at, fam.c.idle_expires_at <= at, fam.c.revoked_at.is_not(None))
        )
        f = t.login_failures
        # Each: the table's key, and which of its rows are done with.
        done = {
            # A used token stays as long as its family lives, however old: presenting it again
            # is reuse, which must revoke the family (`rotation.classify_refresh`), and a purged
            # one would only be "unknown". So a family keeps one row per rotation for at most its
            # absolute lifetime; an unused token goes at its own expiry.
            "refresh_tokens": (
                rt.c.token_digest,
                or_(
                    and_(rt.c.expires_at <= at, rt.c.used_at.is_(None)),
                    rt.c.family_id.in_(dead_families),
                ),
            ),
            # A family row outlives its revocation briefly so a replay still reads as revoked.
            "families": (
                fam.c.family_id,
                and_(
                    or_(fam.c.expires_at <= at, fam.c.idle_expires_at <= at),
                    ~exists().where(rt.c.family_id == fam.c.family_id),
                ),
            ),
            "authorization_codes": (codes.c.code_digest, codes.c.expires_at <= at - 3600),
            "revocation_events": (ev.c.cursor, ev.c.expires_at <= at),
            "audit_events": (
                t.audit_events.c.id,
                t.audit_events.c.occurred_at <= at - audit_retention,
            ),
            "login_failures": (f.c.key_digest, f.c.expires_at <= at),
        }
        counts = {}
        for name, (key, condition) in done.items():
            batch = select(key).where(condition).limit(limit)
            if name == "login_failures":
                # Rows a login holds right now are skipped (PostgreSQL), not waited for: that
                # login rewrites its row anyway, and waiting in expiry order could deadlock.
                batch = batch.with_for_update(skip_locked=True)
            result = await self._exec(delete(key.table).where(key.in_(batch)))
            counts[name] = int(result.rowcount)
        return counts
