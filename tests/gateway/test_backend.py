"""The gRPC backend: error translation, the gateway's own token, and authsvc being away."""

from __future__ import annotations

from dataclasses import replace

import authsvc_client as client_errors
import grpc
import httpx
import pytest
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_gateway import create_app, paths
from authsvc_gateway.backend import (
    GrpcBackend,
    gateway_error,
    refuses_our_credentials,
)
from authsvc_gateway.config import GATEWAY_SCOPES, GatewayConfig
from authsvc_gateway.errors import InvalidClient, InvalidGrant, ServerError, TemporarilyUnavailable

from authsvc.testing import RunningAuthority


@pytest.mark.parametrize(
    ("answered", "expected", "description"),
    [
        pytest.param(client_errors.InvalidGrant("reused"), InvalidGrant, "reused", id="by-code"),
        pytest.param(
            client_errors.TemporarilyUnavailable("failed to connect to 10.0.0.7:50051"),
            TemporarilyUnavailable,
            "authsvc is unavailable; try again shortly",
            id="unavailable-hides-internals",
        ),
        pytest.param(
            client_errors.ServerError("stack trace"),
            ServerError,
            "authsvc could not answer",
            id="server-error-hides-internals",
        ),
        pytest.param(
            client_errors.AuthError("?", error="made_up"), ServerError, None, id="unknown-code"
        ),
    ],
)
def test_gateway_error(
    answered: client_errors.AuthError, expected: type, description: str | None
) -> None:
    error = gateway_error(answered)
    assert type(error) is expected
    if description is not None:
        assert error.description == description


@pytest.mark.parametrize(
    ("answered", "ours"),
    [
        pytest.param(
            client_errors.InvalidToken("x", status=grpc.StatusCode.UNAUTHENTICATED),
            True,
            id="our-token",
        ),
        pytest.param(client_errors.InsufficientScope("x"), True, id="our-scope"),
        pytest.param(client_errors.InvalidClient("x"), False, id="their-client"),
        pytest.param(
            client_errors.InvalidToken("x", status=grpc.StatusCode.FAILED_PRECONDITION),
            False,
            id="their-token",
        ),
    ],
)
def test_refuses_our_credentials(answered: client_errors.AuthError, ours: bool) -> None:
    assert refuses_our_credentials(answered) is ours


async def _gateway_client(running: RunningAuthority, scopes=GATEWAY_SCOPES) -> GatewayConfig:
    own = await running.create_client(
        "gateway",
        grant_types=["client_credentials"],
        scopes=scopes,
        audiences=[running.settings.audience],
    )
    return GatewayConfig(
        client_id=own.client_id,
        client_secret=own.client_secret,
        issuer=running.settings.issuer,
        upstream=running.address,
    )


async def test_calls_carry_the_gateways_own_token(running: RunningAuthority) -> None:
    config = await _gateway_client(running)
    app = await running.create_client("app", grant_types=["client_credentials"])
    async with GrpcBackend.connect(config) as backend:
        found = await backend.authenticate_client(
            pb.AuthenticateClientRequest(client_id=app.client_id, client_secret=app.client_secret)
        )
        assert found.client_id == app.client_id
        with pytest.raises(InvalidClient):
            await backend.authenticate_client(
                pb.AuthenticateClientRequest(client_id=app.client_id, client_secret="asc_wrong")
            )


async def test_a_revoked_gateway_token_is_replaced_once(running: RunningAuthority) -> None:
    config = await _gateway_client(running)
    async with GrpcBackend.connect(config) as backend:
        await backend.get_client(pb.GetClientRequest(client_id=config.client_id))
        await running.authority.revoke_client(config.client_id, reason="test")
        running.clock.advance(1)
        # The cached token is refused; the backend fetches a new one and the call goes through.
        found = await backend.get_client(pb.GetClientRequest(client_id=config.client_id))
        assert found.client_id == config.client_id


async def test_a_gateway_registered_without_its_permissions_is_a_server_error(
    running: RunningAuthority,
) -> None:
    # It asks for exactly GATEWAY_SCOPES, so authsvc refuses it a token at all.
    config = await _gateway_client(running, scopes=["authsvc:gateway"])
    async with GrpcBackend.connect(config) as backend:
        with pytest.raises(ServerError):
            await backend.introspect(pb.IntrospectRequest(token="x"))


async def test_wrong_gateway_credentials_are_a_server_error(running: RunningAuthority) -> None:
    config = replace(await _gateway_client(running), client_secret="asc_wrong")
    async with GrpcBackend.connect(config) as backend:
        with pytest.raises(ServerError):
            await backend.get_client(pb.GetClientRequest(client_id="x"))


async def test_authsvc_away_is_503_never_500() -> None:
    config = GatewayConfig(
        client_id="g", client_secret="s", upstream="127.0.0.1:1", upstream_timeout=2.0
    )
    async with GrpcBackend.connect(config) as backend:
        app = create_app(config, backend)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            token = await http.post(
                paths.TOKEN,
                data={"grant_type": "client_credentials", "client_id": "a", "client_secret": "b"},
            )
            assert token.status_code == 503
            assert token.json()["error"] == "temporarily_unavailable"
            assert token.headers["retry-after"]
            page = await http.get(paths.AUTHORIZE, params={"client_id": "a"})
            assert page.status_code == 503
            assert (await http.get(paths.JWKS)).status_code == 503
