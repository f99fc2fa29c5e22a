"""Two `authsvc serve` processes on one PostgreSQL database, tried as an operator would try them:
migrate, bootstrap an admin with the CLI, start both, call them over gRPC.

Delays are measured and printed (run with -s to see them) as well as bounded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from authsvc_client.v1 import authsvc_pb2 as pb

from authsvc.storage import migrate
from tests.databases import PostgresDatabases, asyncpg_dsn
from tests.fleet import Fleet, Replica
from tests.waiting import eventually

pytestmark = pytest.mark.postgres

PROPAGATION_BOUND = 1.0


def oauth_error(error: grpc.aio.AioRpcError) -> str:
    return dict(error.trailing_metadata() or ()).get("oauth-error", "")


def kid_of(token: str) -> str:
    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


@pytest.fixture
async def fleet(tmp_path: Path, postgres_databases: PostgresDatabases) -> AsyncIterator[Fleet]:
    """A deployment on an empty database, migrated with `authsvc migrate` as the docs say."""
    url = await postgres_databases.create(empty=True)
    fleet = Fleet(tmp_path, url, db_pool_size="10")
    try:
        assert await fleet.cli("migrate") == {"from": None, "to": migrate.head_revision()}
        yield fleet
    finally:
        await fleet.stop_all()
        await postgres_databases.drop(url)


async def _start_two(fleet: Fleet) -> tuple[Replica, Replica, str]:
    """Admin and an app client (both by CLI), then replicas a and b; the app's client id."""
    _, app = await asyncio.gather(
        fleet.create_admin(),
        fleet.cli(
            "clients", "create", "--name", "app", "--grant", "refresh_token",
            "--scope", "read", "--audience", "api",
        ),
    )  # fmt: skip
    a, b = await asyncio.gather(fleet.start("a"), fleet.start("b"))
    return a, b, app["client_id"]


Caller = tuple[tuple[str, str], ...]


async def _verify(replica: Replica, token: str, caller: Caller, audience: str = "api") -> pb.Claims:
    answer = await replica.tokens.Verify(
        pb.VerifyRequest(token=token, audience=audience), metadata=caller, timeout=5
    )
    return answer.claims


async def _verdict(replica: Replica, token: str, caller: Caller) -> grpc.StatusCode:
    try:
        await _verify(replica, token, caller)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def _refused_by(replica: Replica, token: str, caller: Caller) -> bool:
    verdict = await _verdict(replica, token, caller)
    if verdict not in (grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION):
        raise AssertionError(f"Verify answered {verdict}")
    return verdict == grpc.StatusCode.FAILED_PRECONDITION


async def test_sessions_revocations_and_keys_are_shared_by_both_replicas(fleet: Fleet) -> None:
    a, b, app = await _start_two(fleet)
    caller = await fleet.admin_metadata(a)

    # A session started on A rotates on B and verifies on both.
    pair = await a.tokens.IssueTokenPair(
        pb.IssueTokenPairRequest(subject="alice", client_id=app), metadata=caller
    )
    rotated = await b.tokens.Rotate(
        pb.RotateRequest(refresh_token=pair.refresh_token), metadata=caller
    )
    for replica in (a, b):
        assert (await _verify(replica, rotated.access_token, caller)).sid == pair.family_id

    # A revocation on A reaches a WatchRevocations subscriber of B, and B's own Verify.
    stream = b.tokens.WatchRevocations(pb.WatchRevocationsRequest(cursor=0), metadata=caller)
    await asyncio.wait_for(stream.read(), 5)  # the backlog (key events): B is streaming to us
    started = time.monotonic()
    await a.tokens.RevokeFamily(
        pb.RevokeFamilyRequest(family_id=pair.family_id, reason="test"), metadata=caller
    )
    acknowledged = time.monotonic()

    async def streamed() -> float:
        while True:
            event = await stream.read()
            assert event is not grpc.aio.EOF
            if event.family_revoked == pair.family_id:
                return time.monotonic()

    async def verify_refuses() -> float:
        await eventually(lambda: _refused_by(b, rotated.access_token, caller))
        return time.monotonic()

    stream_at, verify_at = await asyncio.wait_for(
        asyncio.gather(streamed(), verify_refuses()), PROPAGATION_BOUND
    )
    stream.cancel()
    print(
        f"\nrevocation A->B: RevokeFamily answered in {1000 * (acknowledged - started):.1f} ms; "
        f"B's WatchRevocations had it {1000 * (stream_at - started):.1f} ms and B's Verify "
        f"refused {1000 * (verify_at - started):.1f} ms after the call started"
    )
    assert stream_at - started < PROPAGATION_BOUND
    assert verify_at - started < PROPAGATION_BOUND

    # An emergency key rotation on A: the key it activates was already published on B, so A's
    # next tokens verify on B at once; B starts signing with it as soon as it hears.
    published_before = {
        key.kid for key in (await b.tokens.PublishKeys(pb.PublishKeysRequest())).keys
    }
    rotation = await a.tokens.RotateKeys(pb.RotateKeysRequest(immediate=True), metadata=caller)
    assert rotation.active_kid in published_before
    from_a = await fleet.admin_token(a, fresh=True)
    assert kid_of(from_a) == rotation.active_kid
    assert await _verify(b, from_a, caller, audience="authsvc")

    async def b_signs_with_the_new_key() -> bool:
        return kid_of(await fleet.admin_token(b, fresh=True)) == rotation.active_kid

    delay = await eventually(b_signs_with_the_new_key, PROPAGATION_BOUND)
    print(f"key rotation A->B: B signed with the new key {1000 * delay:.1f} ms after A's answer")
    published_after = {
        key.kid for key in (await b.tokens.PublishKeys(pb.PublishKeysRequest())).keys
    }
    assert rotation.published_kid in published_after


async def test_a_rotation_race_across_replicas_has_exactly_one_winner(fleet: Fleet) -> None:
    a, b, app = await _start_two(fleet)
    caller = await fleet.admin_metadata(a)
    pair = await a.tokens.IssueTokenPair(
        pb.IssueTokenPairRequest(subject="alice", client_id=app), metadata=caller
    )
    request = pb.RotateRequest(refresh_token=pair.refresh_token)
    started = time.monotonic()
    results = await asyncio.gather(
        *(
            (a if i % 2 else b).tokens.Rotate(request, metadata=caller, timeout=60)
            for i in range(100)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, pb.TokenPair)]
    refusals = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    print(f"\nrotation race ({time.monotonic() - started:.2f} s): {len(winners)} success, {len(refusals)} refused, "
          f"{sorted({(e.code().name, oauth_error(e)) for e in refusals})}")  # fmt: skip
    assert len(winners) == 1
    assert len(refusals) == 99
    assert {(e.code(), oauth_error(e)) for e in refusals} == {
        (grpc.StatusCode.FAILED_PRECONDITION, "invalid_grant")
    }
    (winner,) = winners

    # The duplicates were reuse: the family is dead on both replicas, the winner's pair with it.
    for replica in (a, b):
        await eventually(lambda r=replica: _refused_by(r, winner.access_token, caller))
    # A later replay (and the winner's child) are refused, wherever they are presented.
    for replica, token in (
        (a, pair.refresh_token),
        (b, pair.refresh_token),
        (b, winner.refresh_token),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await replica.tokens.Rotate(pb.RotateRequest(refresh_token=token), metadata=caller)
        assert oauth_error(refused.value) == "invalid_grant"
    sessions = await b.tokens.ListSessions(pb.ListSessionsRequest(subject="alice"), metadata=caller)
    assert [s.family_id for s in sessions.sessions] == []
    # Duplicates that raced the winner are audited as reuse (later ones find the family revoked
    # and change nothing); verifiers are told about the family once.
    database = await asyncpg.connect(asyncpg_dsn(fleet.database_url))
    try:
        announced = await database.fetchval(
            "SELECT count(*) FROM revocation_events WHERE kind = 'family' AND value = $1",
            pair.family_id,
        )
        audited = await database.fetchval(
            "SELECT count(*) FROM audit_events WHERE kind = 'refresh_reuse_detected' "
            "AND family_id = $1",
            pair.family_id,
        )
    finally:
        await database.close()
    print(f"reuse audited {audited} times, revocation announced {announced} time(s)")
    assert audited >= 1
    assert announced == 1


@pytest.mark.parametrize("variable", ["grpc_address", "metrics_address", "gateway_address"])
async def test_a_replica_on_a_taken_port_names_the_setting_to_change(
    tmp_path: Path, postgres_url: str, variable: str
) -> None:
    # The gateway's address matters only with the gateway embedded, and it is bound before the
    # gRPC server starts: a gateway that died after the banner left no message, and exit 3.
    embedded = (
        {"gateway_embedded": "true", "gateway_client_id": "g", "gateway_client_secret": "s"}
        if variable == "gateway_address"
        else {}
    )
    with socket.socket() as taken:  # another replica on this machine, say
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        status, message = await Fleet(tmp_path, postgres_url).serve_expecting_exit(
            "r0", **{variable: address}, **embedded
        )
    assert status == 2
    assert message.startswith(
        f"authsvc: configuration error: AUTHSVC_{variable.upper()}={address}: cannot listen there"
    )


async def test_an_embedded_gateway_whose_client_is_refused_is_a_configuration_error(
    tmp_path: Path, postgres_url: str
) -> None:
    # Found at the gateway's first call, after gRPC is serving: authsvc stops gracefully and
    # exits 2 with the gateway's message, as for any other configuration error.
    status, message = await Fleet(tmp_path, postgres_url).serve_expecting_exit(
        "r0",
        gateway_embedded="true",
        gateway_address="127.0.0.1:0",
        gateway_client_id="no-such-client",
        gateway_client_secret="asc_wrong",
    )
    assert status == 2
    assert message.startswith("authsvc: configuration error: authsvc at ")
    assert "AUTHSVC_GATEWAY_CLIENT_ID=no-such-client" in message
    assert "asc_wrong" not in message
