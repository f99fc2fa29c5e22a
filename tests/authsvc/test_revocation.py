"""Revocation over gRPC: one family, one token (RFC 7009), a subject, a client; and sessions."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import sqlite3
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_client.v1 import authsvc_pb2_grpc
from sqlalchemy import func, select

from authsvc import issuance, revocation
from authsvc.client_registry import RegisteredClient
from authsvc.storage import schema
from authsvc.storage.records import RevocationEventRecord
from authsvc.testing import RunningAuthority
from authsvc.tokens import opaque
from tests.authsvc.calls import (
    INVALID_CLIENT,
    INVALID_GRANT,
    INVALID_REQUEST,
    INVALID_TOKEN,
    Metadata,
    audit_events,
    bearer,
    counting_statements,
    database_rows,
    newest_cursor,
    on_statements,
    refused,
    seed_families,
)
from tests.waiting import eventually

Stub = authsvc_pb2_grpc.TokenServiceStub


async def issue(
    tokens: Stub,
    admin: Metadata,
    client: RegisteredClient,
    subject: str = "alice",
    device: str = "laptop",
) -> pb.TokenPair:
    return await tokens.IssueTokenPair(
        pb.IssueTokenPairRequest(subject=subject, client_id=client.client_id, device_id=device),
        metadata=admin,
    )


async def verify(tokens: Stub, admin: Metadata, access_token: str) -> pb.Claims:
    response = await tokens.Verify(
        pb.VerifyRequest(token=access_token, audience="api"), metadata=admin
    )
    return response.claims


async def rotate(tokens: Stub, admin: Metadata, refresh_token: str) -> pb.TokenPair:
    return await tokens.Rotate(pb.RotateRequest(refresh_token=refresh_token), metadata=admin)


async def assert_family_dead(
    tokens: Stub, admin: Metadata, pair: pb.TokenPair, why: str = "family revoked"
) -> None:
    assert await refused(verify(tokens, admin, pair.access_token)) == (
        *INVALID_TOKEN,
        f"token revoked ({why})",
    )
    assert (await refused(rotate(tokens, admin, pair.refresh_token)))[:2] == INVALID_GRANT


async def assert_family_live(tokens: Stub, admin: Metadata, pair: pb.TokenPair) -> pb.TokenPair:
    await verify(tokens, admin, pair.access_token)
    return await rotate(tokens, admin, pair.refresh_token)


# RevokeFamily


async def test_revoke_family(running: RunningAuthority, tokens, admin, pair: pb.TokenPair) -> None:
    response = await tokens.RevokeFamily(
        pb.RevokeFamilyRequest(family_id=pair.family_id, reason="lost phone"), metadata=admin
    )
    assert response.revoked
    await assert_family_dead(tokens, admin, pair)
    [event] = await audit_events(running, "family_revoked")
    assert (event["family_id"], event["subject"]) == (pair.family_id, "alice")
    assert '"reason": "lost phone"' in event["detail"]


async def test_revoke_family_twice_or_unknown_answers_false(
    running: RunningAuthority, tokens, admin, pair: pb.TokenPair
) -> None:
    request = pb.RevokeFamilyRequest(family_id=pair.family_id)
    assert (await tokens.RevokeFamily(request, metadata=admin)).revoked
    before = await database_rows(running)
    assert not (await tokens.RevokeFamily(request, metadata=admin)).revoked
    for unknown in ("no-such-family", ""):
        request = pb.RevokeFamilyRequest(family_id=unknown)
        assert not (await tokens.RevokeFamily(request, metadata=admin)).revoked
    assert await database_rows(running) == before


async def test_revoke_family_leaves_other_families_alone(
    tokens, admin, app: RegisteredClient, pair: pb.TokenPair
) -> None:
    phone = await issue(tokens, admin, app, device="phone")
    await tokens.RevokeFamily(pb.RevokeFamilyRequest(family_id=pair.family_id), metadata=admin)
    await assert_family_live(tokens, admin, phone)


async def test_revoke_family_reason_is_bounded(tokens, admin, pair: pb.TokenPair) -> None:
    request = pb.RevokeFamilyRequest(family_id=pair.family_id, reason="x" * 201)
    assert (await refused(tokens.RevokeFamily(request, metadata=admin)))[:2] == INVALID_REQUEST
    await assert_family_live(tokens, admin, pair)


# Revoke (RFC 7009)


async def test_revoking_a_refresh_token_revokes_its_family(
    tokens, admin, pair: pb.TokenPair
) -> None:
    await tokens.Revoke(
        pb.RevokeRequest(token=pair.refresh_token, token_type_hint="refresh_token"), metadata=admin
    )
    await assert_family_dead(tokens, admin, pair)


async def test_revoking_an_access_token_denies_its_jti_only(
    running: RunningAuthority, tokens, admin, pair: pb.TokenPair
) -> None:
    # A wrong hint is only a hint (RFC 7009 §2.1).
    await tokens.Revoke(
        pb.RevokeRequest(token=pair.access_token, token_type_hint="refresh_token"), metadata=admin
    )
    assert await refused(verify(tokens, admin, pair.access_token)) == (
        *INVALID_TOKEN,
        "token revoked (token revoked)",
    )
    # The session goes on: the refresh token still rotates, the next access token verifies.
    rotated = await rotate(tokens, admin, pair.refresh_token)
    await verify(tokens, admin, rotated.access_token)
    [event] = await audit_events(running, "access_token_revoked")
    assert event["subject"] == "alice"


async def revoke_answer(tokens: Stub, admin: Metadata, token: str) -> tuple[Any, ...]:
    """Everything a Revoke caller is told: the reply, the status, the trailing metadata."""
    call = tokens.Revoke(pb.RevokeRequest(token=token), metadata=admin)
    reply = await call
    return reply, await call.code(), tuple(await call.trailing_metadata() or ())


async def jti_events(running: RunningAuthority, jti: str) -> list[RevocationEventRecord]:
    async with running.authority.ctx.store.transaction(readonly=True) as tx:
        events = await tx.events_after(0)
    return [e for e in events if (e.kind, e.value) == ("jti", jti)]


async def test_revoking_an_access_token_again_answers_the_same_and_writes_nothing(
    running: RunningAuthority, tokens, admin, pair: pb.TokenPair
) -> None:
    jti = running.authority.verify(pair.access_token, audience=None).jti
    first = await revoke_answer(tokens, admin, pair.access_token)
    written = await database_rows(running)
    running.clock.advance(1)  # a retry a moment later: a new event would carry a new time
    assert await revoke_answer(tokens, admin, pair.access_token) == first
    assert await database_rows(running) == written
    assert len(await jti_events(running, jti)) == 1
    assert len(await audit_events(running, "access_token_revoked")) == 1
    assert await refused(verify(tokens, admin, pair.access_token)) == (
        *INVALID_TOKEN,
        "token revoked (token revoked)",
    )


async def test_concurrent_revocations_of_one_access_token_append_one_event(
    running: RunningAuthority, tokens, admin, pair: pb.TokenPair
) -> None:
    jti = running.authority.verify(pair.access_token, audience=None).jti
    answers = await asyncio.gather(
        *(revoke_answer(tokens, admin, pair.access_token) for _ in range(8))
    )
    assert answers == [answers[0]] * len(answers)
    assert len(await jti_events(running, jti)) == 1
    assert len(await audit_events(running, "access_token_revoked")) == 1
    assert await refused(verify(tokens, admin, pair.access_token)) == (
        *INVALID_TOKEN,
        "token revoked (token revoked)",
    )


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(opaque.new_secret(opaque.Kind.REFRESH_TOKEN), id="unknown-refresh-token"),
        pytest.param("garbage", id="garbage"),
        pytest.param("", id="empty"),
        pytest.param("eyJhbGciOiJub25lIn0.e30.", id="unsigned-jwt"),
    ],
)
async def test_revoking_an_unknown_token_succeeds_and_changes_nothing(
    running: RunningAuthority, tokens, admin, pair: pb.TokenPair, token: str
) -> None:
    before = await database_rows(running)
    await tokens.Revoke(pb.RevokeRequest(token=token, token_type_hint="bogus"), metadata=admin)
    assert await database_rows(running) == before


async def test_revoking_an_expired_access_token_succeeds_and_changes_nothing(
    running: RunningAuthority, tokens, pair: pb.TokenPair
) -> None:
    running.clock.advance(running.settings.longest_access_token_life)
    admin = bearer(await running.admin_token())
    before = await database_rows(running)
    await tokens.Revoke(pb.RevokeRequest(token=pair.access_token), metadata=admin)
    assert await database_rows(running) == before


async def test_revoke_leaves_another_clients_tokens_alone(
    running: RunningAuthority, tokens, admin, pair: pb.TokenPair
) -> None:
    other = await running.create_client("other", grant_types=["refresh_token"])
    before = await database_rows(running)
    for token in (pair.refresh_token, pair.access_token):
        await tokens.Revoke(
            pb.RevokeRequest(token=token, client_id=other.client_id), metadata=admin
        )
    assert await database_rows(running) == before
    await assert_family_live(tokens, admin, pair)


async def test_revoke_by_the_owning_client(
    tokens, admin, app: RegisteredClient, pair: pb.TokenPair
) -> None:
    await tokens.Revoke(
        pb.RevokeRequest(token=pair.refresh_token, client_id=app.client_id), metadata=admin
    )
    await assert_family_dead(tokens, admin, pair)


# RevokeSubject


async def test_revoke_subject_logs_out_everywhere(
    running: RunningAuthority, tokens, admin, app: RegisteredClient, pair: pb.TokenPair
) -> None:
    phone = await issue(tokens, admin, app, device="phone")
    bob = await issue(tokens, admin, app, subject="bob")
    response = await tokens.RevokeSubject(
        pb.RevokeSubjectRequest(subject="alice", reason="password changed"), metadata=admin
    )
    assert response.families_revoked == 2
    await assert_family_dead(tokens, admin, pair)
    await assert_family_dead(tokens, admin, phone)
    await assert_family_live(tokens, admin, bob)
    [event] = await audit_events(running, "subject_revoked")
    assert event["subject"] == "alice"

    # A login after the revocation is not affected by it.
    running.clock.advance(1)
    admin = bearer(await running.admin_token())
    fresh = await issue(tokens, admin, app)
    await assert_family_live(tokens, admin, fresh)


async def test_a_second_logout_in_the_same_second_covers_the_login_between(
    tokens, admin, app: RegisteredClient
) -> None:
    # The first logout moves the next token's iat to the next second, so that it is not born
    # revoked; the second logout, still in that second, must end the session all the same.
    logout = pb.RevokeSubjectRequest(subject="alice")
    await tokens.RevokeSubject(logout, metadata=admin)
    between = await issue(tokens, admin, app)
    await verify(tokens, admin, between.access_token)
    await tokens.RevokeSubject(logout, metadata=admin)
    await assert_family_dead(tokens, admin, between)


async def test_revoke_subject_covers_access_tokens_outside_families(
    running: RunningAuthority, tokens, admin
) -> None:
    # A client-credentials token's subject is its client id: "log out everywhere" reaches it too.
    service = await running.create_client("svc", audiences=["api"])
    token = await running.access_token(service)
    await tokens.RevokeSubject(pb.RevokeSubjectRequest(subject=service.client_id), metadata=admin)
    assert await refused(verify(tokens, admin, token)) == (
        *INVALID_TOKEN,
        "token revoked (subject revoked)",
    )


async def test_revoke_subject_needs_a_subject(tokens, admin) -> None:
    request = pb.RevokeSubjectRequest(subject="")
    assert (await refused(tokens.RevokeSubject(request, metadata=admin)))[:2] == INVALID_REQUEST


# RevokeClient


async def test_revoke_client_and_disable_it(
    running: RunningAuthority,
    tokens,
    admin,
    authorization,
    app: RegisteredClient,
    pair: pb.TokenPair,
) -> None:
    service = await running.create_client("svc", scopes=["read"], audiences=["api"])
    service_token = await running.access_token(service)
    for client in (app, service):
        response = await tokens.RevokeClient(
            pb.RevokeClientRequest(client_id=client.client_id, reason="compromised", disable=True),
            metadata=admin,
        )
        assert response.families_revoked == (1 if client is app else 0)
    await assert_family_dead(tokens, admin, pair)
    assert await refused(verify(tokens, admin, service_token)) == (
        *INVALID_TOKEN,
        "token revoked (client revoked)",
    )
    # Disabled: no new tokens, no new families, not found by the gateway.
    running.clock.advance(1)
    admin = bearer(await running.admin_token())
    credentials = pb.ClientCredentialsRequest(
        client_id=service.client_id, client_secret=service.client_secret
    )
    assert (await refused(tokens.ClientCredentials(credentials)))[:2] == INVALID_CLIENT
    assert (await refused(issue(tokens, admin, app)))[:2] == INVALID_CLIENT
    get = authorization.GetClient(pb.GetClientRequest(client_id=app.client_id), metadata=admin)
    assert (await refused(get))[0] == grpc.StatusCode.NOT_FOUND
    assert await audit_events(running, "client_disabled")


async def test_a_second_client_revocation_in_the_same_second_covers_the_token_between(
    running: RunningAuthority, tokens, admin
) -> None:
    # A client-credentials token has no family to be revoked by: only its iat can place it.
    service = await running.create_client("svc", audiences=["api"])
    revocation = pb.RevokeClientRequest(client_id=service.client_id)
    await tokens.RevokeClient(revocation, metadata=admin)
    between = await running.access_token(service)
    await verify(tokens, admin, between)
    await tokens.RevokeClient(revocation, metadata=admin)
    assert await refused(verify(tokens, admin, between)) == (
        *INVALID_TOKEN,
        "token revoked (client revoked)",
    )
    await verify(tokens, admin, await running.access_token(service))  # one minted after both


async def test_revoke_client_without_disabling_it(
    running: RunningAuthority, tokens, admin, app: RegisteredClient, pair: pb.TokenPair
) -> None:
    response = await tokens.RevokeClient(
        pb.RevokeClientRequest(client_id=app.client_id), metadata=admin
    )
    assert response.families_revoked == 1
    await assert_family_dead(tokens, admin, pair)
    running.clock.advance(1)
    admin = bearer(await running.admin_token())
    await assert_family_live(tokens, admin, await issue(tokens, admin, app))


async def test_revoke_client_bounds_its_reason_as_the_other_revocations_do(
    running: RunningAuthority, tokens, admin, app: RegisteredClient
) -> None:
    before = await database_rows(running)
    request = pb.RevokeClientRequest(client_id=app.client_id, reason="r" * 201)
    assert await refused(tokens.RevokeClient(request, metadata=admin)) == (
        *INVALID_REQUEST,
        "reason is at most 200 characters",
    )
    assert await database_rows(running) == before


@pytest.mark.parametrize("revoke", ["subject", "client"])
async def test_a_login_committed_before_a_bulk_revocation_but_signed_after_it_is_revoked(
    running: RunningAuthority,
    tokens,
    admin,
    app: RegisteredClient,
    monkeypatch: pytest.MonkeyPatch,
    revoke: str,
) -> None:
    """A login's family commits, the revocation commits and reaches this replica, then the login
    signs its access token: that token's `iat` is moved past the revocation's second, so only
    the family's own event refuses it."""
    signed_later: list[Callable[[], issuance.IssuedAccessToken]] = []

    def sign_later(ctx: Any, **claims: Any) -> issuance.IssuedAccessToken:
        signed_later.append(lambda: mint(ctx, **claims))
        raise _SignedLater

    mint = issuance.mint_access_token
    monkeypatch.setattr(issuance, "mint_access_token", sign_later)
    with pytest.raises(_SignedLater):
        await running.authority.issue_token_pair(subject="alice", client_id=app.client_id)
    monkeypatch.setattr(issuance, "mint_access_token", mint)
    if revoke == "subject":
        assert await running.authority.revoke_subject("alice") == 1
    else:
        assert await running.authority.revoke_client(app.client_id) == 1
    [sign] = signed_later
    assert await refused(verify(tokens, admin, sign().token)) == (
        *INVALID_TOKEN,
        "token revoked (family revoked)",
    )


class _SignedLater(Exception):
    """Stops an issuance after its commit, before it signs."""


async def test_revoke_unknown_client_is_not_found(running: RunningAuthority, tokens, admin) -> None:
    before = await database_rows(running)
    request = pb.RevokeClientRequest(client_id="nobody", disable=True)
    assert (await refused(tokens.RevokeClient(request, metadata=admin)))[0] == (
        grpc.StatusCode.NOT_FOUND
    )
    assert await database_rows(running) == before


# ListSessions


async def test_list_sessions_shows_live_families_one_per_device(
    running: RunningAuthority, tokens, admin, app: RegisteredClient, pair: pb.TokenPair
) -> None:
    created = running.clock.now()
    running.clock.advance(60)
    phone = await issue(tokens, admin, app, device="phone")
    revoked = await issue(tokens, admin, app, device="old-tablet")
    await issue(tokens, admin, app, subject="bob")
    await tokens.RevokeFamily(pb.RevokeFamilyRequest(family_id=revoked.family_id), metadata=admin)
    running.clock.advance(60)
    await rotate(tokens, admin, pair.refresh_token)

    response = await tokens.ListSessions(pb.ListSessionsRequest(subject="alice"), metadata=admin)
    laptop, second = response.sessions
    assert (laptop.family_id, laptop.device_id) == (pair.family_id, "laptop")
    assert (second.family_id, second.device_id) == (phone.family_id, "phone")
    assert laptop.client_id == app.client_id
    assert list(laptop.scope) == ["read", "write", "profile"]
    s = running.settings
    assert laptop.created_at.ToSeconds() == int(created)
    assert laptop.last_used_at.ToSeconds() == int(created + 120)
    assert laptop.expires_at.ToSeconds() == int(created + s.refresh_absolute_ttl)
    assert laptop.idle_expires_at.ToSeconds() == int(created + 120 + s.refresh_idle_ttl)


async def test_list_sessions_drops_idle_expired_families(
    running: RunningAuthority, tokens, pair: pb.TokenPair
) -> None:
    running.clock.advance(running.settings.refresh_idle_ttl)
    admin = bearer(await running.admin_token())
    response = await tokens.ListSessions(pb.ListSessionsRequest(subject="alice"), metadata=admin)
    assert list(response.sessions) == []


async def test_list_sessions_needs_a_subject(tokens, admin) -> None:
    request = pb.ListSessionsRequest(subject="")
    assert (await refused(tokens.ListSessions(request, metadata=admin)))[:2] == INVALID_REQUEST


async def test_a_token_issued_after_revoke_client_in_the_same_second_verifies(
    running: RunningAuthority, tokens
) -> None:
    running.clock.set(int(running.clock.now()) + 1.25)
    admin = bearer(await running.admin_token())
    service = await running.create_client("svc", audiences=["api"])
    minted_before = await running.access_token(service)
    await tokens.RevokeClient(pb.RevokeClientRequest(client_id=service.client_id), metadata=admin)
    running.clock.advance(0.5)  # later, in the same second

    await verify(tokens, admin, await running.access_token(service))
    assert await refused(verify(tokens, admin, minted_before)) == (
        *INVALID_TOKEN,
        "token revoked (client revoked)",
    )


# More live families than a statement may carry bind parameters (SQLite's 32,766 in its default
# build, PostgreSQL's 32,767): a compromised app, or a subject, with that many sessions must still
# be revocable in one call.
MANY_FAMILIES = 40_000
SQLITE_DEFAULT_MAX_VARIABLES = 32_766


@pytest.fixture
def sqlite_default_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every SQLite connection opened from here on takes as many bind parameters per statement
    as SQLite's default build does: Debian's, which this venv may load, raises it to 250,000."""
    connect = sqlite3.connect

    def limited(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, SQLITE_DEFAULT_MAX_VARIABLES)
        return conn

    for module in (sqlite3, sqlite3.dbapi2):  # aiosqlite calls the one, SQLAlchemy the other
        monkeypatch.setattr(module, "connect", limited)


async def _live_families(running: RunningAuthority, **match: str) -> int:
    f = schema.families
    conditions = [f.c[name] == value for name, value in match.items()]
    async with running.authority.ctx.store.transaction(readonly=True) as tx:
        result = await (await tx.connection()).execute(
            select(func.count()).select_from(f).where(*conditions, f.c.revoked_at.is_(None))
        )
        return int(result.scalar_one())


async def _events(running: RunningAuthority) -> dict[str, list[str]]:
    """The values of every revocation event, by kind."""
    async with running.authority.ctx.store.transaction(readonly=True, bulk=True) as tx:
        events = await tx.events_after(0, limit=2 * MANY_FAMILIES)
    values: dict[str, list[str]] = {}
    for event in events:
        values.setdefault(event.kind, []).append(event.value)
    return values


@pytest.mark.usefixtures("sqlite_default_limits")
async def test_revoke_client_with_more_families_than_a_statement_has_parameters(
    running: RunningAuthority,
) -> None:
    app = await running.create_client("app", grant_types=["refresh_token"], audiences=["api"])
    other = await running.create_client("other", grant_types=["refresh_token"], audiences=["api"])
    await seed_families(running, app.client_id, "alice", MANY_FAMILIES)
    await seed_families(running, other.client_id, "alice", 3)
    revoked = await running.authority.revoke_client(app.client_id, reason="compromised")
    assert revoked == MANY_FAMILIES
    assert await _live_families(running, client_id=app.client_id) == 0
    assert await _live_families(running, client_id=other.client_id) == 3
    # One event covers the client's access tokens; its refresh tokens end with their families.
    assert (await _events(running))["client"] == [app.client_id]
    [audit] = await audit_events(running, "client_revoked")
    assert json.loads(audit["detail"])["families"] == MANY_FAMILIES


@pytest.mark.usefixtures("sqlite_default_limits")
async def test_revoke_subject_with_more_families_than_a_statement_has_parameters(
    running: RunningAuthority,
) -> None:
    app = await running.create_client("app", grant_types=["refresh_token"], audiences=["api"])
    families = await seed_families(running, app.client_id, "bot", MANY_FAMILIES)
    await seed_families(running, app.client_id, "alice", 3)
    known = len(running.authority.ctx.revocations)
    with counting_statements(running) as statements:
        revoked = await running.authority.revoke_subject("bot", reason="abuse")
    assert revoked == MANY_FAMILIES
    # A statement for many families at a time, not one for each.
    assert len(statements) < MANY_FAMILIES / 100
    assert await _live_families(running, subject="bot") == 0
    assert await _live_families(running, subject="alice") == 3
    # An event for each family besides the subject's (`revoke_subject` says why), all applied
    # here before the reply, so that a Verify right after already says revoked.
    events = await _events(running)
    assert events["subject"] == ["bot"]
    assert sorted(events["family"]) == sorted(families)
    assert len(running.authority.ctx.revocations) == known + MANY_FAMILIES + 1
    [audit] = await audit_events(running, "subject_revoked")
    assert json.loads(audit["detail"])["families"] == MANY_FAMILIES


@pytest.mark.parametrize("revoke", ["subject", "client"])
async def test_a_bulk_revocation_lets_the_loop_serve_other_calls_between_its_statements(
    running: RunningAuthority, revoke: str
) -> None:
    """Revoking thousands of families must not hold the event loop from its first statement to
    its last: on SQLite they run on the driver's thread, and the events are appended
    `BULK_EVENTS` at a time, so other calls are served in between. Run inline, the whole
    transaction was one stretch of the loop (half a second for 40,000 families)."""
    app = await running.create_client("app", grant_types=["refresh_token"], audiences=["api"])
    await seed_families(running, app.client_id, "bot", MANY_FAMILIES)
    stop = asyncio.Event()
    with counting_statements(running) as timeline:

        async def other_calls() -> None:
            while not stop.is_set():
                timeline.append("loop served another call")
                await asyncio.sleep(0)

        probe = asyncio.create_task(other_calls())
        await asyncio.sleep(0)
        if revoke == "subject":
            revoked = await running.authority.revoke_subject("bot", reason="abuse")
        else:
            revoked = await running.authority.revoke_client(app.client_id, reason="leak")
        # Then this replica's feed reads the new events, as every replica's does.
        feed = running.authority.ctx.feed
        last = await newest_cursor(running)
        await eventually(lambda: feed.cursor == last)
        timeline = timeline[:]
        stop.set()
        await probe
    assert revoked == MANY_FAMILIES
    # The transaction's writes; the feed's reads of the events may come between them.
    writes = [i for i, sql in enumerate(timeline) if sql.startswith(("INSERT", "UPDATE", "DELETE"))]
    reads = [i for i, sql in enumerate(timeline) if sql.startswith("SELECT revocation_events")]
    reads_back = [i for i in reads if i > writes[-1]]
    for statements in (writes, reads_back):
        for before, after in itertools.pairwise(statements):
            assert "loop served another call" in timeline[before:after], timeline[before]
    if revoke == "subject":
        inserts = [sql for sql in timeline if sql.startswith("INSERT INTO revocation_events")]
        assert len(inserts) >= MANY_FAMILIES // revocation.BULK_EVENTS
        assert len(reads_back) >= MANY_FAMILIES // 1000


@pytest.mark.parametrize("revoke", ["subject", "client"])
async def test_a_bulk_revocation_whose_caller_gives_up_still_completes_and_writes_go_on(
    running: RunningAuthority, revoke: str
) -> None:
    """A caller cancelled (its deadline, a disconnect) while its bulk revocation revokes the
    families: the revocation completes all the same, and the database takes writes at once.
    Cut off inside that statement, the transaction's abandoned cursor held SQLite's write lock
    until the garbage collector freed it, and every write waited out the busy timeout."""
    app = await running.create_client("app", grant_types=["refresh_token"], audiences=["api"])
    await seed_families(running, app.client_id, "bot", 5000)
    caller: asyncio.Task[int] | None = None
    loop = asyncio.get_running_loop()

    def give_up(statement: str) -> None:
        if statement.startswith("UPDATE families") and caller is not None:
            loop.call_soon_threadsafe(caller.cancel)  # SQLite runs it on the driver's thread

    gc.disable()  # a collection would free the cursor and hide a held lock
    try:
        with on_statements(running, give_up):
            if revoke == "subject":
                caller = asyncio.create_task(running.authority.revoke_subject("bot"))
            else:
                caller = asyncio.create_task(running.authority.revoke_client(app.client_id))
            with pytest.raises(asyncio.CancelledError):
                await caller
            caller = None

            async def revoked() -> bool:
                return await _live_families(running, client_id=app.client_id) == 0

            await eventually(revoked)
            # A write right after, where the lock would have made it wait out the busy timeout.
            async with asyncio.timeout(2):
                await running.create_client("after")
    finally:
        gc.enable()


async def test_a_bulk_revocation_that_fails_after_its_caller_gave_up_is_logged(
    running: RunningAuthority, caplog: pytest.LogCaptureFixture
) -> None:
    app = await running.create_client("app", grant_types=["refresh_token"], audiences=["api"])
    await seed_families(running, app.client_id, "bot", 10)
    caller: asyncio.Task[int] | None = None
    loop = asyncio.get_running_loop()

    def give_up_then_fail(statement: str) -> None:
        if statement.startswith("UPDATE families") and caller is not None:
            loop.call_soon_threadsafe(caller.cancel)
        if statement.startswith("INSERT INTO revocation_events"):
            raise RuntimeError("the disk caught fire")

    with on_statements(running, give_up_then_fail):
        caller = asyncio.create_task(running.authority.revoke_subject("bot"))
        with pytest.raises(asyncio.CancelledError):
            await caller
        await eventually(lambda: "work whose caller had gone failed" in caplog.text)
    assert "the disk caught fire" in caplog.text
    assert await _live_families(running, subject="bot") == 10  # rolled back, whole
