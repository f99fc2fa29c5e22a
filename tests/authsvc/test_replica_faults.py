"""Faults under load: a replica SIGKILLed, PostgreSQL restarted or crashed. Nothing acknowledged
may be lost, and calls caught in the fault must fail cleanly (UNAVAILABLE), never as errors.

The load: workers open sessions (IssueTokenPair) and rotate them a few times, spreading calls over
the replicas, and write down what each call acknowledged. Afterwards every acknowledged access
token must verify, every acknowledged rotation must still be recorded as done (its parent used),
and every session's newest acknowledged refresh token must rotate once more. A session whose last
call failed is set aside: that call may or may not have committed, and the client cannot know.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import pytest
from authsvc_client.v1 import authsvc_pb2 as pb

from authsvc.tokens import opaque
from tests.databases import asyncpg_dsn
from tests.fleet import Fleet, Replica
from tests.private_postgres import PrivatePostgres
from tests.waiting import eventually

pytestmark = pytest.mark.postgres

WORKERS = 8
ROTATIONS_PER_SESSION = 4
CALL_TIMEOUT = 15.0
PROGRESS = 60  # acknowledged calls wanted before the fault, and again after it
Caller = tuple[tuple[str, str], ...]


@dataclass
class Ledger:
    """What the clients were told."""

    access_tokens: list[str] = field(default_factory=list)
    rotated_parents: list[str] = field(default_factory=list)
    newest_refresh: dict[str, str] = field(default_factory=dict)  # family id -> refresh token
    uncertain: set[str] = field(default_factory=set)  # families whose last call failed
    failures: Counter[str] = field(default_factory=Counter)  # "STATUS oauth-error" -> count
    acknowledged: int = 0

    def issued(self, pair: pb.TokenPair) -> None:
        self.access_tokens.append(pair.access_token)
        self.newest_refresh[pair.family_id] = pair.refresh_token
        self.acknowledged += 1

    def rotated(self, parent: str, pair: pb.TokenPair) -> None:
        self.rotated_parents.append(parent)
        self.issued(pair)

    def failed(self, error: grpc.aio.AioRpcError, family_id: str = "") -> None:
        oauth_error = dict(error.trailing_metadata() or ()).get("oauth-error", "")
        self.failures[f"{error.code().name} {oauth_error}".strip()] += 1
        if family_id:
            self.uncertain.add(family_id)

    @property
    def certain_sessions(self) -> dict[str, str]:
        return {f: t for f, t in self.newest_refresh.items() if f not in self.uncertain}


async def _worker(
    ledger: Ledger,
    replicas: Callable[[], list[Replica]],
    caller: Caller,
    client_id: str,
    stop: asyncio.Event,
    number: int,
) -> None:
    turn = number
    while not stop.is_set():
        alive = replicas()
        turn += 1
        try:
            pair = await alive[turn % len(alive)].tokens.IssueTokenPair(
                pb.IssueTokenPairRequest(subject=f"user-{number}", client_id=client_id),
                metadata=caller,
                timeout=CALL_TIMEOUT,
            )
        except grpc.aio.AioRpcError as error:
            ledger.failed(error)
            await asyncio.sleep(0.05)  # client backoff while the service is down
            continue
        ledger.issued(pair)
        refresh = pair.refresh_token
        for _ in range(ROTATIONS_PER_SESSION):
            if stop.is_set():
                break
            alive = replicas()
            turn += 1
            try:
                rotated = await alive[turn % len(alive)].tokens.Rotate(
                    pb.RotateRequest(refresh_token=refresh), metadata=caller, timeout=CALL_TIMEOUT
                )
            except grpc.aio.AioRpcError as error:
                ledger.failed(error, pair.family_id)
                await asyncio.sleep(0.05)
                break
            ledger.rotated(refresh, rotated)
            refresh = rotated.refresh_token


@dataclass
class Load:
    ledger: Ledger
    stop: asyncio.Event
    workers: list[asyncio.Task[None]]

    async def progressed(self, by: int = PROGRESS, within: float = 60.0) -> None:
        target = self.ledger.acknowledged + by
        await eventually(lambda: self.ledger.acknowledged >= target, within)

    async def finish(self) -> Ledger:
        self.stop.set()
        await asyncio.gather(*self.workers)
        return self.ledger


def start_load(replicas: Callable[[], list[Replica]], caller: Caller, client_id: str) -> Load:
    ledger, stop = Ledger(), asyncio.Event()
    workers = [
        asyncio.create_task(_worker(ledger, replicas, caller, client_id, stop, n))
        for n in range(WORKERS)
    ]
    return Load(ledger, stop, workers)


@dataclass
class Losses:
    access_tokens: int
    rotations_undone: int
    sessions: int

    @property
    def total(self) -> int:
        return self.access_tokens + self.rotations_undone + self.sessions


async def count_losses(
    ledger: Ledger, replica: Replica, caller: Caller, database_url: str
) -> Losses:
    """Check everything the ledger says was acknowledged, against `replica` and the database."""
    database = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        digests = [opaque.digest(parent) for parent in ledger.rotated_parents]
        still_used = await database.fetchval(
            "SELECT count(*) FROM refresh_tokens WHERE token_digest = ANY($1) "
            "AND used_at IS NOT NULL",
            digests,
        )
    finally:
        await database.close()

    async def verifies(token: str) -> bool:
        try:
            await replica.tokens.Verify(
                pb.VerifyRequest(token=token, audience="api"), metadata=caller, timeout=CALL_TIMEOUT
            )
        except grpc.aio.AioRpcError:
            return False
        return True

    async def rotates(refresh: str) -> bool:
        try:
            await replica.tokens.Rotate(
                pb.RotateRequest(refresh_token=refresh), metadata=caller, timeout=CALL_TIMEOUT
            )
        except grpc.aio.AioRpcError:
            return False
        return True

    verified = await asyncio.gather(*(verifies(token) for token in ledger.access_tokens))
    rotated = await asyncio.gather(*(rotates(t) for t in ledger.certain_sessions.values()))
    return Losses(
        access_tokens=verified.count(False),
        rotations_undone=len(digests) - still_used,
        sessions=rotated.count(False),
    )


def report(title: str, ledger: Ledger, losses: Losses) -> str:
    return (
        f"\n{title}: acknowledged {len(ledger.access_tokens)} access tokens, "
        f"{len(ledger.rotated_parents)} rotations, {len(ledger.certain_sessions)} sessions "
        f"checked ({len(ledger.uncertain)} set aside after a failed call); failed calls "
        f"{dict(ledger.failures)}; lost: {losses}"
    )


async def _deployment(fleet: Fleet, replicas: int) -> tuple[list[Replica], Caller, str]:
    _, app = await asyncio.gather(
        fleet.create_admin(),
        fleet.cli(
            "clients", "create", "--name", "app", "--grant", "refresh_token",
            "--scope", "read", "--audience", "api",
        ),
    )  # fmt: skip
    started = await asyncio.gather(*(fleet.start(f"r{n}") for n in range(replicas)))
    caller = await fleet.admin_metadata(started[0])
    return list(started), caller, app["client_id"]


@pytest.fixture
async def fleet(tmp_path: Path, postgres_url: str) -> AsyncIterator[Fleet]:
    fleet = Fleet(tmp_path, postgres_url)
    try:
        yield fleet
    finally:
        await fleet.stop_all()


async def test_a_replica_killed_under_load_loses_nothing(fleet: Fleet) -> None:
    (a, b), caller, app = await _deployment(fleet, 2)
    alive = [a, b]
    load = start_load(lambda: alive, caller, app)
    await load.progressed()
    a.kill()
    alive.remove(a)
    await load.progressed()
    ledger = await load.finish()
    assert await a.process.wait() == -9

    losses = await count_losses(ledger, b, caller, fleet.database_url)
    print(report("SIGKILL of one of two replicas", ledger, losses))
    assert losses.total == 0
    # Calls the dead replica had in flight: the transport says UNAVAILABLE.
    assert set(ledger.failures) <= {"UNAVAILABLE"}


async def _listeners(database_url: str, expected: int) -> bool:
    """Whether `expected` replicas are LISTENing for revocation events again."""
    database = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        count = await database.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'authsvc-listener'"
        )
    finally:
        await database.close()
    return bool(count == expected)


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("fast", id="restart"),  # rolls back open transactions, checkpoints
        pytest.param("immediate", id="crash"),  # no checkpoint: recovery replays the WAL
    ],
)
async def test_postgres_restarting_under_load_loses_nothing(
    tmp_path: Path, private_postgres: PrivatePostgres, mode: str
) -> None:
    fleet = Fleet(tmp_path, private_postgres.url)
    try:
        await fleet.cli("migrate")
        replicas, caller, app = await _deployment(fleet, 2)
        pids = [replica.process.pid for replica in replicas]
        load = start_load(lambda: replicas, caller, app)
        await load.progressed()
        before = load.ledger.acknowledged
        outage = time.monotonic()
        await asyncio.to_thread(private_postgres.restart, mode)
        back = time.monotonic()
        failed_during = sum(load.ledger.failures.values())
        await load.progressed()  # the same processes serve again, without a restart
        recovered = time.monotonic()
        ledger = await load.finish()

        assert [r.process.pid for r in replicas if r.running] == pids
        losses = await count_losses(ledger, replicas[1], caller, fleet.database_url)
        print(
            report(f"PostgreSQL {mode} stop and start under load", ledger, losses)
            + f"\n  {before} acknowledged before; database down {back - outage:.2f} s; "
            f"{failed_during} calls failed by then; {PROGRESS} more acknowledged "
            f"{recovered - back:.2f} s after it was back"
        )
        assert losses.total == 0
        # The replicas answered what they could not do while the database was away.
        assert set(ledger.failures) <= {"UNAVAILABLE temporarily_unavailable"}
        await eventually(lambda: _listeners(fleet.database_url, 2))
    finally:
        await fleet.stop_all()


async def test_while_the_database_is_away_verify_works_and_writes_say_retry(
    tmp_path: Path, private_postgres: PrivatePostgres
) -> None:
    fleet = Fleet(tmp_path, private_postgres.url, heartbeat_interval="0.2")
    try:
        await fleet.cli("migrate")
        (replica,), caller, app = await _deployment(fleet, 1)
        pair = await replica.tokens.IssueTokenPair(
            pb.IssueTokenPairRequest(subject="alice", client_id=app), metadata=caller
        )
        stream = replica.tokens.WatchRevocations(
            pb.WatchRevocationsRequest(cursor=0), metadata=caller
        )

        async def heartbeat() -> None:
            while not (await stream.read()).HasField("heartbeat"):
                pass

        await asyncio.wait_for(heartbeat(), 5)  # replayed and caught up: the stream is live
        await asyncio.to_thread(private_postgres.stop, "fast")

        verified = await replica.tokens.Verify(
            pb.VerifyRequest(token=pair.access_token, audience="api"), metadata=caller
        )
        assert verified.claims.sid == pair.family_id
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await replica.tokens.Rotate(
                pb.RotateRequest(refresh_token=pair.refresh_token), metadata=caller
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert dict(refused.value.trailing_metadata() or ())["oauth-error"] == (
            "temporarily_unavailable"
        )
        # The stream stays open meanwhile, falling silent once the feed's last read of the
        # table is older than the heartbeat bound (tests/authsvc/test_feed_health.py): the
        # revocation below arrives on it.

        await asyncio.to_thread(private_postgres.start)
        rotated = await replica.tokens.Rotate(  # the refused rotation changed nothing
            pb.RotateRequest(refresh_token=pair.refresh_token), metadata=caller
        )
        await replica.tokens.RevokeFamily(
            pb.RevokeFamilyRequest(family_id=rotated.family_id), metadata=caller
        )

        async def revoked() -> None:
            while (await stream.read()).family_revoked != rotated.family_id:
                pass

        await asyncio.wait_for(revoked(), 5)
        stream.cancel()
    finally:
        await fleet.stop_all()


async def test_serve_without_its_database_stops_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fleet = Fleet(tmp_path, f"postgresql+asyncpg://postgres@127.0.0.1:{port}/authsvc")
    status, message = await fleet.serve_expecting_exit("r0")
    assert (status, message) == (
        1,
        "authsvc: temporarily_unavailable: the database is unreachable, retry later",
    )
