"""The storage baselines: the SQL transactions of `IssueTokenPair` and `Rotate`, run by a bare driver.

    python -m bench.raw_sql sqlite issue|rotate --db PATH --duration S
    python -m bench.raw_sql postgres issue|rotate --dsn postgresql://... --duration S --concurrency C

The statements are the ones authsvc runs (authsvc/storage/sql.py: `get_client`, `insert_family`,
`get_client` of the subject (RFC 9068 §5: no user is a client), `insert_refresh_token`,
`append_audit` for an issuance; `refresh_token_with_family`,
`mark_refresh_token_used`, `insert_refresh_token`, `touch_family` for a rotation), with the same
durability: SQLite in WAL mode with `synchronous=FULL` and `BEGIN IMMEDIATE`, one commit per
transaction; PostgreSQL with its defaults (fsync on, synchronous_commit on). The schema is authsvc's
own, created by its migrations before this runs. It prints one JSON line like `bench.grpc_load`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import secrets
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.machine import percentile

DAY = 86400.0
CLIENT_ID = "raw-bench-client"

SELECT_CLIENT = (
    "SELECT client_id, name, secret_digest, public, first_party, grant_types, redirect_uris, "
    "scopes, audiences, created_at, disabled_at FROM clients WHERE client_id = {0}"
)
INSERT_CLIENT = (
    "INSERT INTO clients (client_id, name, secret_digest, public, first_party, grant_types, "
    "redirect_uris, scopes, audiences, created_at, disabled_at) "
    "VALUES ({0}, 'raw', {1}, false, false, 'client_credentials refresh_token', '[]', "
    "'api:read api:write', 'bench-api', {2}, NULL) ON CONFLICT DO NOTHING"
)
INSERT_FAMILY = (
    "INSERT INTO families (family_id, subject, client_id, device_id, scope, audience, created_at, "
    "last_used_at, expires_at, idle_expires_at) "
    "VALUES ({0}, {1}, {2}, '', 'api:read api:write', 'bench-api', {3}, {4}, {5}, {6})"
)
INSERT_REFRESH_TOKEN = (
    "INSERT INTO refresh_tokens (token_digest, family_id, issued_at, used_at, expires_at) "
    "VALUES ({0}, {1}, {2}, NULL, {3})"
)
INSERT_AUDIT = (
    "INSERT INTO audit_events (occurred_at, kind, subject, client_id, family_id, detail) "
    "VALUES ({0}, 'token_pair_issued', {1}, {2}, {3}, '{{}}')"
)
SELECT_REFRESH_TOKEN = (
    "SELECT refresh_tokens.issued_at, refresh_tokens.used_at, "
    "refresh_tokens.expires_at AS token_expires_at, families.family_id, families.subject, "
    "families.client_id, families.device_id, families.scope, families.audience, "
    "families.created_at, families.last_used_at, families.expires_at, families.idle_expires_at, "
    "families.revoked_at, families.revoke_reason FROM refresh_tokens "
    "JOIN families ON families.family_id = refresh_tokens.family_id "
    "WHERE refresh_tokens.token_digest = {0}"
)
MARK_USED = (
    "UPDATE refresh_tokens SET used_at = {0} WHERE refresh_tokens.token_digest = {1} "
    "AND refresh_tokens.used_at IS NULL"
)
TOUCH_FAMILY = (
    "UPDATE families SET last_used_at = {0}, idle_expires_at = {1} WHERE families.family_id = {2} "
    "AND families.revoked_at IS NULL"
)


def _sqlite(sql: str) -> str:
    return sql.format(*("?" * 12))


def _postgres(sql: str) -> str:
    return sql.format(*(f"${i}" for i in range(1, 13)))


def new_id() -> str:
    return secrets.token_urlsafe(16)


def new_refresh_digest() -> bytes:
    return hashlib.sha256(("asrt_" + secrets.token_urlsafe(32)).encode()).digest()


def _result(latencies: list[float], elapsed: float, mode: str, **extra: Any) -> dict[str, Any]:
    latencies.sort()
    return {
        "method": mode,
        "ok": len(latencies),
        "errors": 0,
        "duration_s": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 99) * 1000, 3),
        **extra,
    }


# SQLite


def _sqlite_connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def _sqlite_issue(conn: sqlite3.Connection) -> Callable[[], None]:
    select_client, insert_family = _sqlite(SELECT_CLIENT), _sqlite(INSERT_FAMILY)
    insert_token, insert_audit = _sqlite(INSERT_REFRESH_TOKEN), _sqlite(INSERT_AUDIT)

    def issue() -> None:
        now = time.time()
        family, subject = new_id(), "raw-user"
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(select_client, (CLIENT_ID,)).fetchone()
        conn.execute(
            insert_family, (family, subject, CLIENT_ID, now, now, now + 30 * DAY, now + 14 * DAY)
        )
        conn.execute(select_client, (subject,)).fetchone()
        conn.execute(insert_token, (new_refresh_digest(), family, now, now + 14 * DAY))
        conn.execute(insert_audit, (now, subject, CLIENT_ID, family))
        conn.execute("COMMIT")

    return issue


def _sqlite_rotate(conn: sqlite3.Connection) -> Callable[[], None]:
    select_token, mark_used = _sqlite(SELECT_REFRESH_TOKEN), _sqlite(MARK_USED)
    insert_token, touch = _sqlite(INSERT_REFRESH_TOKEN), _sqlite(TOUCH_FAMILY)
    _sqlite_issue(conn)()
    # A fresh token to start the chain from (an earlier run may have left used ones behind).
    current = [
        conn.execute(
            "SELECT token_digest FROM refresh_tokens WHERE used_at IS NULL "
            "ORDER BY issued_at DESC LIMIT 1"
        ).fetchone()[0]
    ]

    def rotate() -> None:
        now = time.time()
        child = new_refresh_digest()
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(select_token, (current[0],)).fetchone()
        family = row[3]
        if conn.execute(mark_used, (now, current[0])).rowcount != 1:
            raise RuntimeError("compare-and-set lost: the chain is broken")
        conn.execute(insert_token, (child, family, now, now + 14 * DAY))
        conn.execute(touch, (now, now + 14 * DAY, family))
        conn.execute("COMMIT")
        current[0] = child

    return rotate


def run_sqlite(path: str, mode: str, duration: float, warmup: float) -> dict[str, Any]:
    conn = _sqlite_connect(path)
    conn.execute(_sqlite(INSERT_CLIENT), (CLIENT_ID, b"\0" * 32, time.time()))
    work = _sqlite_issue(conn) if mode == "issue" else _sqlite_rotate(conn)
    _loop(work, warmup)
    latencies, elapsed = _loop(work, duration)
    durability = {
        "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
        "synchronous": {2: "FULL", 3: "EXTRA"}.get(
            conn.execute("PRAGMA synchronous").fetchone()[0], "weaker"
        ),
    }
    conn.close()
    return _result(latencies, elapsed, f"sqlite {mode}", concurrency=1, durability=durability)


def _loop(work: Callable[[], None], seconds: float) -> tuple[list[float], float]:
    clock = time.perf_counter
    latencies: list[float] = []
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        t0 = clock()
        work()
        latencies.append(clock() - t0)
    return latencies, time.monotonic() - started


# PostgreSQL


async def run_postgres(
    dsn: str, mode: str, duration: float, warmup: float, concurrency: int, pool_size: int
) -> dict[str, Any]:
    import asyncpg

    pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
    try:
        async with pool.acquire() as conn:
            await conn.execute(_postgres(INSERT_CLIENT), CLIENT_ID, b"\0" * 32, time.time())
        work = _postgres_issue(pool) if mode == "issue" else await _postgres_rotate(pool)
        heads = [await _postgres_seed(pool) for _ in range(concurrency)]
        await closed_loop(lambda i: work(heads, i), len(heads), warmup)
        latencies, elapsed = await closed_loop(lambda i: work(heads, i), len(heads), duration)
        async with pool.acquire() as conn:
            durability = {
                "fsync": await conn.fetchval("SHOW fsync"),
                "synchronous_commit": await conn.fetchval("SHOW synchronous_commit"),
            }
    finally:
        await pool.close()
    return _result(
        latencies, elapsed, f"postgres {mode}", concurrency=concurrency, durability=durability
    )


def _postgres_issue(pool: Any) -> Callable[[list[bytes], int], Any]:
    select_client, insert_family = _postgres(SELECT_CLIENT), _postgres(INSERT_FAMILY)
    insert_token, insert_audit = _postgres(INSERT_REFRESH_TOKEN), _postgres(INSERT_AUDIT)

    async def issue(_heads: list[bytes], _i: int) -> None:
        now = time.time()
        family, subject = new_id(), "raw-user"
        async with pool.acquire() as conn, conn.transaction():
            await conn.fetchrow(select_client, CLIENT_ID)
            await conn.execute(
                insert_family, family, subject, CLIENT_ID, now, now, now + 30 * DAY, now + 14 * DAY
            )
            await conn.fetchrow(select_client, subject)
            await conn.execute(insert_token, new_refresh_digest(), family, now, now + 14 * DAY)
            await conn.execute(insert_audit, now, subject, CLIENT_ID, family)

    return issue


async def _postgres_seed(pool: Any) -> bytes:
    """A new family with one fresh refresh token; its digest."""
    now, family, digest = time.time(), new_id(), new_refresh_digest()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            _postgres(INSERT_FAMILY),
            family,
            "raw-user",
            CLIENT_ID,
            now,
            now,
            now + 30 * DAY,
            now + 14 * DAY,
        )
        await conn.execute(_postgres(INSERT_REFRESH_TOKEN), digest, family, now, now + 14 * DAY)
    return digest


async def _postgres_rotate(pool: Any) -> Callable[[list[bytes], int], Any]:
    select_token, mark_used = _postgres(SELECT_REFRESH_TOKEN), _postgres(MARK_USED)
    insert_token, touch = _postgres(INSERT_REFRESH_TOKEN), _postgres(TOUCH_FAMILY)

    async def rotate(heads: list[bytes], i: int) -> None:
        now, child = time.time(), new_refresh_digest()
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(select_token, heads[i])
            family = row["family_id"]
            if await conn.execute(mark_used, now, heads[i]) != "UPDATE 1":
                raise RuntimeError("compare-and-set lost: the chain is broken")
            await conn.execute(insert_token, child, family, now, now + 14 * DAY)
            await conn.execute(touch, now, now + 14 * DAY, family)
        heads[i] = child

    return rotate


async def closed_loop(
    work: Callable[[int], Awaitable[Any]], concurrency: int, seconds: float
) -> tuple[list[float], float]:
    """`concurrency` workers each await `work(i)` back to back for `seconds`; every call's
    latency and the elapsed time. The in-process subject (`bench.domain_load`) runs the same loop."""
    clock = time.perf_counter
    latencies: list[float] = []
    started = time.monotonic()
    deadline = started + seconds

    async def worker(i: int) -> None:
        while time.monotonic() < deadline:
            t0 = clock()
            await work(i)
            latencies.append(clock() - t0)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return latencies, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database", choices=["sqlite", "postgres"])
    parser.add_argument("mode", choices=["issue", "rotate"])
    parser.add_argument("--db", help="SQLite file with authsvc's schema")
    parser.add_argument("--dsn", help="PostgreSQL DSN of a database with authsvc's schema")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--pool-size", type=int, default=10)
    args = parser.parse_args(argv)
    duration = min(args.duration, 60.0)
    if args.database == "sqlite":
        result = run_sqlite(args.db, args.mode, duration, args.warmup)
    else:
        result = asyncio.run(
            run_postgres(
                args.dsn, args.mode, duration, args.warmup, args.concurrency, args.pool_size
            )
        )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
