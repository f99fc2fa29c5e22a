"""Starting and stopping the gateway under uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import replace

import httpx
import pytest
from authsvc_gateway.backend import GrpcBackend
from authsvc_gateway.config import GATEWAY_SCOPES, ConfigError, GatewayConfig
from authsvc_gateway.server import listening_socket, serve, uvicorn_server
from starlette.applications import Starlette

from authsvc.testing import RunningAuthority


async def _config(running: RunningAuthority, port: int) -> GatewayConfig:
    own = await running.create_client(
        "gateway",
        grant_types=["client_credentials"],
        scopes=GATEWAY_SCOPES,
        audiences=[running.settings.audience],
    )
    return GatewayConfig(
        client_id=own.client_id,
        client_secret=own.client_secret,
        issuer=running.settings.issuer,
        upstream=running.address,
        port=port,
        public_url=f"http://127.0.0.1:{port}",
    )


async def test_serve_answers_until_cancelled(running: RunningAuthority) -> None:
    sock = listening_socket("127.0.0.1", 0)
    config = await _config(running, sock.getsockname()[1])
    task = asyncio.create_task(serve(config, sock=sock))
    async with httpx.AsyncClient(base_url=config.public_url) as http:
        reply = await http.get("/.well-known/oauth-authorization-server")
        assert reply.json()["issuer"] == running.settings.issuer
        assert "server" not in reply.headers
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sock.fileno() == -1  # uvicorn closed the listening socket


async def test_serve_refuses_an_issuer_authsvc_does_not_use(running: RunningAuthority) -> None:
    sock = listening_socket("127.0.0.1", 0)
    config = replace(await _config(running, 0), issuer="https://elsewhere.example")
    with contextlib.closing(sock):
        async with GrpcBackend.connect(config) as backend:
            with pytest.raises(ConfigError, match="AUTHSVC_ISSUER"):
                await serve(config, backend=backend, sock=sock)


async def test_replies_are_not_held_back_by_nagle(running: RunningAuthority) -> None:
    """Connections accepted from `listening_socket` get TCP_NODELAY (asyncio sets it only for
    sockets created with IPPROTO_TCP); without it each reply waits for a delayed ACK."""
    sock = listening_socket("127.0.0.1", 0)
    assert sock.proto == socket.IPPROTO_TCP
    with contextlib.closing(sock):
        client = socket.create_connection(sock.getsockname()[:2])
        with contextlib.closing(client):
            loop = asyncio.get_running_loop()
            accepted, _ = await loop.sock_accept(sock)
            with contextlib.closing(accepted):
                assert accepted.proto == socket.IPPROTO_TCP


def test_requests_are_parsed_by_httptools() -> None:
    """The C parser: h11 in pure Python cost about 100 µs of CPU per request (docs/performance.md)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    config = GatewayConfig(client_id="gateway", client_secret="secret")
    server = uvicorn_server(Starlette(), config)
    server.config.load()
    assert server.config.http_protocol_class is HttpToolsProtocol
