"""Large stored states, loaded fast with raw SQL into a database that authsvc's migrations created.

Going through the service would take minutes for a million rows; the rows written here are the same
shape the service writes (families with their refresh tokens, revocation events), so what is
measured afterwards (lookups, inserts, memory) sees what a long-running service would.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
from pathlib import Path

from bench.storage import create_schema

BULK_CLIENT = "bench-bulk-client"
TOKENS_PER_FAMILY = 4  # three used and one live: what a family looks like after some rotations
DAY = 86400.0


def family_id(i: int) -> str:
    return f"bulk-{i:08d}"


def sqlite_with_schema(data_dir: Path) -> Path:
    """A fresh authsvc database in `data_dir` (the file `authsvc serve` would use)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "authsvc.db"
    asyncio.run(create_schema(f"sqlite+aiosqlite:///{path}", data_dir))
    return path


def load_refresh_tokens(path: Path, tokens: int) -> None:
    """`tokens` refresh tokens in `tokens / 4` live families of one client."""
    now = time.time()
    families = max(1, tokens // TOKENS_PER_FAMILY)
    rows = sorted(
        (
            hashlib.sha256(b"bulk-token-%d" % n).digest(),
            family_id(n // TOKENS_PER_FAMILY % families),
            now,
            None if n % TOKENS_PER_FAMILY == TOKENS_PER_FAMILY - 1 else now,
            now + 14 * DAY,
        )
        for n in range(tokens)
    )  # in key order, the primary-key B-tree grows by appending
    with _bulk_connection(path) as conn:
        _client(conn, now)
        conn.executemany(
            "INSERT INTO families (family_id, subject, client_id, device_id, scope, audience, "
            "created_at, last_used_at, expires_at, idle_expires_at) "
            "VALUES (?, ?, ?, '', 'api:read', 'bench-api', ?, ?, ?, ?)",
            (
                (family_id(i), f"user-{i}", BULK_CLIENT, now, now, now + 30 * DAY, now + 14 * DAY)
                for i in range(families)
            ),
        )
        # Secondary indexes are rebuilt once after the load (a sort) instead of being updated
        # row by row; their definitions are read back from the schema the migrations made.
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'refresh_tokens' AND sql IS NOT NULL"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.executemany(
            "INSERT INTO refresh_tokens (token_digest, family_id, issued_at, used_at, "
            "expires_at) VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        for _, sql in indexes:
            conn.execute(sql)


def load_revoked_families(path: Path, families: int) -> None:
    """`families` family revocations still in force, as `revoke_family` appends them (cursors
    taken from the event stream's row, so the service's next event does not reuse one)."""
    now = time.time()
    with _bulk_connection(path) as conn:
        (last,) = conn.execute("SELECT last_cursor FROM event_stream").fetchone()
        conn.executemany(
            "INSERT INTO revocation_events (cursor, occurred_at, expires_at, kind, value) "
            "VALUES (?, ?, ?, 'family', ?)",
            ((last + 1 + i, now, now + 3600, f"revoked-{i:08d}") for i in range(families)),
        )
        conn.execute("UPDATE event_stream SET last_cursor = ?", (last + families,))


def _bulk_connection(path: Path) -> sqlite3.Connection:
    # Loading is not what is measured: no fsync while loading, a large page cache. The service
    # reopens the file with its own durability settings.
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    return conn


def _client(conn: sqlite3.Connection, now: float) -> None:
    conn.execute(
        "INSERT INTO clients (client_id, name, secret_digest, public, first_party, grant_types, "
        "redirect_uris, scopes, audiences, created_at) "
        "VALUES (?, 'bulk', ?, 0, 0, 'refresh_token', '[]', 'api:read', 'bench-api', ?)",
        (BULK_CLIENT, b"\0" * 32, now),
    )
