"""A verifier across a replaced authsvc database, end to end.

authsvc runs on a real database (a SQLite file; PostgreSQL too when AUTHSVC_TEST_POSTGRES_URL is
set), the notes example is protected by the real interceptor, and the real revocation stream runs
between them. Then authsvc is stopped, its database reset to empty or restored from an earlier
copy, and authsvc started again on the same port. The verifier must start its stream over, learn
the revocations of the database now behind authsvc, and keep the ones it already knew.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import notes_pb2
import notes_pb2_grpc
import pytest
from authsvc_client import ServiceCredentials
from protected_service import serve

from authsvc.clock import ManualClock
from authsvc.issuance import IssuedTokenPair
from authsvc.keys.sealing import new_kek_text
from authsvc.storage.records import ClientRecord
from authsvc.testing import RunningAuthority, start_authority
from tests.conftest import TEST_POOL_SIZE
from tests.databases import PostgresDatabases
from tests.waiting import eventually

# The interceptor's channels retry a restarted authsvc within milliseconds, not after gRPC's
# default second: the test waits on the verifier, not on a reconnect timer.
FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 20),
    ("grpc.min_reconnect_backoff_ms", 20),
    ("grpc.max_reconnect_backoff_ms", 100),
]


class Databases:
    """Empty databases and copies of them, on one backend; all dropped at the end."""

    def __init__(self, tmp_path: Path, postgres: PostgresDatabases | None) -> None:
        self._tmp_path = tmp_path
        self._postgres = postgres
        self._made: list[str] = []

    async def empty(self) -> str:
        """An empty database, as after a reset (authsvc migrates it when it first opens it)."""
        if self._postgres is None:
            url = f"sqlite+aiosqlite:///{self._tmp_path / f'authsvc-{len(self._made)}.db'}"
        else:
            url = await self._postgres.create(empty=True)
        self._made.append(url)
        return url

    async def backup(self, url: str) -> str:
        """A copy of the database at `url` as it is now (authsvc must be stopped)."""
        if self._postgres is None:
            copy = self._tmp_path / f"backup-{len(self._made)}.db"
            shutil.copyfile(url.removeprefix("sqlite+aiosqlite:///"), copy)
            url = f"sqlite+aiosqlite:///{copy}"
        else:
            url = await self._postgres.copy(url)
        self._made.append(url)
        return url

    async def drop_all(self) -> None:
        if self._postgres is not None:
            for url in self._made:
                await self._postgres.drop(url)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def databases(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Databases]:
    postgres = None
    if request.param == "postgres":
        postgres = request.getfixturevalue("postgres_databases")
    made = Databases(tmp_path, postgres)
    try:
        yield made
    finally:
        await made.drop_all()


class Authsvc:
    """authsvc on one port, stopped and started again on another database. A database that
    does not know the notes service gets it registered again with the same secret, as its
    operator would."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.clock = ManualClock(time.time())
        self.kek = new_kek_text()  # a restored backup's keys open with the same KEK
        self.port = 0  # any free port the first time, the same one afterwards
        self.notes_client: ClientRecord | None = None
        self.notes_secret = ""
        self._running: contextlib.AsyncExitStack | None = None

    async def start(self, database_url: str) -> RunningAuthority:
        stack = contextlib.AsyncExitStack()
        running = await stack.enter_async_context(
            start_authority(
                self.data_dir,
                clock=self.clock,
                kek=self.kek,
                database_url=database_url,
                db_pool_size=TEST_POOL_SIZE,
                grpc_address=f"127.0.0.1:{self.port}",
                heartbeat_interval=0.2,
            )
        )
        self._running = stack
        self.port = running.server.port
        await self._register_notes(running)
        return running

    async def stop(self) -> None:
        if self._running is not None:
            await self._running.aclose()
            self._running = None

    async def _register_notes(self, running: RunningAuthority) -> None:
        store = running.authority.ctx.store
        if self.notes_client is None:
            registered = await running.create_client("notes", audiences=["authsvc"])
            self.notes_secret = registered.client_secret
            async with store.transaction(readonly=True) as tx:
                self.notes_client = await tx.get_client(registered.client_id)
            return
        async with store.transaction() as tx:
            if await tx.get_client(self.notes_client.client_id) is None:
                await tx.insert_client(self.notes_client)


class Notes:
    """The notes example, its interceptor following authsvc at `authority.port`."""

    def __init__(self, interceptor: Any, stub: notes_pb2_grpc.NotesStub) -> None:
        self.interceptor = interceptor
        self.stub = stub

    @property
    def cursor(self) -> int:
        return int(self.interceptor.verifier.revocations.cursor)

    async def accepts(self, token: str) -> bool:
        return await self._refusal(token) is None

    async def refuses_as_revoked(self, token: str) -> bool:
        return await self._refusal(token) == (grpc.StatusCode.UNAUTHENTICATED, "session revoked")

    async def _refusal(self, token: str) -> tuple[grpc.StatusCode, str] | None:
        try:
            await self.stub.WhoAmI(
                notes_pb2.WhoAmIRequest(), metadata=(("authorization", f"Bearer {token}"),)
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code(), dict(exc.trailing_metadata() or ()).get("oauth-error-description")
        return None


@asynccontextmanager
async def notes_service(authority: Authsvc, issuer: str) -> AsyncIterator[Notes]:
    assert authority.notes_client is not None
    address = f"127.0.0.1:{authority.port}"
    token_channel = grpc.insecure_channel(address, options=FAST_RECONNECT)
    credentials = ServiceCredentials(
        token_channel,
        client_id=authority.notes_client.client_id,
        client_secret=authority.notes_secret,
        audience=["authsvc"],
        clock=authority.clock,
    )
    stream_channel = grpc.aio.insecure_channel(address, options=FAST_RECONNECT)
    server, port, interceptor = await serve(
        stream_channel, issuer, credentials, clock=authority.clock
    )
    callers = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Notes(interceptor, notes_pb2_grpc.NotesStub(callers))
    finally:
        await callers.close()
        await server.stop(None)
        await interceptor.close()
        await stream_channel.close()
        credentials.close()
        token_channel.close()


@pytest.fixture
async def authority(tmp_path: Path) -> AsyncIterator[Authsvc]:
    authority = Authsvc(tmp_path)
    try:
        yield authority
    finally:
        await authority.stop()


async def session(running: RunningAuthority, device: str) -> IssuedTokenPair:
    """A user's token pair for the notes service, in the database behind `running`."""
    web = await running.create_client(
        "web", grant_types=["refresh_token"], scopes=["notes:read"], audiences=["notes"]
    )
    return await running.authority.issue_token_pair(
        subject="alice", client_id=web.client_id, audience=["notes"], device_id=device
    )


def start_overs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and "starting over" in record.getMessage()
    ]


async def test_a_verifier_learns_the_revocations_of_a_database_reset_to_empty(
    authority: Authsvc, databases: Databases, caplog: pytest.LogCaptureFixture
) -> None:
    running = await authority.start(await databases.empty())
    old = await session(running, "laptop")
    async with notes_service(authority, running.settings.issuer) as notes:
        await running.authority.revoke_family(old.family.family_id)
        await eventually(lambda: notes.refuses_as_revoked(old.access.token))
        cursor_before = notes.cursor

        caplog.set_level(logging.WARNING, logger="authsvc_client")
        await authority.stop()
        running = await authority.start(await databases.empty())  # the reset database
        new = await session(running, "phone")
        await eventually(lambda: notes.accepts(new.access.token))  # the new keys are fetched
        await running.authority.revoke_family(new.family.family_id)
        async with running.authority.ctx.store.transaction(readonly=True) as tx:
            assert await tx.last_event_cursor() <= cursor_before  # the cursors a resume skips

        await eventually(lambda: notes.refuses_as_revoked(new.access.token))
        revocations = notes.interceptor.verifier.revocations
        # The old database's session is still known revoked, though nobody will say it again.
        assert revocations.revocation_of(old.access.claims) == "session revoked"
    [warning] = start_overs(caplog)
    assert f"cursor {cursor_before} of stream" in warning


async def test_a_verifier_learns_the_revocations_of_a_database_restored_from_a_backup(
    authority: Authsvc, databases: Databases, caplog: pytest.LogCaptureFixture
) -> None:
    database = await databases.empty()
    running = await authority.start(database)
    first, second, third = [await session(running, device) for device in ("a", "b", "c")]
    async with notes_service(authority, running.settings.issuer) as notes:
        await running.authority.revoke_family(first.family.family_id)
        await eventually(lambda: notes.refuses_as_revoked(first.access.token))

        await authority.stop()
        backup = await databases.backup(database)  # first revoked; second and third live
        running = await authority.start(database)
        await running.authority.revoke_family(second.family.family_id)
        await eventually(lambda: notes.refuses_as_revoked(second.access.token))
        cursor_before = notes.cursor

        caplog.set_level(logging.WARNING, logger="authsvc_client")
        await authority.stop()
        running = await authority.start(backup)  # the restore: second's revocation is gone
        await eventually(lambda: notes.cursor < cursor_before)  # started over
        await running.authority.revoke_family(third.family.family_id)
        async with running.authority.ctx.store.transaction(readonly=True) as tx:
            assert await tx.last_event_cursor() <= cursor_before  # the cursors a resume skips

        await eventually(lambda: notes.refuses_as_revoked(third.access.token))
        assert await notes.refuses_as_revoked(first.access.token)
        # Fail safe: the restored database forgot this revocation; the verifier did not.
        assert await notes.refuses_as_revoked(second.access.token)
    [warning] = start_overs(caplog)
    assert f"cursor {cursor_before} of stream" in warning
