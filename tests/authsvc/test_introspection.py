"""Introspect (RFC 7662) over gRPC: active access and refresh tokens, and `active: false` alone
for every kind of inactive token."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from authsvc_client.v1 import authsvc_pb2 as pb

from authsvc.client_registry import RegisteredClient
from authsvc.testing import RunningAuthority
from authsvc.tokens import opaque
from tests.authsvc.calls import bearer


def payload_of(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return result


async def introspect(tokens, admin, token: str, **fields: str) -> pb.IntrospectResponse:
    return await tokens.Introspect(pb.IntrospectRequest(token=token, **fields), metadata=admin)


async def test_active_access_token(
    running: RunningAuthority, tokens, admin, app: RegisteredClient, pair: pb.TokenPair
) -> None:
    claims = payload_of(pair.access_token)
    response = await introspect(tokens, admin, pair.access_token, token_type_hint="access_token")
    assert response == pb.IntrospectResponse(
        active=True,
        token_type="access_token",
        scope=["read", "write", "profile"],
        client_id=app.client_id,
        sub="alice",
        aud=["api", "other-api"],
        iss=running.settings.issuer,
        exp=claims["exp"],
        iat=claims["iat"],
        jti=claims["jti"],
        sid=pair.family_id,
    )


async def test_active_refresh_token(
    running: RunningAuthority, tokens, admin, app: RegisteredClient, pair: pb.TokenPair
) -> None:
    issued_at = running.clock.now()
    response = await introspect(tokens, admin, pair.refresh_token)
    assert response == pb.IntrospectResponse(
        active=True,
        token_type="refresh_token",
        scope=["read", "write", "profile"],
        client_id=app.client_id,
        sub="alice",
        aud=["api", "other-api"],
        iss=running.settings.issuer,
        exp=int(issued_at + running.settings.refresh_idle_ttl),
        iat=int(issued_at),
        sid=pair.family_id,
    )


async def test_a_token_for_any_audience_introspects(
    running: RunningAuthority, tokens, admin
) -> None:
    # Introspection reports `aud` rather than checking it.
    response = await introspect(tokens, admin, await running.admin_token())
    assert response.active
    assert list(response.aud) == [running.settings.audience]


async def test_wrong_hint_is_only_a_hint(tokens, admin, pair: pb.TokenPair) -> None:
    assert (
        await introspect(tokens, admin, pair.refresh_token, token_type_hint="access_token")
    ).active
    assert (
        await introspect(tokens, admin, pair.access_token, token_type_hint="refresh_token")
    ).active


Inactive = Callable[[RunningAuthority, Any, Any, pb.TokenPair], Awaitable[str]]


async def _used_refresh(r, tokens, admin, pair) -> str:
    await tokens.Rotate(pb.RotateRequest(refresh_token=pair.refresh_token), metadata=admin)
    return pair.refresh_token


async def _revoked_refresh(r, tokens, admin, pair) -> str:
    await tokens.RevokeFamily(pb.RevokeFamilyRequest(family_id=pair.family_id), metadata=admin)
    return pair.refresh_token


async def _revoked_access(r, tokens, admin, pair) -> str:
    await tokens.RevokeFamily(pb.RevokeFamilyRequest(family_id=pair.family_id), metadata=admin)
    return pair.access_token


async def _jti_revoked_access(r, tokens, admin, pair) -> str:
    await tokens.Revoke(pb.RevokeRequest(token=pair.access_token), metadata=admin)
    return pair.access_token


async def _expired_access(r, tokens, admin, pair) -> str:
    r.clock.advance(r.settings.longest_access_token_life)
    return pair.access_token


async def _idle_expired_refresh(r, tokens, admin, pair) -> str:
    r.clock.advance(r.settings.refresh_idle_ttl)
    return pair.refresh_token


def _constant(value: str) -> Inactive:
    async def token(r, tokens, admin, pair) -> str:
        return value

    return token


@pytest.mark.parametrize(
    "inactive",
    [
        pytest.param(_used_refresh, id="used-refresh-token"),
        pytest.param(_revoked_refresh, id="revoked-refresh-token"),
        pytest.param(_revoked_access, id="revoked-family-access-token"),
        pytest.param(_jti_revoked_access, id="revoked-access-token"),
        pytest.param(_expired_access, id="expired-access-token"),
        pytest.param(_idle_expired_refresh, id="idle-expired-refresh-token"),
        pytest.param(_constant(opaque.new_secret(opaque.Kind.REFRESH_TOKEN)), id="unknown-refresh"),
        pytest.param(_constant(opaque.new_secret(opaque.Kind.CLIENT_SECRET)), id="client-secret"),
        pytest.param(_constant("garbage"), id="garbage"),
        pytest.param(_constant(""), id="empty"),
        pytest.param(_constant("eyJhbGciOiJub25lIn0.e30."), id="unsigned-jwt"),
    ],
)
async def test_inactive_tokens_answer_active_false_and_nothing_else(
    running: RunningAuthority, tokens, admin, pair: pb.TokenPair, inactive: Inactive
) -> None:
    token = await inactive(running, tokens, admin, pair)
    admin = bearer(await running.admin_token())  # the clock may have moved
    response = await introspect(tokens, admin, token)
    assert response.ListFields() == []  # active=false is the default: nothing is set at all
    assert response.SerializeToString() == b""


async def test_client_id_filter(
    running: RunningAuthority, tokens, admin, app: RegisteredClient, pair: pb.TokenPair
) -> None:
    other = await running.create_client("other", grant_types=["refresh_token"])
    for token in (pair.access_token, pair.refresh_token):
        assert (await introspect(tokens, admin, token, client_id=app.client_id)).active
        foreign = await introspect(tokens, admin, token, client_id=other.client_id)
        assert foreign.ListFields() == []
