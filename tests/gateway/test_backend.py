"""The gRPC backend: error translation, the gateway's own token, and authsvc being away."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import grpc
import httpx
import pytest
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_gateway import create_app, paths
from authsvc_gateway.backend import (
    GrpcBackend,
    ServiceToken,
    error_from_rpc,
    refuses_our_credentials,
)
from authsvc_gateway.config import GATEWAY_SCOPES, GatewayConfig
from authsvc_gateway.errors import InvalidClient, InvalidGrant, ServerError, TemporarilyUnavailable

from authsvc.testing import RunningAuthority


def _rpc_error(code: grpc.StatusCode, **trailers: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers.items()), details="detail"
    )


@pytest.mark.parametrize(
    ("status", "trailers", "expected"),
    [
        pytest.param(
            grpc.StatusCode.FAILED_PRECONDITION,
            {"oauth-error": "invalid_grant", "oauth-error-description": "reused"},
            InvalidGrant,
            id="oauth-error-wins",
        ),
        pytest.param(grpc.StatusCode.UNAVAILABLE, {}, TemporarilyUnavailable, id="unavailable"),
        pytest.param(grpc.StatusCode.DEADLINE_EXCEEDED, {}, TemporarilyUnavailable, id="deadline"),
        pytest.param(grpc.StatusCode.INTERNAL, {}, ServerError, id="bare-internal"),
        pytest.param(
            grpc.StatusCode.UNAUTHENTICATED,
            {"oauth-error": "nonsense"},
            ServerError,
            id="unknown-code",
        ),
    ],
)
def test_error_from_rpc(status: grpc.StatusCode, trailers: dict[str, str], expected: type) -> None:
    error = error_from_rpc(_rpc_error(status, **trailers))
    assert type(error) is expected


def test_the_description_travels() -> None:
    error = error_from_rpc(
        _rpc_error(
            grpc.StatusCode.FAILED_PRECONDITION,
            **{"oauth-error": "invalid_grant", "oauth-error-description": "reused"},
        )
    )
    assert error.description == "reused"


@pytest.mark.parametrize(
    ("status", "code", "ours"),
    [
        pytest.param(grpc.StatusCode.UNAUTHENTICATED, "invalid_token", True, id="our-token"),
        pytest.param(grpc.StatusCode.PERMISSION_DENIED, "insufficient_scope", True, id="our-scope"),
        pytest.param(grpc.StatusCode.UNAUTHENTICATED, "invalid_client", False, id="their-client"),
        pytest.param(grpc.StatusCode.FAILED_PRECONDITION, "invalid_token", False, id="their-token"),
    ],
)
def test_refuses_our_credentials(status: grpc.StatusCode, code: str, ours: bool) -> None:
    assert refuses_our_credentials(_rpc_error(status, **{"oauth-error": code})) is ours


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_the_service_token_is_renewed_at_eighty_percent_of_its_life() -> None:
    clock = Clock()
    fetched: list[int] = []

    async def fetch() -> pb.AccessToken:
        fetched.append(1)
        return pb.AccessToken(access_token=f"t{len(fetched)}", expires_in=100)

    token = ServiceToken(fetch, clock)
    assert await token.bearer() == "t1"
    clock.now = 79.9
    assert await token.bearer() == "t1"
    clock.now = 80.0
    assert await token.bearer() == "t2"
    token.discard("t1")  # a stale refusal does not throw away a newer token
    assert await token.bearer() == "t2"
    token.discard("t2")
    assert await token.bearer() == "t3"


async def test_concurrent_callers_share_one_fetch() -> None:
    release = asyncio.Event()
    fetched: list[int] = []

    async def fetch() -> pb.AccessToken:
        fetched.append(1)
        await release.wait()
        return pb.AccessToken(access_token="t", expires_in=100)

    token = ServiceToken(fetch, Clock())
    waiting = [asyncio.create_task(token.bearer()) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == ["t"] * 5
    assert len(fetched) == 1


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
