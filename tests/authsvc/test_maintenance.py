"""Background maintenance, one pass at a time with a moved clock: expired rows go, live ones stay."""

from __future__ import annotations

import asyncio
import gc

import pytest

from authsvc import maintenance, pkce
from authsvc.client_registry import RegisteredClient
from authsvc.errors import InvalidGrant
from authsvc.maintenance import AUDIT_RETENTION
from authsvc.testing import RunningAuthority
from tests.authsvc.calls import database_rows, on_statements, seed_families
from tests.authsvc.conftest import APP_REDIRECT_URI


async def test_nothing_expired_nothing_purged(
    running: RunningAuthority, app: RegisteredClient
) -> None:
    await running.authority.issue_token_pair(subject="alice", client_id=app.client_id)
    before = await database_rows(running)
    report = await running.authority.run_maintenance()
    assert not any(report.purged.values())
    assert report.pruned == 0
    assert not report.keys_changed
    assert await database_rows(running) == before


async def test_expired_families_and_their_tokens_are_purged(
    running: RunningAuthority, app: RegisteredClient
) -> None:
    authority = running.authority
    old = await authority.issue_token_pair(subject="alice", client_id=app.client_id)
    await authority.rotate(old.refresh_token)  # two refresh tokens in the family
    running.clock.advance(running.settings.refresh_idle_ttl - 60)
    live = await authority.issue_token_pair(subject="bob", client_id=app.client_id)
    running.clock.advance(60)  # the first family is idle-expired now, the second is not
    report = await authority.run_maintenance()
    assert report.purged["refresh_tokens"] == 2
    assert report.purged["families"] == 1
    rows = await database_rows(running)
    assert [row[0] for row in rows["families"]] == [live.family.family_id]
    with pytest.raises(InvalidGrant):
        await authority.rotate(old.refresh_token)
    await authority.rotate(live.refresh_token)


async def test_a_revoked_family_loses_its_tokens_but_keeps_its_row_until_expiry(
    running: RunningAuthority, app: RegisteredClient
) -> None:
    authority = running.authority
    pair = await authority.issue_token_pair(subject="alice", client_id=app.client_id)
    await authority.revoke_family(pair.family.family_id)
    report = await authority.run_maintenance()
    assert report.purged["refresh_tokens"] == 1
    assert report.purged["families"] == 0
    with pytest.raises(InvalidGrant):
        await authority.rotate(pair.refresh_token)


async def test_revocations_are_forgotten_once_their_tokens_expired(
    running: RunningAuthority, app: RegisteredClient
) -> None:
    authority = running.authority
    pair = await authority.issue_token_pair(subject="alice", client_id=app.client_id)
    await authority.revoke_family(pair.family.family_id)
    assert len(authority.ctx.revocations) == 1
    running.clock.advance(running.settings.longest_access_token_life - 1)
    assert (await authority.run_maintenance()).pruned == 0
    running.clock.advance(1)
    report = await authority.run_maintenance()
    assert report.pruned == 1
    assert report.purged["revocation_events"] == 1
    assert len(authority.ctx.revocations) == 0


async def test_codes_are_purged_an_hour_after_expiry(
    running: RunningAuthority, app: RegisteredClient
) -> None:
    await running.authority.create_authorization_code(
        client_id=app.client_id,
        redirect_uri=APP_REDIRECT_URI,
        subject="alice",
        code_challenge=pkce.s256("v" * 43),
        code_challenge_method="S256",
    )
    running.clock.advance(running.settings.authorization_code_ttl + 3600 - 1)
    assert (await running.authority.run_maintenance()).purged["authorization_codes"] == 0
    running.clock.advance(1)
    assert (await running.authority.run_maintenance()).purged["authorization_codes"] == 1


async def test_audit_events_are_kept_for_the_retention_period(running: RunningAuthority) -> None:
    audit = len((await database_rows(running))["audit_events"])
    assert audit  # the admin client's creation
    running.clock.advance(AUDIT_RETENTION - 1)
    assert (await running.authority.run_maintenance()).purged["audit_events"] == 0
    running.clock.advance(1)
    assert (await running.authority.run_maintenance()).purged["audit_events"] == audit


async def test_a_backlog_is_purged_in_short_transactions_over_passes(
    running: RunningAuthority, app: RegisteredClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seven expired families: with two rows per table per transaction and three transactions per
    # pass, the first pass purges six families and the next one the last.
    monkeypatch.setattr(maintenance, "PURGE_BATCH", 2)
    monkeypatch.setattr(maintenance, "PURGE_ROUNDS", 3)
    for i in range(7):
        await running.authority.issue_token_pair(subject=f"user-{i}", client_id=app.client_id)
    transactions = 0
    begin = running.authority.ctx.store.transaction

    def counted(**options: bool):  # type: ignore[no-untyped-def]
        nonlocal transactions
        transactions += options.get("bulk", False)
        return begin(**options)

    monkeypatch.setattr(running.authority.ctx.store, "transaction", counted)
    running.clock.advance(running.settings.refresh_absolute_ttl)
    first = await running.authority.run_maintenance()
    assert (first.purged["refresh_tokens"], first.purged["families"], transactions) == (6, 6, 3)
    second = await running.authority.run_maintenance()
    assert (second.purged["refresh_tokens"], second.purged["families"]) == (1, 1)
    assert (await database_rows(running))["families"] == []
    third = await running.authority.run_maintenance()
    assert not any(third.purged.values())


async def test_a_purge_cancelled_inside_its_delete_leaves_the_database_writable(
    running: RunningAuthority, app: RegisteredClient
) -> None:
    """`close()` cancels the maintenance pass wherever it is, purges included (unlike bulk
    revocations, which run to their end): a DELETE has no rows to read back, so no abandoned
    cursor keeps SQLite's write lock; the purge's transaction is undone whole, and the next pass
    does it."""
    await seed_families(running, app.client_id, "bot", 5000)
    running.clock.advance(3600)  # every seeded family has expired
    loop = asyncio.get_running_loop()
    purge: asyncio.Task[maintenance.MaintenanceReport] | None = None

    def stop_it(statement: str) -> None:
        if statement.startswith("DELETE FROM families") and purge is not None:
            loop.call_soon_threadsafe(purge.cancel)  # SQLite runs it on the driver's thread

    gc.disable()  # a collection would free an abandoned cursor and hide a held lock
    try:
        with on_statements(running, stop_it):
            purge = asyncio.create_task(running.authority.run_maintenance())
            with pytest.raises(asyncio.CancelledError):
                await purge
            purge = None
        async with asyncio.timeout(2):  # a held lock would make it wait out the busy timeout
            await running.create_client("after")
    finally:
        gc.enable()
    assert len((await database_rows(running))["families"]) == 5000
    assert (await running.authority.run_maintenance()).purged["families"] == 5000
