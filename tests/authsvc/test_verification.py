"""Verify: over gRPC, a valid token's claims, a forgery of each stage refused, and no database;
and the Verifier as an adapter of authsvc_client's verification, which holds every rule.

Forged tokens are crafted here by hand, signed with the authority's own active key where the
attack needs a valid signature, so each case fails for exactly the reason it names.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import authsvc_client
import grpc
import pytest
import pytest_asyncio
from authsvc_client import check_claims, verify_access_token
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_client.v1 import authsvc_pb2_grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authsvc import errors, verification
from authsvc.clock import ManualClock
from authsvc.context import AuthorityContext
from authsvc.keys.ring import Signer
from authsvc.revocation_state import RevocationState
from authsvc.testing import RunningAuthority, start_authority
from authsvc.verification import Verifier
from tests.authsvc.calls import (
    INSUFFICIENT_SCOPE,
    INVALID_REQUEST,
    INVALID_TOKEN,
    Metadata,
    bearer,
    counting_statements,
    refused,
)
from tests.clients import test_verification as shared


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def segment(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def payload_of(token: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(unb64(token.split(".")[1]))
    return result


def craft(header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """A compact JWS with exactly this header and payload, signed by `sign`."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def with_key(signer: Signer) -> Callable[[bytes], bytes]:
    private: Ed25519PrivateKey = signer.key.private_key  # type: ignore[assignment]
    return private.sign


def header_for(signer: Signer, **changes: Any) -> dict[str, Any]:
    header = {"alg": signer.alg, "typ": "at+jwt", "kid": signer.kid, **changes}
    return {k: v for k, v in header.items() if v is not None}


async def verify(
    tokens: authsvc_pb2_grpc.TokenServiceStub,
    metadata: Metadata,
    token: str,
    audience: str = "api",
    required_scopes: tuple[str, ...] = (),
) -> pb.Claims:
    response = await tokens.Verify(
        pb.VerifyRequest(token=token, audience=audience, required_scopes=required_scopes),
        metadata=metadata,
    )
    return response.claims


async def test_verify_answers_the_claims(
    running: RunningAuthority, tokens, admin, pair: pb.TokenPair
) -> None:
    claims = await verify(tokens, admin, pair.access_token)
    payload = payload_of(pair.access_token)
    assert claims == pb.Claims(
        iss=running.settings.issuer,
        sub="alice",
        aud=["api", "other-api"],
        exp=payload["exp"],
        iat=payload["iat"],
        jti=payload["jti"],
        client_id=payload["client_id"],
        scope=["read", "write", "profile"],
        sid=pair.family_id,
    )
    assert claims.exp - claims.iat == running.settings.access_token_ttl


async def test_verify_a_client_credentials_token(running: RunningAuthority, tokens, admin) -> None:
    service = await running.create_client("svc", scopes=["read"], audiences=["api"])
    claims = await verify(tokens, admin, await running.access_token(service))
    assert (claims.sub, claims.client_id, claims.sid) == (service.client_id, service.client_id, "")


async def test_verify_checks_required_scopes(tokens, admin, pair: pb.TokenPair) -> None:
    await verify(tokens, admin, pair.access_token, required_scopes=("read", "write"))
    assert await refused(verify(tokens, admin, pair.access_token, required_scopes=("admin",))) == (
        *INSUFFICIENT_SCOPE,
        "token lacks scope: admin",
    )


@pytest.mark.parametrize(
    "required",
    [
        pytest.param(("x" * 20_000,), id="one-long-scope"),
        pytest.param(tuple(f"s{i:04d}" + "y" * 100 for i in range(200)), id="many-scopes"),
        pytest.param(("a\r\nb",), id="a-line-break"),
    ],
)
async def test_verify_requiring_what_no_header_could_echo_still_answers_insufficient_scope(
    tokens, admin, pair: pb.TokenPair, required: tuple[str, ...]
) -> None:
    """The refusal names the missing scopes, which the caller chose: past gRPC's metadata limit,
    or with a line break in a header, the caller got RESOURCE_EXHAUSTED or INTERNAL instead."""
    refusal = await refused(verify(tokens, admin, pair.access_token, required_scopes=required))
    assert refusal[:2] == INSUFFICIENT_SCOPE
    assert refusal.description is not None
    assert refusal.description.startswith("token lacks scope: ")
    assert len(refusal.description) <= 256


async def test_verify_needs_an_audience(tokens, admin, pair: pb.TokenPair) -> None:
    assert (await refused(verify(tokens, admin, pair.access_token, audience="")))[
        :2
    ] == INVALID_REQUEST


async def test_verify_needs_a_token(tokens, admin) -> None:
    assert (await refused(verify(tokens, admin, "")))[:2] == INVALID_REQUEST


# Each forgery: (running, signer, a valid token's payload) -> token. The rules themselves are
# tested once, in tests/clients/test_verification.py, and every one of its refusals is run
# through the Verifier below; these few only follow one refusal of each stage over the wire.
Forgery = Callable[[RunningAuthority, Signer, dict[str, Any]], str]


def _unknown_kid(r: RunningAuthority, s: Signer, p: dict[str, Any]) -> str:
    stranger = Ed25519PrivateKey.generate()
    return craft(header_for(s, kid="kid-nobody-published"), p, stranger.sign)


def _our_kid_their_key(r: RunningAuthority, s: Signer, p: dict[str, Any]) -> str:
    return craft(header_for(s), p, Ed25519PrivateKey.generate().sign)


def _claims(**changes: Any) -> Forgery:
    def forge(r: RunningAuthority, s: Signer, p: dict[str, Any]) -> str:
        return craft(header_for(s), {**p, **changes}, with_key(s))

    return forge


FORGERIES = [
    pytest.param(
        lambda r, s, p: craft(header_for(s, alg="none"), p, with_key(s)),
        "token algorithm not accepted",
        id="alg-none",
    ),
    pytest.param(_unknown_kid, "unknown signing key", id="unknown-kid"),
    pytest.param(_our_kid_their_key, "token signature is invalid", id="our-kid-their-key"),
    pytest.param(
        _claims(iss="https://evil.example"), "token issuer not accepted", id="wrong-issuer"
    ),
    pytest.param(_claims(exp="never"), "claim exp missing or malformed", id="exp-not-a-number"),
    pytest.param(_claims(pad="x" * 9000), "token too large", id="oversized"),
    pytest.param(lambda r, s, p: "garbage", "malformed token", id="garbage"),
]


@dataclass
class Target:
    """One authority the forgeries are tried against: Verify changes nothing, so they share it."""

    running: RunningAuthority
    tokens: authsvc_pb2_grpc.TokenServiceStub
    admin: Metadata
    user_token: str


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def target(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Target]:
    async with start_authority(tmp_path_factory.mktemp("forgeries")) as running:
        app = await running.create_client("app", grant_types=["refresh_token"], audiences=["api"])
        pair = await running.authority.issue_token_pair(subject="alice", client_id=app.client_id)
        async with grpc.aio.insecure_channel(running.address) as channel:
            tokens = authsvc_pb2_grpc.TokenServiceStub(channel)
            yield Target(running, tokens, bearer(await running.admin_token()), pair.access.token)


@pytest.mark.parametrize(("forge", "reason"), FORGERIES)
@pytest.mark.asyncio(loop_scope="module")
async def test_verify_refuses(target: Target, forge: Forgery, reason: str) -> None:
    signer = target.running.authority.ctx.key_ring.signer
    token = forge(target.running, signer, payload_of(target.user_token))
    assert await refused(verify(target.tokens, target.admin, token)) == (*INVALID_TOKEN, reason)


@pytest.mark.asyncio(loop_scope="module")
async def test_crafting_with_our_own_key_works(target: Target) -> None:
    # The forgeries above are refused for their one flaw, not because crafting is broken.
    signer = target.running.authority.ctx.key_ring.signer
    token = craft(header_for(signer), payload_of(target.user_token), with_key(signer))
    assert (await verify(target.tokens, target.admin, token)).sub == "alice"


async def test_verify_refuses_a_refresh_token(tokens, admin, pair: pb.TokenPair) -> None:
    assert (await refused(verify(tokens, admin, pair.refresh_token)))[:2] == INVALID_TOKEN


async def test_verify_refuses_for_another_audience(tokens, admin, pair: pb.TokenPair) -> None:
    assert await refused(verify(tokens, admin, pair.access_token, audience="third-api")) == (
        *INVALID_TOKEN,
        "token audience not accepted",
    )


async def test_verify_refuses_an_expired_token(
    running: RunningAuthority, tokens, pair: pb.TokenPair
) -> None:
    running.clock.advance(running.settings.access_token_ttl + running.settings.leeway - 1)
    admin = bearer(await running.admin_token())
    await verify(tokens, admin, pair.access_token)  # within the leeway (and now cached)
    running.clock.advance(1)
    assert await refused(verify(tokens, admin, pair.access_token)) == (
        *INVALID_TOKEN,
        "token expired",
    )


async def test_token_of_a_retired_key_verifies_until_the_key_is_purged(
    running: RunningAuthority, tokens, pair: pb.TokenPair
) -> None:
    settings = running.settings
    old = running.authority.ctx.key_ring.signer
    # A long-lived token under the old key isolates the purge from ordinary expiry.
    long_lived = craft(
        header_for(old),
        {**payload_of(pair.access_token), "exp": int(running.clock.now()) + 10 * 86400},
        with_key(old),
    )
    running.clock.advance(settings.jwks_max_age)  # the pending key has been published long enough
    result = await running.authority.rotate_keys()
    assert result.active_kid != old.kid
    states = {k.kid: k.state for k in running.authority.publish_keys().records}
    assert states[old.kid] == "retired"

    admin = bearer(await running.admin_token())
    await verify(tokens, admin, pair.access_token)
    await verify(tokens, admin, long_lived)  # cached from here on

    retire_for = settings.longest_access_token_life + settings.jwks_max_age
    running.clock.advance(retire_for - 1)
    await running.authority.run_maintenance()
    admin = bearer(await running.admin_token())
    assert old.kid in running.authority.publish_keys().verification_keys
    await verify(tokens, admin, long_lived)

    running.clock.advance(1)
    await running.authority.run_maintenance()
    assert old.kid not in running.authority.publish_keys().verification_keys
    assert await refused(verify(tokens, admin, long_lived)) == (
        *INVALID_TOKEN,
        "unknown signing key",
    )


async def test_verify_of_a_live_token_never_queries_the_database(tmp_path: Path) -> None:
    # No polling by the revocation feed during the measurement: only Verify could query.
    async with start_authority(tmp_path, revocation_poll_interval=3600) as running:
        app = await running.create_client("app", grant_types=["refresh_token"], audiences=["api"])
        pair = await running.authority.issue_token_pair(subject="alice", client_id=app.client_id)
        admin = bearer(await running.admin_token())
        async with grpc.aio.insecure_channel(running.address) as channel:
            tokens = authsvc_pb2_grpc.TokenServiceStub(channel)
            with counting_statements(running) as statements:
                for _ in range(3):  # uncached, then cached
                    await verify(tokens, admin, pair.access.token)
                await refused(verify(tokens, admin, "garbage"))
            assert statements == []
            # The probe works: a call that must read the database is seen.
            with counting_statements(running) as statements:
                await tokens.ListSessions(pb.ListSessionsRequest(subject="alice"), metadata=admin)
            assert statements


# The Verifier as an adapter: authsvc_client decides, authsvc answers with its own error. It runs
# against the keys, issuer and time of the shared suite, so every refusal there is tried here.


def unit_verifier(clock: ManualClock | None = None) -> Verifier:
    ctx = SimpleNamespace(
        clock=clock or ManualClock(shared.NOW),
        key_ring=SimpleNamespace(verification_keys=shared.KEYS),
        settings=SimpleNamespace(issuer=shared.ISSUER, leeway=30),
        revocations=RevocationState(),
    )
    return Verifier(cast(AuthorityContext, ctx))


# An empty token is a request without one (test_verify_needs_a_token), not an invalid token.
@pytest.mark.parametrize(("token", "description"), [p for p in shared.REFUSALS if p.values[0]])
def test_every_refusal_reaches_the_caller_as_authsvcs_invalid_token(
    token: str, description: str
) -> None:
    with pytest.raises(errors.InvalidToken) as refused_here:
        unit_verifier().verify(token, audience=shared.AUDIENCE)
    assert refused_here.value.description == description
    assert isinstance(refused_here.value.__cause__, authsvc_client.InvalidToken)


def test_an_unknown_kid_is_invalid_like_any_other_refusal() -> None:
    # The authority holds every key it trusts: no key refresh to ask for, so no special error.
    token = shared.forged({"kid": "kid-nobody-published"})
    with pytest.raises(errors.InvalidToken, match=r"^unknown signing key$") as refused_here:
        unit_verifier().verify(token, audience=shared.AUDIENCE)
    assert type(refused_here.value) is errors.InvalidToken
    assert isinstance(refused_here.value.__cause__, authsvc_client.UnknownSigningKey)


def test_the_verifier_runs_authsvc_clients_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def spy(name: str, check: Callable[..., Any]) -> Callable[..., Any]:
        def spied(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return check(*args, **kwargs)

        return spied

    assert verification.verify_access_token is authsvc_client.verify_access_token
    assert verification.check_claims is authsvc_client.check_claims
    monkeypatch.setattr(verification, "verify_access_token", spy("verify", verify_access_token))
    monkeypatch.setattr(verification, "check_claims", spy("check_claims", check_claims))
    verifier = unit_verifier()
    for _ in range(2):  # a miss, then a hit
        assert verifier.verify(shared.TOKEN, audience=shared.AUDIENCE).sub == "alice"
    assert calls == ["verify", "check_claims"]


@pytest.mark.parametrize(
    ("later", "audience", "description"),
    [
        pytest.param(630, shared.AUDIENCE, "token expired", id="expired-since"),
        pytest.param(0, "orders", "token audience not accepted", id="another-audience"),
        pytest.param(629, None, None, id="no-audience-within-leeway"),
    ],
)
def test_a_cached_token_is_checked_again_on_every_call(
    later: float, audience: str | None, description: str | None
) -> None:
    clock = ManualClock(shared.NOW)
    verifier = unit_verifier(clock)
    verifier.verify(shared.TOKEN, audience=shared.AUDIENCE)  # cached from here on
    clock.advance(later)
    if description is None:
        assert verifier.verify(shared.TOKEN, audience=audience).sub == "alice"
        return
    with pytest.raises(errors.InvalidToken) as refused_here:
        verifier.verify(shared.TOKEN, audience=audience)
    assert refused_here.value.description == description


def test_the_cache_holds_no_usable_token() -> None:
    cache = verification.VerifiedTokenCache()
    claims = unit_verifier().verify(shared.TOKEN, audience=shared.AUDIENCE)
    cache.put(shared.TOKEN, claims)
    assert cache.get(shared.TOKEN) is claims
    assert shared.TOKEN not in repr(vars(cache))
    assert all(isinstance(key, bytes) and len(key) == 32 for key in vars(cache)["_entries"])
