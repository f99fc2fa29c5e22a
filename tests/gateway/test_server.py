"""Starting and stopping the gateway under uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from dataclasses import replace

import httpx
import pytest
import uvicorn
from authsvc_gateway.backend import GrpcBackend
from authsvc_gateway.config import GATEWAY_SCOPES, ConfigError, GatewayConfig
from authsvc_gateway.http_protocol import CoalescedWrites, CoalescingHttpToolsProtocol
from authsvc_gateway.server import GatewayServer, listening_socket, serve, uvicorn_server
from starlette.applications import Starlette

from authsvc.testing import RunningAuthority
from tests.waiting import eventually


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


async def _serving_handlers(config: GatewayConfig, sock: socket.socket, **kwargs: bool) -> object:
    """The SIGTERM handler in force while `serve` answers its first request."""
    task = asyncio.create_task(serve(config, sock=sock, **kwargs))
    try:
        async with httpx.AsyncClient(base_url=config.public_url) as http:
            assert (await http.get("/.well-known/jwks.json")).status_code == 200
        return signal.getsignal(signal.SIGTERM)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_serve_catches_sigterm_while_it_serves_and_gives_the_handlers_back(
    running: RunningAuthority,
) -> None:
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    sock = listening_socket("127.0.0.1", 0)
    config = await _config(running, sock.getsockname()[1])
    during = await _serving_handlers(config, sock)
    assert during is not before[signal.SIGTERM]
    assert getattr(during, "__name__", "") == "handle_exit"  # the gateway's own, while it serves
    after = {signum: signal.getsignal(signum) for signum in before}
    assert after == before


async def test_an_embedded_gateway_leaves_the_signals_to_its_program(
    running: RunningAuthority,
) -> None:
    # `authsvc serve` marks health NOT_SERVING on SIGTERM before it stops the gateway; a
    # gateway that caught the signal itself would stop accepting first.
    before = signal.getsignal(signal.SIGTERM)
    sock = listening_socket("127.0.0.1", 0)
    config = await _config(running, sock.getsockname()[1])
    assert await _serving_handlers(config, sock, stop_on_signals=False) is before


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
    assert issubclass(server.config.http_protocol_class, HttpToolsProtocol)
    assert server.config.http_protocol_class is CoalescingHttpToolsProtocol


def test_no_upgrade_leaves_the_http_protocol() -> None:
    """An Upgrade: websocket request stays an HTTP request under the limits of the protocol
    above, whatever WebSocket library happens to be installed."""
    config = GatewayConfig(client_id="gateway", client_secret="secret")
    server = uvicorn_server(Starlette(), config)
    assert server.config.ws == "none"  # not "auto": none is installed here to be picked
    server.config.load()
    assert server.config.ws_protocol_class is None


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"extra {name}"


async def test_the_writes_of_one_loop_pass_leave_as_one() -> None:
    transport = RecordingTransport()
    coalesced = CoalescedWrites(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    coalesced.write(b"HTTP/1.1 200 OK\r\n\r\n")
    coalesced.write(b"")
    coalesced.write(b"{}")
    assert transport.writes == []
    await asyncio.sleep(0)  # the loop pass ends
    assert transport.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
    coalesced.write(b"next")
    await asyncio.sleep(0)
    assert transport.writes[-1] == b"next"
    assert coalesced.get_extra_info("peername") == "extra peername"


async def test_closing_sends_what_is_pending_first() -> None:
    transport = RecordingTransport()
    coalesced = CoalescedWrites(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    coalesced.write(b"last reply")
    coalesced.close()
    assert transport.writes == [b"last reply"]
    assert transport.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing left
    assert transport.writes == [b"last reply"]


async def test_replies_arrive_whole_over_a_real_connection(running: RunningAuthority) -> None:
    sock = listening_socket("127.0.0.1", 0)
    config = await _config(running, sock.getsockname()[1])
    task = asyncio.create_task(serve(config, sock=sock))
    try:
        async with httpx.AsyncClient(base_url=config.public_url) as http:
            for _ in range(3):  # keep-alive: several replies on one connection
                reply = await http.get("/.well-known/oauth-authorization-server")
                assert reply.json()["issuer"] == running.settings.issuer
                reply = await http.post("/oauth/token", data={"grant_type": "client_credentials"})
                assert reply.status_code == 401
                assert reply.json()["error"] == "invalid_client"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_the_first_sigterm_drains_with_readyz_at_503_and_the_second_stops(
    running: RunningAuthority,
) -> None:
    """`authsvc gateway` had stopped accepting at the first signal: a load balancer still
    sending it requests until its next check got refused connections."""
    sock = listening_socket("127.0.0.1", 0)
    config = replace(await _config(running, sock.getsockname()[1]), shutdown_drain=600)
    task = asyncio.create_task(serve(config, sock=sock))
    async with httpx.AsyncClient(base_url=config.public_url) as http:
        assert (await http.get("/readyz")).status_code == 200
        signal.raise_signal(signal.SIGTERM)  # the serving gateway's own handler takes it

        async def not_ready() -> bool:
            return (await http.get("/readyz")).status_code == 503

        await eventually(not_ready)
        assert (await http.get("/.well-known/jwks.json")).status_code == 200  # still serving
        assert not task.done()
        signal.raise_signal(signal.SIGTERM)
        await asyncio.wait_for(task, 10)  # the second signal ends the drain, not its 600 s


@pytest.mark.parametrize("raw", ["-1", "soon", "nan"])
def test_a_drain_that_is_not_seconds_is_refused(raw: str) -> None:
    env = {
        "AUTHSVC_GATEWAY_CLIENT_ID": "g",
        "AUTHSVC_GATEWAY_CLIENT_SECRET": "s",
        "AUTHSVC_SHUTDOWN_DRAIN": raw,
    }
    with pytest.raises(ConfigError, match="AUTHSVC_SHUTDOWN_DRAIN"):
        GatewayConfig.from_env(env)


def test_a_drain_until_the_second_signal_is_read_as_authsvc_reads_it() -> None:
    """`authsvc serve` takes AUTHSVC_SHUTDOWN_DRAIN=inf for "until the second signal", and its
    embedded gateway reads the same variable: refusing it there stopped the start."""
    env = {
        "AUTHSVC_GATEWAY_CLIENT_ID": "g",
        "AUTHSVC_GATEWAY_CLIENT_SECRET": "s",
        "AUTHSVC_SHUTDOWN_DRAIN": "inf",
    }
    assert GatewayConfig.from_env(env).shutdown_drain == float("inf")


async def test_the_drain_ends_by_itself_when_its_seconds_have_passed() -> None:
    """Without a second signal the drain ends at its time, and the server stops as uvicorn
    does (no new connections, requests in flight finish)."""
    now = [100.0]
    server = GatewayServer(
        uvicorn.Config(Starlette()), stop_on_signals=True, drain=30, monotonic=lambda: now[0]
    )
    server.handle_exit(signal.SIGTERM, None)
    assert server.draining.is_set()
    assert not server.should_exit
    assert not await server.on_tick(1)  # still serving, /readyz at 503
    now[0] += 29.9
    assert not await server.on_tick(2)
    now[0] += 0.1
    assert await server.on_tick(3)
