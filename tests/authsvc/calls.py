"""What the authsvc tests need to call the service over gRPC and read how it says no."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import grpc
import pytest
from sqlalchemy import event, insert, select

from authsvc.storage.schema import metadata

Metadata = tuple[tuple[str, str], ...]


def bearer(token: str) -> Metadata:
    """Call metadata presenting `token` as the caller's credential (RFC 6750 §2.1)."""
    return (("authorization", f"Bearer {token}"),)


class Refusal(NamedTuple):
    """A failed call as the caller sees it: gRPC status, OAuth error code, description."""

    status: grpc.StatusCode
    oauth_error: str | None
    description: str | None


def refusal_of(error: grpc.aio.AioRpcError) -> Refusal:
    trailers = dict(error.trailing_metadata() or ())
    return Refusal(
        error.code(), trailers.get("oauth-error"), trailers.get("oauth-error-description")
    )


async def refused(call: Awaitable[Any]) -> Refusal:
    """Await `call`, which must fail, and say how it failed."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return refusal_of(caught.value)


INVALID_TOKEN = (grpc.StatusCode.FAILED_PRECONDITION, "invalid_token")
INVALID_GRANT = (grpc.StatusCode.FAILED_PRECONDITION, "invalid_grant")
INVALID_CLIENT = (grpc.StatusCode.UNAUTHENTICATED, "invalid_client")
INVALID_SCOPE = (grpc.StatusCode.INVALID_ARGUMENT, "invalid_scope")
INVALID_TARGET = (grpc.StatusCode.INVALID_ARGUMENT, "invalid_target")
INVALID_REQUEST = (grpc.StatusCode.INVALID_ARGUMENT, "invalid_request")
UNAUTHENTICATED = (grpc.StatusCode.UNAUTHENTICATED, "invalid_token")
INSUFFICIENT_SCOPE = (grpc.StatusCode.PERMISSION_DENIED, "insufficient_scope")
UNAUTHORIZED_CLIENT = (grpc.StatusCode.PERMISSION_DENIED, "unauthorized_client")
ACCESS_DENIED = (grpc.StatusCode.PERMISSION_DENIED, "access_denied")


async def database_rows(running: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted: compare two of these to prove a call changed nothing."""
    rows = {}
    async with running.authority.ctx.store.transaction(readonly=True) as tx:
        for table in metadata.sorted_tables:
            result = await (await tx.connection()).execute(select(table))
            rows[table.name] = sorted(tuple(row) for row in result)
    return rows


async def audit_events(running: Any, kind: str) -> list[dict[str, Any]]:
    """The audit events of one kind, oldest first."""
    async with running.authority.ctx.store.transaction(readonly=True) as tx:
        events: list[dict[str, Any]] = await tx.audit_events(kind)
    return events


async def newest_cursor(running: Any) -> int:
    """The newest cursor in the database (the feed may not have read it yet)."""
    async with running.authority.ctx.store.transaction(readonly=True) as tx:
        cursor: int = await tx.last_event_cursor()
    return cursor


@contextmanager
def on_statements(running: Any, hook: Callable[[str], None]) -> Iterator[None]:
    """Call `hook` with the SQL of every statement the store runs inside the block, before it
    runs (of a many-row INSERT, each batch SQLAlchemy sends it in); what `hook` raises, the
    statement raises."""

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        hook(statement)

    engines = running.authority.ctx.store.engines  # every engine that runs the store's SQL
    for engine in engines:
        event.listen(engine, "before_cursor_execute", before)
    try:
        yield
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", before)


@contextmanager
def counting_statements(running: Any) -> Iterator[list[str]]:
    """The SQL of every statement the store runs inside the block (`on_statements`)."""
    statements: list[str] = []
    with on_statements(running, statements.append):
        yield statements


async def seed_families(running: Any, client_id: str, subject: str, n: int) -> list[str]:
    """`n` live families in one bulk INSERT (issuing them one by one would take minutes); their
    ids."""
    now = running.clock.now()
    rows = [
        {
            "family_id": f"{client_id[:8]}-{subject}-{i}",
            "subject": subject,
            "client_id": client_id,
            "device_id": f"device-{i}",
            "scope": "",
            "audience": "api",
            "created_at": now,
            "last_used_at": now,
            "expires_at": now + 3600,
            "idle_expires_at": now + 3600,
        }
        for i in range(n)
    ]
    async with running.authority.ctx.store.transaction(bulk=True) as tx:
        await (await tx.connection()).execute(insert(metadata.tables["families"]), rows)
    return [row["family_id"] for row in rows]
