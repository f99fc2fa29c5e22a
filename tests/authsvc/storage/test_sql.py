"""The SQL store on both backends: what goes in comes out the same, and the compare-and-sets let
exactly one writer win."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.exc import IntegrityError

from authsvc.storage.records import KeyRecord, RevocationEventRecord
from authsvc.storage.sql import SqlStore
from tests.authsvc.storage.conftest import (
    CLIENT,
    NOW,
    client_record,
    digest,
    family_record,
    token_record,
)


def event(kind: str, value: str, *, expires_at: float = NOW + 600) -> RevocationEventRecord:
    return RevocationEventRecord(
        cursor=0, occurred_at=NOW, expires_at=expires_at, kind=kind, value=value
    )


async def test_clients_keep_booleans_digests_and_lists(store: SqlStore) -> None:
    async with store.transaction() as tx:
        await tx.insert_client(client_record("public-1", public=True))
    async with store.transaction(readonly=True) as tx:
        confidential = await tx.get_client(CLIENT)
        public = await tx.get_client("public-1")
        listed = await tx.list_clients()
    assert confidential == client_record()
    assert public == client_record("public-1", public=True)
    assert public is not None
    assert public.public is True
    assert public.secret_digest is None
    assert {c.client_id for c in listed} == {CLIENT, "public-1"}


async def test_only_confidential_clients_take_a_secret(store: SqlStore) -> None:
    async with store.transaction() as tx:
        await tx.insert_client(client_record("public-1", public=True))
        assert await tx.set_client_secret(CLIENT, digest("new")) is True
        assert await tx.set_client_secret("public-1", digest("new")) is False
        assert await tx.set_client_secret("nobody", digest("new")) is False
    async with store.transaction(readonly=True) as tx:
        client = await tx.get_client(CLIENT)
    assert client is not None
    assert client.secret_digest == digest("new")


async def test_a_client_is_disabled_once(store: SqlStore) -> None:
    async with store.transaction() as tx:
        assert await tx.disable_client(CLIENT, NOW + 1) is True
        assert await tx.disable_client(CLIENT, NOW + 2) is False
        client = await tx.get_client(CLIENT)
    assert client is not None
    assert client.disabled_at == NOW + 1


async def test_times_keep_sub_millisecond_precision(store: SqlStore) -> None:
    family = family_record("f1")
    async with store.transaction() as tx:
        await tx.insert_family(family)
    async with store.transaction(readonly=True) as tx:
        assert await tx.get_family("f1") == family


async def test_refresh_token_is_found_with_its_family(store: SqlStore) -> None:
    async with store.transaction() as tx:
        await tx.insert_family(family_record("f1"))
        await tx.insert_refresh_token(token_record("rt-1", "f1"))
    async with store.transaction(readonly=True) as tx:
        found = await tx.refresh_token_with_family(digest("rt-1"))
        missing = await tx.refresh_token_with_family(digest("rt-2"))
    assert found is not None
    assert found == (token_record("rt-1", "f1"), family_record("f1"))
    assert missing is None


async def test_concurrent_rotations_of_one_token_have_one_winner(store: SqlStore) -> None:
    async with store.transaction() as tx:
        await tx.insert_family(family_record("f1"))
        await tx.insert_refresh_token(token_record("rt-1", "f1"))

    async def mark() -> bool:
        async with store.transaction() as tx:
            return await tx.mark_refresh_token_used(digest("rt-1"), NOW + 1)

    results = await asyncio.gather(*(mark() for _ in range(20)))
    assert results.count(True) == 1


async def test_a_family_is_revoked_once(store: SqlStore) -> None:
    async with store.transaction() as tx:
        await tx.insert_family(family_record("f1"))
        assert await tx.revoke_family("f1", NOW + 1, "logout") is True
        assert await tx.revoke_family("f1", NOW + 2, "again") is False
        assert await tx.revoke_family("missing", NOW + 2, "none") is False
        family = await tx.get_family("f1")
    assert family is not None
    assert (family.revoked_at, family.revoke_reason) == (NOW + 1, "logout")


async def test_revoking_a_subject_takes_only_its_live_families(store: SqlStore) -> None:
    async with store.transaction() as tx:
        await tx.insert_family(family_record("alice-1"))
        await tx.insert_family(family_record("alice-2"))
        await tx.insert_family(family_record("alice-expired", expires_in=-1))
        await tx.insert_family(family_record("bob-1", subject="bob"))
        first = await tx.revoke_families_where(NOW, "logout everywhere", subject="alice")
        second = await tx.revoke_families_where(NOW, "logout everywhere", subject="alice")
        live_bob = await tx.live_families("bob", NOW)
    assert sorted(first) == ["alice-1", "alice-2"]
    assert second == []
    assert [f.family_id for f in live_bob] == ["bob-1"]


async def test_event_cursors_increase_and_tail_in_order(store: SqlStore) -> None:
    async with store.transaction() as tx:
        first = await tx.append_events([event("family", "f1"), event("jti", "j1")])
    async with store.transaction() as tx:
        second = await tx.append_events([event("subject", "alice", expires_at=NOW - 1)])
    assert first[0] < first[1] < second[0]
    async with store.transaction(readonly=True) as tx:
        after_first = await tx.events_after(first[0])
        in_force = await tx.events_in_force(NOW)
        last = await tx.last_event_cursor()
    assert [(e.cursor, e.kind, e.value) for e in after_first] == [
        (first[1], "jti", "j1"),
        (second[0], "subject", "alice"),
    ]
    assert [e.value for e in in_force] == ["f1", "j1"]
    assert last == second[0]


async def test_a_jti_is_revoked_once_and_other_kinds_repeat(store: SqlStore) -> None:
    async with store.transaction() as tx:
        [first] = await tx.append_events([event("jti", "j1")])
    async with store.transaction() as tx:
        again = await tx.append_events(
            [event("jti", "j1"), event("jti", "j2"), event("subject", "alice")]
        )
        subject_again = await tx.append_events([event("subject", "alice")])
    assert first is not None
    assert again[0] is None
    assert None not in again[1:]
    assert subject_again[0] is not None
    async with store.transaction(readonly=True) as tx:
        events = await tx.events_after(0)
    assert [(e.kind, e.value) for e in events] == [
        ("jti", "j1"),
        ("jti", "j2"),
        ("subject", "alice"),
        ("subject", "alice"),
    ]


async def test_a_jti_is_revoked_once_however_often_the_statement_ran(store: SqlStore) -> None:
    # PostgreSQL plans a prepared statement generically after five runs; the ON CONFLICT clause
    # must still name the partial unique index then (a bound predicate would not).
    async with store.transaction() as tx:
        assert await tx.append_events([event("jti", "j1")]) != [None]
        for i in range(12):
            assert await tx.append_events([event("key", f"kid-{i}")]) != [None]
            assert await tx.append_events([event("jti", "j1")]) == [None]


async def test_concurrent_revocations_of_one_jti_append_one_event(store: SqlStore) -> None:
    async def append() -> list[int | None]:
        async with store.transaction() as tx:
            return await tx.append_events([event("jti", "j1")])

    cursors = [cursor for [cursor] in await asyncio.gather(*(append() for _ in range(10)))]
    assert sum(cursor is not None for cursor in cursors) == 1
    async with store.transaction(readonly=True) as tx:
        assert [e.value for e in await tx.events_after(0)] == ["j1"]


async def test_cursors_of_purged_events_are_never_handed_out_again(store: SqlStore) -> None:
    async with store.transaction() as tx:
        [kept, newest] = await tx.append_events(
            [event("family", "kept", expires_at=NOW + 600), event("jti", "newest", expires_at=NOW)]
        )
    async with store.transaction() as tx:
        counts = await tx.purge_expired(NOW, audit_retention=86400, limit=1000)
    assert counts["revocation_events"] == 1
    async with store.transaction() as tx:
        [later] = await tx.append_events([event("family", "later")])
        stream = await tx.event_stream()
    assert later > newest > kept
    assert stream.last_cursor == later


async def test_the_event_stream_is_named_once(store: SqlStore) -> None:
    async with store.transaction(readonly=True) as tx:
        unnamed = await tx.event_stream()
    async with store.transaction() as tx:
        named = await tx.name_event_stream("first")
    async with store.transaction() as tx:
        again = await tx.name_event_stream("second")
    assert (unnamed.stream_id, unnamed.last_cursor) == ("", 0)
    assert named.stream_id == again.stream_id == "first"


async def test_key_material_survives_storage(store: SqlStore) -> None:
    sealed = bytes(range(256)) * 8
    key = KeyRecord("kid-1", "EdDSA", "pending", '{"kty":"OKP"}', NOW, None, None, sealed)
    async with store.transaction() as tx:
        await tx.insert_key(key)
        await tx.set_key_state("kid-1", "active", NOW + 5)
    async with store.transaction(readonly=True) as tx:
        (stored,) = await tx.list_keys()
    assert stored.sealed_private == sealed
    assert (stored.state, stored.activated_at) == ("active", NOW + 5)


async def test_audit_events_keep_their_detail(store: SqlStore) -> None:
    async with store.transaction() as tx:
        await tx.append_audit("refresh_reuse_detected", NOW, family_id="f1", first_used_at=NOW)
        await tx.append_audit("client_created", NOW, client_id=CLIENT)
        reuse = await tx.audit_events("refresh_reuse_detected")
    assert len(reuse) == 1
    assert reuse[0]["family_id"] == "f1"
    assert reuse[0]["detail"] == f'{{"first_used_at": {NOW}}}'


async def test_purge_removes_only_what_can_no_longer_matter(store: SqlStore) -> None:
    async with store.transaction() as tx:
        await tx.insert_family(family_record("live"))
        await tx.insert_refresh_token(token_record("live-rt", "live"))
        await tx.insert_refresh_token(token_record("live-old-rt", "live", expires_in=-1))
        await tx.insert_family(family_record("dead", expires_in=-1))
        await tx.insert_refresh_token(token_record("dead-rt", "dead", expires_in=-1))
        await tx.append_events([event("jti", "gone", expires_at=NOW - 1), event("jti", "kept")])
    async with store.transaction() as tx:
        counts = await tx.purge_expired(NOW, audit_retention=86400, limit=1000)
    assert counts == {
        "refresh_tokens": 2,
        "families": 1,
        "authorization_codes": 0,
        "revocation_events": 1,
        "audit_events": 0,
        "login_failures": 0,
    }
    async with store.transaction(readonly=True) as tx:
        assert await tx.get_family("live") is not None
        assert await tx.get_family("dead") is None
        assert await tx.refresh_token_with_family(digest("live-rt")) is not None


async def test_a_failed_transaction_leaves_nothing(store: SqlStore) -> None:
    async def refuse_after_writing() -> None:
        async with store.transaction() as tx:
            await tx.insert_family(family_record("f1"))
            raise RuntimeError("the domain refused")

    with pytest.raises(RuntimeError):
        await refuse_after_writing()
    async with store.transaction(readonly=True) as tx:
        assert await tx.get_family("f1") is None


async def test_a_bug_is_not_disguised_as_an_outage(store: SqlStore) -> None:
    async def insert_twice() -> None:
        async with store.transaction() as tx:
            await tx.insert_client(client_record())

    with pytest.raises(IntegrityError):
        await insert_twice()


async def test_every_transaction_gives_its_connection_back_once(store: SqlStore) -> None:
    # On PostgreSQL a transaction holds a pooled connection, and a SQLAlchemy Connection on it
    # only once a statement outside the hot paths needs one: both ways, it goes back exactly once.
    pool = store.engine.sync_engine.pool

    async def hot_only() -> None:
        async with store.transaction() as tx:
            assert await tx.get_client(CLIENT) is not None

    async def hot_and_other() -> None:
        async with store.transaction() as tx:
            await tx.insert_family(family_record("f-kept"))
            await tx.revoke_families_where(NOW, "test", subject="nobody")  # SQLAlchemy

    async def refused_after_other() -> None:
        async with store.transaction() as tx:
            await tx.revoke_families_where(NOW, "test", subject="nobody")
            raise RuntimeError("the domain refused")

    for work in (hot_only, hot_and_other, hot_only):
        await work()
        assert pool.checkedout() == 0
    with pytest.raises(RuntimeError):
        await refused_after_other()
    assert pool.checkedout() == 0
    async with store.transaction(readonly=True) as tx:
        assert await tx.get_family("f-kept") is not None
