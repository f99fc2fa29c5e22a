"""Several replicas on one PostgreSQL database, in one process: each with its own engine, event
feed and listener, sharing only the database (and, for the test, a clock).

The same behaviours through real `authsvc serve` processes are in test_replica_processes.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from authsvc import authority as authority_module
from authsvc.authority import Authority, open_authority
from authsvc.clock import ManualClock
from authsvc.config import ConfigError
from authsvc.context import AuthorityContext
from authsvc.errors import InvalidGrant, InvalidToken, TemporarilyUnavailable, TooManyAttempts
from authsvc.events import RevocationFeed
from authsvc.storage.records import RevocationEventRecord
from authsvc.storage.sql import KEY_ROTATION_LOCK, MAINTENANCE_LOCK, Tx
from authsvc.testing import TEST_PASSWORDS, throwaway_settings
from tests.databases import asyncpg_dsn
from tests.waiting import eventually

pytestmark = pytest.mark.postgres

# Long enough that a test passing within it proves NOTIFY, not polling, carried the event.
SLOW_POLL = 60.0
PROPAGATION_BOUND = 1.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(time.time())


@pytest.fixture
async def replicas(
    tmp_path: Path, postgres_url: str, clock: ManualClock
) -> AsyncIterator[tuple[Authority, Authority]]:
    settings = throwaway_settings(
        tmp_path, database_url=postgres_url, db_pool_size=2, revocation_poll_interval=SLOW_POLL
    )
    a = await open_authority(settings, clock, password_parameters=TEST_PASSWORDS)
    b = await open_authority(settings, clock, password_parameters=TEST_PASSWORDS)
    try:
        for replica in (a, b):
            assert replica.ctx.feed.notifications is not None
            await asyncio.wait_for(replica.ctx.feed.notifications.connected.wait(), 5)
        yield a, b
    finally:
        await a.close()
        await b.close()


@pytest.fixture
async def admin_connection(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        yield conn
    finally:
        await conn.close()


async def _family_session(replica: Authority) -> tuple[str, str]:
    client = await replica.create_client(
        "app", grant_types=["refresh_token"], scopes=["read"], audiences=["api"]
    )
    pair = await replica.issue_token_pair(subject="alice", client_id=client.client_id)
    return pair.family.family_id, pair.access.token


async def test_a_revocation_on_one_replica_reaches_the_other_within_a_second(
    replicas: tuple[Authority, Authority],
) -> None:
    a, b = replicas
    family_id, access_token = await _family_session(a)
    b.verify(access_token, audience="api")
    received: list[tuple[float, RevocationEventRecord]] = []

    async def watch_on_b() -> None:
        async with b.subscribe(b.ctx.feed.cursor, heartbeat=30) as opened:
            async for event in opened.events:
                if event is not None:
                    received.append((time.monotonic(), event))
                    return

    watcher = asyncio.create_task(watch_on_b())
    await asyncio.sleep(0)  # let the subscription register before the revocation
    started = time.monotonic()
    await a.revoke_family(family_id)
    await asyncio.wait_for(watcher, PROPAGATION_BOUND)
    await eventually(lambda: _rejected(b, access_token), PROPAGATION_BOUND)
    state_delay = time.monotonic() - started
    (arrived, event), *_ = received
    assert (event.kind, event.value) == ("family", family_id)
    assert arrived - started < PROPAGATION_BOUND
    assert state_delay < PROPAGATION_BOUND


async def test_revoking_a_token_again_on_another_replica_refuses_it_there_at_once(
    replicas: tuple[Authority, Authority],
) -> None:
    a, b = replicas
    _, access_token = await _family_session(a)
    await b.ctx.feed.stop()  # b hears nothing of a's revocation: only its own call can tell it
    await a.revoke(access_token)
    jti = b.verify(access_token, audience="api").jti
    await b.revoke(access_token)
    assert _rejected(b, access_token)
    async with b.ctx.store.transaction(readonly=True) as tx:
        events = await tx.events_after(0)
    assert [e.value for e in events if e.kind == "jti"] == [jti]


async def test_revoking_a_family_again_on_another_replica_refuses_its_tokens_there_at_once(
    replicas: tuple[Authority, Authority],
) -> None:
    a, b = replicas
    family_id, access_token = await _family_session(a)
    await b.ctx.feed.stop()  # b hears nothing of a's revocation: only its own call can tell it
    assert await a.revoke_family(family_id)
    b.verify(access_token, audience="api")  # b does not know yet
    assert not await b.revoke_family(family_id)  # revoked already: nothing new is written
    assert _rejected(b, access_token)
    async with b.ctx.store.transaction(readonly=True) as tx:
        events = await tx.events_after(0)
    assert [e.value for e in events if e.kind == "family"] == [family_id]


def _rejected(replica: Authority, token: str) -> bool:
    try:
        replica.verify(token, audience="api")
    except InvalidToken:
        return True
    return False


async def test_the_listener_reconnects_after_losing_its_connection(
    replicas: tuple[Authority, Authority], admin_connection: asyncpg.Connection
) -> None:
    a, b = replicas
    listeners = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'authsvc-listener'"
    )
    before = {row["pid"] for row in await admin_connection.fetch(listeners)}
    assert len(before) == 2
    await admin_connection.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'authsvc-listener'"
    )

    async def both_listen_again() -> bool:
        now = {row["pid"] for row in await admin_connection.fetch(listeners)}
        return len(now) == 2 and not now & before

    await eventually(both_listen_again)
    family_id, access_token = await _family_session(a)
    await a.revoke_family(family_id)
    await eventually(lambda: _rejected(b, access_token), PROPAGATION_BOUND)


async def test_exactly_one_replica_carries_out_a_due_key_rotation(
    replicas: tuple[Authority, Authority], clock: ManualClock
) -> None:
    a, b = replicas
    before = a.publish_keys().signer.kid
    pending = [r.kid for r in b.publish_keys().records if r.state == "pending"]
    clock.advance(a.settings.key_rotation_interval + 1)
    reports = await asyncio.gather(a.run_maintenance(), b.run_maintenance())
    assert [report.keys_changed for report in reports].count(True) == 1
    # The key that now signs was published (and known to both) before it signed.
    await eventually(lambda: a.publish_keys().signer.kid == b.publish_keys().signer.kid)
    assert [a.publish_keys().signer.kid] == pending
    assert a.publish_keys().signer.kid != before
    # ...and the next one is already known everywhere.
    next_a = {r.kid for r in a.publish_keys().records if r.state == "pending"}
    await eventually(
        lambda: {r.kid for r in b.publish_keys().records if r.state == "pending"} == next_a
    )


@pytest.mark.parametrize(
    ("lock", "skipped"),
    [
        pytest.param(KEY_ROTATION_LOCK, "keys", id="key-rotation"),
        pytest.param(MAINTENANCE_LOCK, "purge", id="cleanup"),
    ],
)
async def test_background_work_is_skipped_while_another_replica_does_it(
    replicas: tuple[Authority, Authority],
    clock: ManualClock,
    admin_connection: asyncpg.Connection,
    lock: int,
    skipped: str,
) -> None:
    a, _ = replicas
    clock.advance(a.settings.key_rotation_interval + 1)
    await admin_connection.execute("SELECT pg_advisory_lock($1)", lock)  # "another replica"
    try:
        held = await a.run_maintenance()
    finally:
        await admin_connection.execute("SELECT pg_advisory_unlock($1)", lock)
    free = await a.run_maintenance()
    if skipped == "keys":
        assert (held.keys_changed, free.keys_changed) == (False, True)
    else:
        assert held.keys_changed is True  # rotation does not wait for cleanup
        assert (held.purged, sorted(free.purged)) == (
            {},
            [
                "audit_events",
                "authorization_codes",
                "families",
                "login_failures",
                "refresh_tokens",
                "revocation_events",
            ],
        )


async def test_an_event_that_commits_late_is_not_skipped_by_a_tailer(
    replicas: tuple[Authority, Authority],
) -> None:
    """A appends first but commits last. Without the append lock B's later cursor would commit
    first, a tailer would move past it, and A's event would never be read."""
    store = replicas[0].ctx.store
    now = time.time()
    a_appended, b_committed, tailer_read = asyncio.Event(), asyncio.Event(), asyncio.Event()

    def event(value: str) -> RevocationEventRecord:
        return RevocationEventRecord(0, now, now + 600, "jti", value)

    async def writer_a() -> None:
        async with store.transaction() as tx:
            await tx.append_events([event("a")])
            a_appended.set()
            with contextlib.suppress(TimeoutError):  # give B every chance to commit first
                await asyncio.wait_for(tailer_read.wait(), 0.3)

    async def writer_b() -> None:
        await a_appended.wait()
        async with store.transaction() as tx:
            await tx.append_events([event("b")])
        b_committed.set()

    seen: list[RevocationEventRecord] = []

    async def tail_once() -> None:
        async with store.transaction(readonly=True) as tx:
            seen.extend(await tx.events_after(seen[-1].cursor if seen else start))

    async with store.transaction(readonly=True) as tx:
        start = await tx.last_event_cursor()

    async def tailer() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(b_committed.wait(), 0.3)
        await tail_once()
        tailer_read.set()

    await asyncio.gather(writer_a(), writer_b(), tailer())
    await tail_once()
    assert [e.value for e in seen] == ["a", "b"]


async def test_a_replica_with_another_kek_refuses_to_start(
    tmp_path: Path, postgres_url: str, replicas: tuple[Authority, Authority]
) -> None:
    stranger = throwaway_settings(tmp_path, database_url=postgres_url)  # a new random KEK
    with pytest.raises(ConfigError, match=r"AUTHSVC_KEK: .* sealed with another"):
        await open_authority(stranger, password_parameters=TEST_PASSWORDS)


async def _login(replica: Authority, password: str) -> str | Exception:
    try:
        login = await replica.authenticate_user("alice", password, client_ip="192.0.2.7")
        return login.subject
    except (InvalidGrant, TooManyAttempts) as refused:
        return refused


async def test_the_failed_login_limit_holds_across_replicas(
    replicas: tuple[Authority, Authority], clock: ManualClock
) -> None:
    """Failures made at the same time on both replicas all count (none lost to a race, no
    deadlock), and the account is blocked on both; before, each gateway had a budget of its own."""
    a, b = replicas
    await a.create_user("alice", "correct horse battery staple")
    limit = a.settings.login_max_failures_account
    # More guesses than the limit, sent at once, half through each replica.
    answers = await asyncio.gather(*(_login(replica, "wrong") for replica in (a, b) * limit))
    assert sum(isinstance(answer, InvalidGrant) for answer in answers) == limit
    assert sum(isinstance(answer, TooManyAttempts) for answer in answers) == limit
    for replica in (a, b):
        blocked = await _login(replica, "correct horse battery staple")
        assert isinstance(blocked, TooManyAttempts)
        assert blocked.retry_after == a.settings.login_failure_window
    clock.advance(a.settings.login_failure_window)
    assert isinstance(await _login(b, "correct horse battery staple"), str)
    # The correct password cleared the account for both replicas.
    assert isinstance(await _login(a, "wrong"), InvalidGrant)


# Starting, and reloading the key ring, while other replicas write


def _verifies(replica: Authority, token: str) -> bool:
    try:
        replica.verify(token, audience="api")
    except InvalidToken:
        return False
    return True


async def test_a_revocation_committed_while_a_replica_starts_is_in_force_there(
    replicas: tuple[Authority, Authority], clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The feed's start reads the events in force and the newest cursor in one transaction, each
    statement seeing what has committed by then: a revocation committed between the two was in
    neither the events loaded nor the events after the cursor, and the new replica verified the
    revoked family's tokens until they expired."""
    a, b = replicas
    family_id, access_token = await _family_session(a)
    reads: list[str] = []

    def revoking_before_the_second_read(read: Any) -> Any:
        async def wrapped(tx: Tx, *args: Any) -> Any:
            reads.append(read.__name__)
            if len(reads) == 2:
                await a.revoke_family(family_id)  # commits between the start's two reads
            return await read(tx, *args)

        return wrapped

    for name in ("events_in_force", "last_event_cursor"):
        monkeypatch.setattr(Tx, name, revoking_before_the_second_read(getattr(Tx, name)))
    c = await open_authority(b.settings, clock, password_parameters=TEST_PASSWORDS)
    monkeypatch.undo()
    try:
        await c.ctx.feed.catch_up()
        assert len(reads) >= 2
        assert not _verifies(c, access_token)
    finally:
        await c.close()


async def test_a_key_rotation_committed_while_a_replica_starts_is_in_its_ring(
    replicas: tuple[Authority, Authority], clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`open_authority` loads the ring, then the feed reads the newest cursor: a rotation that
    committed between the two was in neither, and the new replica signed with, and accepted,
    the key purged as compromised until the next key event."""
    a, b = replicas
    _, access_token = await _family_session(a)
    real_start = RevocationFeed.start

    async def rotate_first(feed: RevocationFeed) -> None:
        monkeypatch.setattr(RevocationFeed, "start", real_start)
        await a.rotate_keys(compromised=True)  # after the ring's load, before the cursor
        await real_start(feed)

    monkeypatch.setattr(RevocationFeed, "start", rotate_first)
    c = await open_authority(b.settings, clock, password_parameters=TEST_PASSWORDS)
    try:
        assert c.publish_keys().signer.kid == a.publish_keys().signer.kid
        assert not _verifies(c, access_token)
    finally:
        await c.close()


async def test_a_key_event_whose_reload_failed_is_reloaded_at_the_next_read(
    replicas: tuple[Authority, Authority], monkeypatch: pytest.MonkeyPatch
) -> None:
    """B's feed read A's key events and its reload met a database outage: the cursor had moved
    past them already, so B never reloaded for them, and kept accepting the key A had purged as
    compromised until some later key event."""
    a, b = replicas
    _, access_token = await _family_session(b)
    outage = TemporarilyUnavailable("the database is unavailable, retry later")
    failed = _reloads_failing_on(b, monkeypatch, outage, times=1)
    await a.rotate_keys(compromised=True)
    await eventually(lambda: bool(failed))
    b.ctx.feed.poke()  # the next read: a poll, or the next notification
    await eventually(lambda: b.publish_keys().signer.kid == a.publish_keys().signer.kid)
    assert not _verifies(b, access_token)


async def test_a_subscriber_told_of_a_key_change_finds_it_in_publish_keys(
    replicas: tuple[Authority, Authority],
) -> None:
    """A verifier that hears of a key change refetches PublishKeys from the replica that told
    it. B fanned A's key events out before reloading its ring, so the refetch could answer the
    ring from before the change, and the verifier kept a purged key for a JWKS lifetime."""
    a, b = replicas
    seen: list[tuple[str, str | None, bool]] = []

    def key_event(event: RevocationEventRecord) -> bool:
        if event.kind == "key":
            in_ring = event.value in b.publish_keys().verification_keys
            seen.append((event.value, event.state or "", in_ring))
        return len(seen) == 3  # the new signer, the next pending key, the purge

    watcher = await _subscribed(b, key_event)
    await a.rotate_keys(compromised=True)
    await asyncio.wait_for(watcher, 5)
    assert [in_ring for _, state, in_ring in seen] == [state != "purged" for _, state, _ in seen]


async def test_the_listener_survives_an_unexpected_failure_and_listens_again(
    replicas: tuple[Authority, Authority], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure the listener did not expect ended its task for good, silently: the replica
    then heard of the other's revocations only at each poll (here, a minute)."""
    a, b = replicas
    notifications = b.ctx.feed.notifications
    assert notifications is not None
    connect = asyncpg.connect
    failed: list[bool] = []

    async def fails_once(*args: Any, **kwargs: Any) -> asyncpg.Connection:
        if not failed:
            failed.append(True)
            raise RuntimeError("a driver's bug")
        return await connect(*args, **kwargs)

    monkeypatch.setattr(asyncpg, "connect", fails_once)
    listener = b.ctx.feed._listener
    assert listener is not None
    b.ctx.feed._listener = asyncio.create_task(notifications.listen(b.ctx.feed.poke))
    listener.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listener
    await eventually(lambda: bool(failed) and notifications.connected.is_set())
    family_id, access_token = await _family_session(a)
    await a.revoke_family(family_id)
    await eventually(lambda: _rejected(b, access_token), PROPAGATION_BOUND)


async def test_a_key_ring_that_will_not_reload_holds_up_no_revocation(
    replicas: tuple[Authority, Authority], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload that fails every time (a bug, a key sealed with another KEK) must not stop the
    feed: its subscribers would hear nothing more, and every verifier would go stale."""
    a, b = replicas
    family_id, _ = await _family_session(a)
    seen: list[str] = []

    def family_event(event: RevocationEventRecord) -> bool:
        if event.kind == "family":
            seen.append(event.value)
        return bool(seen)

    _reloads_failing_on(b, monkeypatch, RuntimeError("a bug"))
    watcher = await _subscribed(b, family_event)
    await a.rotate_keys(immediate=True)  # key events B cannot reload for
    await a.revoke_family(family_id)
    await asyncio.wait_for(watcher, 5)
    assert seen == [family_id]


def _reloads_failing_on(
    replica: Authority,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    *,
    times: int | None = None,
) -> list[Exception]:
    """`replica`'s reloads of its key ring raise `error`, `times` times (always, for None); the
    other replicas' reload as before. The failures so far."""
    reload = authority_module.reload_keys
    failed: list[Exception] = []

    async def failing(ctx: AuthorityContext) -> None:
        if ctx is replica.ctx and (times is None or len(failed) < times):
            failed.append(error)
            raise error
        await reload(ctx)

    monkeypatch.setattr(authority_module, "reload_keys", failing)
    return failed


async def _subscribed(
    replica: Authority, take: Callable[[RevocationEventRecord], bool]
) -> asyncio.Task[None]:
    """A subscriber of `replica`'s stream from its current cursor, subscribed already, handing
    each event to `take` until that says it has had enough."""
    subscribed = asyncio.Event()

    async def watch() -> None:
        async with replica.subscribe(replica.ctx.feed.cursor, heartbeat=30) as opened:
            subscribed.set()
            async for event in opened.events:
                if event is not None and take(event):
                    return

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(subscribed.wait(), 5)
    return watcher
