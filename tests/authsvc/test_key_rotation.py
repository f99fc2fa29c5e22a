"""Keys over gRPC: PublishKeys serves public keys only; RotateKeys on demand (immediate or not),
on schedule, and a signing algorithm other than the default."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_client.v1 import authsvc_pb2_grpc

from authsvc.keys.rotation import reload_keys
from authsvc.storage.records import KeyRecord
from authsvc.storage.sql import Tx
from authsvc.testing import RunningAuthority, start_authority
from tests.authsvc.calls import INVALID_TOKEN, UNAUTHENTICATED, bearer, refused

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}  # RFC 7518 §6


def members(value: Any) -> Iterator[str]:
    """Every object member name anywhere in a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from members(item)
    elif isinstance(value, list):
        for item in value:
            yield from members(item)


def kid_of(token: str) -> str:
    head = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"])


def states(response: pb.PublishKeysResponse) -> dict[str, str]:
    return {key.kid: key.state for key in response.keys}


async def test_publish_keys_serves_only_public_keys(running: RunningAuthority, tokens) -> None:
    response = await tokens.PublishKeys(pb.PublishKeysRequest())  # anonymous
    assert sorted(states(response).values()) == ["active", "pending"]
    assert response.max_age_seconds == running.settings.jwks_max_age
    jwks = json.loads(response.jwks_json)
    assert not PRIVATE_MEMBERS & set(members(jwks))
    assert [k["kid"] for k in jwks["keys"]] == [k.kid for k in response.keys]
    for key, jwk in zip(response.keys, jwks["keys"], strict=True):
        assert (key.kty, key.crv, key.x, key.alg, key.use) == (
            "OKP",
            "Ed25519",
            jwk["x"],
            "EdDSA",
            "sig",
        )
        assert jwk == {
            "kid": key.kid,
            "kty": "OKP",
            "crv": "Ed25519",
            "x": key.x,
            "alg": "EdDSA",
            "use": "sig",
        }
        assert len(base64.urlsafe_b64decode(key.x + "=")) == 32  # an Ed25519 public key
        assert not key.y
    # The signing key's private half is nowhere in the response.
    private = running.authority.ctx.key_ring.signer.key.as_dict(private=True)["d"]
    assert private not in response.SerializeToString().decode(errors="replace")


async def test_rotate_keys_before_the_next_key_is_published_long_enough(
    running: RunningAuthority, tokens, admin
) -> None:
    before = states(await tokens.PublishKeys(pb.PublishKeysRequest()))
    [active] = [kid for kid, state in before.items() if state == "active"]
    [pending] = [kid for kid, state in before.items() if state == "pending"]
    response = await tokens.RotateKeys(pb.RotateKeysRequest(), metadata=admin)
    assert (response.active_kid, response.published_kid) == (active, pending)
    assert states(await tokens.PublishKeys(pb.PublishKeysRequest())) == before


async def test_rotate_keys_after_one_jwks_cache_lifetime(
    running: RunningAuthority, tokens, admin, pair: pb.TokenPair
) -> None:
    before = states(await tokens.PublishKeys(pb.PublishKeysRequest()))
    [active] = [kid for kid, state in before.items() if state == "active"]
    [pending] = [kid for kid, state in before.items() if state == "pending"]
    running.clock.advance(running.settings.jwks_max_age)
    response = await tokens.RotateKeys(pb.RotateKeysRequest(), metadata=admin)
    assert response.active_kid == pending
    after = states(await tokens.PublishKeys(pb.PublishKeysRequest()))
    assert after == {active: "retired", pending: "active", response.published_kid: "pending"}
    # New tokens are signed by the new key; tokens of the retired key still verify.
    admin = bearer(await running.admin_token())
    assert kid_of(admin[0][1].removeprefix("Bearer ")) == pending
    await tokens.Verify(pb.VerifyRequest(token=pair.access_token, audience="api"), metadata=admin)


async def test_immediate_rotation_activates_the_next_key_at_once(
    running: RunningAuthority, tokens, admin
) -> None:
    before = states(await tokens.PublishKeys(pb.PublishKeysRequest()))
    [pending] = [kid for kid, state in before.items() if state == "pending"]
    response = await tokens.RotateKeys(pb.RotateKeysRequest(immediate=True), metadata=admin)
    assert response.active_kid == pending
    assert kid_of(await running.admin_token()) == pending
    after = states(await tokens.PublishKeys(pb.PublishKeysRequest()))
    assert sorted(after.values()) == ["active", "pending", "retired"]
    # The caller's old token (signed by the now retired key) still authenticates.
    await tokens.ListSessions(pb.ListSessionsRequest(subject="alice"), metadata=admin)


async def test_a_compromised_key_is_purged_at_once_and_its_tokens_stop_verifying(
    running: RunningAuthority, tokens, admin, pair: pb.TokenPair
) -> None:
    leaked = kid_of(pair.access_token)
    stolen = pb.VerifyRequest(token=pair.access_token, audience="api")
    await tokens.Verify(stolen, metadata=admin)  # verified once, so cached as good
    response = await tokens.RotateKeys(pb.RotateKeysRequest(compromised=True), metadata=admin)
    assert leaked not in states(await tokens.PublishKeys(pb.PublishKeysRequest()))
    fresh = bearer(await running.admin_token())
    assert kid_of(fresh[0][1].removeprefix("Bearer ")) == response.active_kid
    assert (await refused(tokens.Verify(stolen, metadata=fresh)))[:2] == INVALID_TOKEN
    # The caller's own token was signed by the leaked key too: it no longer authenticates.
    listing = tokens.ListSessions(pb.ListSessionsRequest(subject="alice"), metadata=admin)
    assert (await refused(listing))[:2] == UNAUTHENTICATED
    # The session itself goes on: its refresh token trades for a pair signed by the new key.
    rotated = await tokens.Rotate(
        pb.RotateRequest(refresh_token=pair.refresh_token), metadata=fresh
    )
    assert kid_of(rotated.access_token) == response.active_kid


async def test_scheduled_rotation_by_maintenance(running: RunningAuthority) -> None:
    signer = running.authority.ctx.key_ring.signer.kid
    running.clock.advance(running.settings.key_rotation_interval - 1)
    assert not (await running.authority.run_maintenance()).keys_changed
    running.clock.advance(1)
    assert (await running.authority.run_maintenance()).keys_changed
    assert running.authority.ctx.key_ring.signer.kid != signer


async def test_every_retired_key_is_purged_in_time(running: RunningAuthority) -> None:
    s = running.settings
    for _ in range(3):
        running.clock.advance(s.jwks_max_age)
        await running.authority.rotate_keys()
    kept = running.authority.publish_keys().records
    running.clock.advance(s.longest_access_token_life + s.jwks_max_age)
    report = await running.authority.run_maintenance()
    assert report.keys_changed
    remaining = {r.state for r in running.authority.publish_keys().records}
    assert remaining == {"active", "pending"}
    assert len(kept) == 5


async def test_an_es256_authority_signs_and_publishes_ec_keys(tmp_path: Path) -> None:
    async with (
        start_authority(tmp_path, signing_algorithm="ES256") as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        tokens = authsvc_pb2_grpc.TokenServiceStub(channel)
        keys = await tokens.PublishKeys(pb.PublishKeysRequest())
        assert {(k.kty, k.crv, k.alg) for k in keys.keys} == {("EC", "P-256", "ES256")}
        assert all(k.x and k.y for k in keys.keys)
        assert "d" not in set(members(json.loads(keys.jwks_json)))
        token = await running.admin_token()
        claims = await tokens.Verify(
            pb.VerifyRequest(token=token, audience="authsvc"), metadata=bearer(token)
        )
        assert claims.claims.client_id == running.admin.client_id
        await tokens.RotateKeys(pb.RotateKeysRequest(immediate=True), metadata=bearer(token))
        await tokens.Verify(
            pb.VerifyRequest(token=await running.admin_token(), audience="authsvc"),
            metadata=bearer(token),
        )


async def test_a_reload_that_read_the_keys_first_cannot_install_them_last(
    running: RunningAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The feed reloads the ring when it reads a key event, and a rotation loads the keys its
    own transaction wrote. A feed reload that read the keys before a purge committed, and
    finished after the purge's load, put the purged key back until the next key event. (Seen on
    PostgreSQL, where a read awaits the server; on SQLite the stalled read also holds the
    reader, so this only checks that the order holds there.)"""
    s = running.settings
    for _ in range(3):
        running.clock.advance(s.jwks_max_age)
        await running.authority.rotate_keys()
    ctx = running.authority.ctx
    read, go_on = asyncio.Event(), asyncio.Event()
    list_keys = Tx.list_keys

    async def read_then_stall(tx: Tx) -> list[KeyRecord]:
        records = await list_keys(tx)
        if not read.is_set():
            read.set()
            await go_on.wait()
        return records

    contended = asyncio.Event()

    class WatchedLock(asyncio.Lock):
        async def acquire(self) -> bool:
            if self.locked():
                contended.set()
            return await super().acquire()

    monkeypatch.setattr(Tx, "list_keys", read_then_stall)
    monkeypatch.setattr(ctx, "key_reloads", WatchedLock())
    stale = asyncio.create_task(reload_keys(ctx))  # the feed's, for the last rotation's event
    await read.wait()
    running.clock.advance(s.longest_access_token_life + s.jwks_max_age)
    purging = asyncio.create_task(running.authority.run_maintenance())
    # The purge commits, then loads its keys, or waits for the stale reload to finish first.
    waiting = asyncio.create_task(contended.wait())
    await asyncio.wait([purging, waiting], timeout=5, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    go_on.set()
    await asyncio.gather(stale, purging)
    assert {r.state for r in running.authority.publish_keys().records} == {"active", "pending"}
