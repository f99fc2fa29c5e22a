"""`/healthz` and `/readyz`: the gateway's liveness, and readiness as authsvc's grpc.health.v1
reports it (its database included), through either backend."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from authsvc_gateway import create_app, paths
from authsvc_gateway.backend import GrpcBackend
from authsvc_gateway.config import GatewayConfig

from tests.databases import table_renamed
from tests.gateway.conftest import deploy
from tests.gateway.fakes import FakeBackend


@pytest.mark.parametrize(
    ("serving", "status", "body"),
    [
        pytest.param(True, 200, "ready\n", id="serving"),
        pytest.param(False, 503, "not ready\n", id="not-serving"),
    ],
)
async def test_readyz_says_what_authsvc_health_says(serving: bool, status: int, body: str) -> None:
    app = create_app(GatewayConfig(client_id="g", client_secret="s"), FakeBackend(serving=serving))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        ready = await http.get(paths.READINESS)
        live = await http.get(paths.LIVENESS)
    assert (ready.status_code, ready.text) == (status, body)
    assert ready.headers["cache-control"] == "no-store"  # a cached "ready" would hide an outage
    assert (live.status_code, live.text) == (200, "ok\n")  # never depends on authsvc


@pytest.mark.parametrize("backend", ["grpc", "in_process"])
async def test_readyz_follows_the_database_and_the_shutdown(tmp_path: Path, backend: str) -> None:
    async with (
        deploy(tmp_path, backend=backend) as deployment,
        httpx.AsyncClient(base_url=deployment.url) as http,
    ):
        health = deployment.authority.authority.health
        assert (await http.get(paths.READINESS)).status_code == 200
        async with table_renamed(deployment.authority.settings.database_url, "event_stream"):
            await health.probe_now()
            assert (await http.get(paths.READINESS)).status_code == 503
            assert (await http.get(paths.LIVENESS)).status_code == 200
        await health.probe_now()
        assert (await http.get(paths.READINESS)).status_code == 200
        await health.begin_shutdown()
        assert (await http.get(paths.READINESS)).status_code == 503


async def test_an_unreachable_authsvc_is_not_ready() -> None:
    config = GatewayConfig(
        client_id="g", client_secret="s", upstream="127.0.0.1:1", upstream_timeout=2.0
    )
    async with GrpcBackend.connect(config) as backend:
        assert not await backend.ready()
