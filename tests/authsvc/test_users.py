"""Password logins within the failed-login limits, on real SQLite files and PostgreSQL: blocked
attempts cost no argon2 and look the same for unknown users; counts survive parallel guesses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from authsvc.authority import Authority
from authsvc.errors import InvalidGrant, InvalidRequest, TooManyAttempts
from authsvc.passwords import PasswordCheck
from authsvc.storage.schema import login_failures
from authsvc.storage.sql import TransactionConflict, Tx
from authsvc.testing import RunningAuthority, start_authority

PASSWORD = "correct horse battery staple"
IP = "203.0.113.9"
WINDOW = 900
ACCOUNT_LIMIT = 3
IP_LIMIT = 5


@pytest.fixture
async def running(tmp_path: Path, database_url: str) -> AsyncIterator[RunningAuthority]:
    async with start_authority(
        tmp_path,
        database_url=database_url,
        login_max_failures_account=ACCOUNT_LIMIT,
        login_max_failures_ip=IP_LIMIT,
        login_failure_window=WINDOW,
    ) as running:
        await running.create_user("alice", PASSWORD)
        yield running


class CountedChecks:
    """Wraps `Passwords.check` to count the argon2 verifications actually run."""

    def __init__(self, authority: Authority) -> None:
        self.calls = 0
        self._check = authority.ctx.passwords.check
        authority.ctx.passwords.check = self  # type: ignore[method-assign]

    async def __call__(self, password: str, stored_hash: str | None) -> PasswordCheck:
        self.calls += 1
        return await self._check(password, stored_hash)


async def _attempt(authority: Authority, username: str, password: str, ip: str = IP) -> Any:
    """The subject, or the error the attempt was refused with."""
    try:
        return (await authority.authenticate_user(username, password, client_ip=ip)).subject
    except (InvalidGrant, TooManyAttempts) as refused:
        return refused


async def _fail(authority: Authority, username: str, times: int, ip: str = IP) -> None:
    for _ in range(times):
        assert isinstance(await _attempt(authority, username, "wrong", ip), InvalidGrant)


async def _rows(authority: Authority) -> list[Any]:
    async with authority.ctx.store.transaction(readonly=True) as tx:
        return list(await (await tx.connection()).execute(select(login_failures)))


@pytest.mark.parametrize(
    "username", [pytest.param("alice", id="known"), pytest.param("mallory", id="unknown")]
)
async def test_a_blocked_attempt_runs_no_argon2_whether_or_not_the_user_exists(
    running: RunningAuthority, username: str
) -> None:
    authority = running.authority
    await _fail(authority, username, ACCOUNT_LIMIT)
    checks = CountedChecks(authority)
    blocked = await _attempt(authority, username, PASSWORD)  # even the right password
    assert isinstance(blocked, TooManyAttempts)
    assert checks.calls == 0
    assert (blocked.code, blocked.description, blocked.retry_after) == (
        "too_many_attempts",
        "too many failed attempts, try again later",
        WINDOW,
    )


async def test_retry_after_counts_down_with_the_clock_and_the_account_frees(
    running: RunningAuthority,
) -> None:
    authority, clock = running.authority, running.clock
    await _fail(authority, "alice", ACCOUNT_LIMIT)
    clock.advance(300)
    assert (await _attempt(authority, "alice", PASSWORD)).retry_after == WINDOW - 300
    clock.advance(WINDOW - 300 - 0.5)
    assert (await _attempt(authority, "alice", PASSWORD)).retry_after == 1
    clock.advance(0.5)
    assert await _attempt(authority, "alice", PASSWORD) == await _subject(running)


async def _subject(running: RunningAuthority) -> str:
    async with running.authority.ctx.store.transaction(readonly=True) as tx:
        user = await tx.get_user("alice")
    assert user is not None
    return user.subject


async def test_an_account_spelled_otherwise_neither_shares_nor_clears_the_budget(
    running: RunningAuthority,
) -> None:
    # Usernames match exactly, so "Alice" is another user. Were the two one key, Alice's owner
    # could log in after every few guesses at alice and clear them: no limit on alice at all.
    authority = running.authority
    await running.create_user("Alice", "another long password")
    guesses = 0
    for _ in range(3):
        for _ in range(ACCOUNT_LIMIT - 1):
            if isinstance(await _attempt(authority, "alice", "wrong", ip=""), InvalidGrant):
                guesses += 1
        assert isinstance(await _attempt(authority, "Alice", "another long password", ip=""), str)
    assert guesses == ACCOUNT_LIMIT
    assert isinstance(await _attempt(authority, "alice", PASSWORD, ip=""), TooManyAttempts)


async def test_an_ipv4_client_seen_ipv4_mapped_has_one_budget(running: RunningAuthority) -> None:
    # A dual-stack listener reports an IPv4 peer as ::ffff:a.b.c.d (RFC 4291 §2.5.5.2).
    authority = running.authority
    for n in range(IP_LIMIT):
        await _fail(authority, f"user{n}", 1, ip=IP)
    mapped = await _attempt(authority, "next", "wrong", ip=f"::ffff:{IP}")
    assert isinstance(mapped, TooManyAttempts)


async def test_an_ipv6_client_has_one_budget_across_its_slash_64(
    running: RunningAuthority,
) -> None:
    # A host picks the low 64 bits of its own address; privacy addresses rotate them.
    authority = running.authority
    answers = [
        await _attempt(authority, f"user{n}", "wrong", ip=f"2001:db8:1:2::{n + 1:x}")
        for n in range(IP_LIMIT + 1)
    ]
    assert [type(a) for a in answers] == [InvalidGrant] * IP_LIMIT + [TooManyAttempts]
    # Another /64 is another client.
    other = await _attempt(authority, "user0", "wrong", ip="2001:db8:1:3::1")
    assert isinstance(other, InvalidGrant)


def _conflict_once(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """PostgreSQL breaks a deadlock in the login's second transaction (the take-back), once."""
    forget = Tx.forget_login_failures
    conflicts: list[str] = []

    async def conflict_once(self: Tx, digest: bytes) -> None:
        if not conflicts:
            conflicts.append("40P01")
            raise TransactionConflict("40P01")
        await forget(self, digest)

    monkeypatch.setattr(Tx, "forget_login_failures", conflict_once)
    return conflicts


async def test_a_conflict_after_the_password_check_does_not_count_the_attempt_again(
    running: RunningAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    authority = running.authority
    await _fail(authority, "alice", ACCOUNT_LIMIT - 1)
    conflicts = _conflict_once(monkeypatch)
    checks = CountedChecks(authority)
    assert await _attempt(authority, "alice", PASSWORD) == await _subject(running)
    assert conflicts  # the take-back was run again, and only it
    assert checks.calls == 1
    # Nothing of that login stayed on the IP: its whole budget is left (less alice's failures).
    answers = [await _attempt(authority, f"user{n}", "wrong") for n in range(IP_LIMIT - 2)]
    assert all(isinstance(a, InvalidGrant) for a in answers), answers


async def test_a_correct_password_clears_the_account_but_not_the_ip(
    running: RunningAuthority,
) -> None:
    authority = running.authority
    await _fail(authority, "alice", ACCOUNT_LIMIT - 1)
    await _fail(authority, "bob", 1)
    assert await _attempt(authority, "alice", PASSWORD) == await _subject(running)
    # The account starts afresh: as many failures again before it blocks.
    await _fail(authority, "alice", ACCOUNT_LIMIT - 1, ip="198.51.100.7")
    # The IP kept its failures (3), and the correct login did not count against it.
    await _fail(authority, "carol", IP_LIMIT - ACCOUNT_LIMIT)
    assert isinstance(await _attempt(authority, "dave", "wrong"), TooManyAttempts)
    assert isinstance(await _attempt(authority, "alice", PASSWORD), TooManyAttempts)
    # Another IP is not blocked by this one's failures.
    assert await _attempt(authority, "alice", PASSWORD, ip="198.51.100.7") == await _subject(
        running
    )


async def test_parallel_guesses_cannot_all_pass_the_limit(running: RunningAuthority) -> None:
    authority = running.authority
    checks = CountedChecks(authority)
    answers = await asyncio.gather(*(_attempt(authority, "alice", "wrong") for _ in range(8)))
    assert sorted(type(a).__name__ for a in answers) == ["InvalidGrant"] * ACCOUNT_LIMIT + [
        "TooManyAttempts"
    ] * (8 - ACCOUNT_LIMIT)
    assert checks.calls == ACCOUNT_LIMIT


async def test_the_table_holds_digests_and_at_most_the_limit_of_times(
    running: RunningAuthority,
) -> None:
    authority = running.authority
    await _fail(authority, "alice", ACCOUNT_LIMIT)
    for _ in range(3):
        await _attempt(authority, "alice", "wrong")  # blocked: not counted again
    await _fail(authority, "bob", 2)
    rows = await _rows(authority)
    assert len(rows) == 3  # alice, bob, the IP
    for row in rows:
        assert len(row.key_digest) == 32
        assert b"alice" not in row.key_digest
        assert IP.encode() not in row.key_digest
        assert len(json.loads(row.failures)) <= IP_LIMIT
    assert sorted(len(json.loads(row.failures)) for row in rows) == [2, ACCOUNT_LIMIT, 5]


async def test_maintenance_purges_failures_once_they_leave_the_window(
    running: RunningAuthority,
) -> None:
    authority, clock = running.authority, running.clock
    await _fail(authority, "alice", 1)
    clock.advance(WINDOW - 1)
    assert (await authority.run_maintenance()).purged["login_failures"] == 0
    clock.advance(1)
    assert (await authority.run_maintenance()).purged["login_failures"] == 2
    assert await _rows(authority) == []


@pytest.mark.parametrize(
    "client_ip",
    [pytest.param("unknown", id="word"), pytest.param("10.0.0.1:443", id="with-port")],
)
async def test_a_malformed_ip_is_refused_before_any_work(
    running: RunningAuthority, client_ip: str
) -> None:
    checks = CountedChecks(running.authority)
    with pytest.raises(InvalidRequest):
        await running.authority.authenticate_user("alice", PASSWORD, client_ip=client_ip)
    assert checks.calls == 0
    assert await _rows(running.authority) == []
