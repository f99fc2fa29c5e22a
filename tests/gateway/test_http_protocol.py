"""The gateway's HTTP protocol over a real connection: what uvicorn's httptools protocol leaves
to the server that runs it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_gateway import paths
from authsvc_gateway.config import GatewayConfig
from authsvc_gateway.http_protocol import MAX_HEAD_BYTES, CoalescingHttpToolsProtocol
from authsvc_gateway.server import GatewayServer, listening_socket, start_gateway, uvicorn_server
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.gateway.fakes import FakeBackend
from tests.waiting import eventually

SVC = "Basic " + base64.b64encode(b"svc:svc-secret").decode()


#: The request timeout in these tests; what takes longer is waited for, never slept out.
TIMEOUT = 0.2


class SlowBackend(FakeBackend):
    """An authsvc that takes longer than a client is given to send its request."""

    async def introspect(self, request: pb.IntrospectRequest, /) -> pb.IntrospectResponse:
        await asyncio.sleep(3 * TIMEOUT)  # the upstream's slowness is what is tested
        return await super().introspect(request)


@pytest.fixture
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CoalescingHttpToolsProtocol, "request_timeout", TIMEOUT)


@contextlib.asynccontextmanager
async def _gateway(backend: FakeBackend | None = None) -> AsyncIterator[int]:
    """A gateway under uvicorn on port 0, in front of a fake authsvc; yields its port."""
    backend = backend or FakeBackend()
    backend.add_client("svc", "svc-secret", grant_types=["client_credentials"])
    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config = GatewayConfig(client_id="g", client_secret="s", port=port)
    async with start_gateway(config, backend, sock):
        yield port


def _introspection(*, extra: bytes = b"", body: bytes = b"token=x") -> bytes:
    return (
        b"POST " + paths.INTROSPECT.encode() + b" HTTP/1.1\r\nhost: gw\r\n"
        b"authorization: " + SVC.encode() + b"\r\n"
        b"content-type: application/x-www-form-urlencoded\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body
    )


async def _exchange(port: int, data: bytes, *, replies: int | None = None) -> bytes:
    """What the gateway sends back for `data`: everything until it closes the connection, or
    the first `replies` replies (each ends with the fake's inactive answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        received = b""
        while replies is None or received.count(b'{"active": false}') < replies:
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            if not chunk:
                break
            received += chunk
        return received
    finally:
        writer.close()


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(
            _introspection(extra=b"x-big: " + b"a" * MAX_HEAD_BYTES + b"\r\n"), id="one-field"
        ),
        pytest.param(
            _introspection(
                extra=b"".join(
                    b"x-%d: %s\r\n" % (i, b"a" * 100) for i in range(MAX_HEAD_BYTES // 100)
                )
            ),
            id="many-fields",
        ),
        pytest.param(
            b"POST /oauth/introspect?" + b"a" * MAX_HEAD_BYTES + b" HTTP/1.1\r\nhost: gw\r\n\r\n",
            id="long-url",
        ),
        pytest.param(
            b"POST /oauth/introspect HTTP/1.1\r\nx-never-ends: " + b"a" * 2 * MAX_HEAD_BYTES,
            id="never-ends",
        ),
    ],
)
async def test_a_head_over_the_limit_is_431_and_the_connection_closes(head: bytes) -> None:
    """llhttp sets no limit and uvicorn's httptools protocol none either: a 10 MB header was
    read, held and served, and one that never ended was held for as long as it came."""
    async with _gateway() as port:
        reply = await _exchange(port, head)
    assert reply.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), reply[:200]
    assert b"connection: close\r\n" in reply


async def test_a_head_within_the_limit_is_served() -> None:
    async with _gateway() as port:
        reply = await _exchange(
            port,
            _introspection(extra=b"x-big: " + b"a" * (MAX_HEAD_BYTES - 1024) + b"\r\n"),
            replies=1,
        )
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n"), reply[:200]


async def test_many_small_requests_in_one_write_are_all_served() -> None:
    """Pipelined requests longer together than the limit: each head is measured alone."""
    count = 4 * MAX_HEAD_BYTES // len(_introspection())
    requests = [_introspection(body=b"token=t%d" % i) for i in range(count)]
    async with _gateway() as port:
        reply = await _exchange(port, b"".join(requests), replies=count)
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == count
    assert b"431" not in reply


@pytest.mark.usefixtures("short_timeout")
@pytest.mark.parametrize(
    "partial",
    [
        pytest.param(b"POST /oauth/introspect HTTP/1.1\r\nhost: gw\r\n", id="head"),
        pytest.param(_introspection(body=b"token=x")[:-3], id="body"),
    ],
)
async def test_a_request_that_does_not_arrive_in_time_is_408_and_closed(partial: bytes) -> None:
    """uvicorn's only timer is the keep-alive one, armed after a reply: a connection that sent
    half a request stayed open for good, the app waiting on the rest of a body with it."""
    async with _gateway() as port:
        reply = await _exchange(port, partial)
    assert reply.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), reply[:200]
    assert b"connection: close\r\n" in reply


@pytest.mark.usefixtures("short_timeout")
async def test_a_connection_that_sends_nothing_is_closed() -> None:
    async with _gateway() as port:
        assert await _exchange(port, b"") == b""


@pytest.mark.usefixtures("short_timeout")
async def test_a_request_answered_before_its_body_arrived_still_has_a_deadline() -> None:
    """The app refuses a body declared too large at once; the body that follows disarms
    uvicorn's keep-alive timer, and the connection must still not stay open for good."""
    body = b"token=" + b"a" * 20_000
    async with _gateway() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(_introspection(body=body)[: -len(body)])
            reply = await asyncio.wait_for(reader.readuntil(b'"the body is too large"}'), 10)
            assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
            writer.write(body)
            assert await asyncio.wait_for(reader.read(), 10) == b""
        finally:
            writer.close()


@pytest.mark.usefixtures("short_timeout")
async def test_a_request_the_app_takes_longer_to_answer_is_answered() -> None:
    """The timeout is the client's, for sending its request, not the app's for answering."""
    async with _gateway(SlowBackend()) as port:
        reply = await _exchange(port, _introspection() * 2, replies=2)
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 2


@pytest.mark.usefixtures("short_timeout")
async def test_a_partial_request_behind_pipelined_ones_waits_for_their_replies() -> None:
    """The deadline of a request that follows pipelined ones starts once they are answered: a
    408 written while the app still answers an earlier one took that one's place."""
    partial = b"POST /oauth/introspect HTTP/1.1\r\nhost: gw\r\n"
    async with _gateway(SlowBackend()) as port:
        reply = await _exchange(port, _introspection() * 2 + partial)
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 2, reply
    assert reply.endswith(b"Request timeout."), reply[-200:]
    assert reply.count(b"HTTP/1.1 408 Request Timeout\r\n") == 1


@contextlib.asynccontextmanager
async def _serving(
    app: Starlette, *, send_buffer: int | None = None
) -> AsyncIterator[tuple[int, GatewayServer]]:
    """`app` under uvicorn with the gateway's protocol, on port 0 (its connections with a kernel
    send buffer of `send_buffer` bytes); yields its port and server."""
    sock = listening_socket("127.0.0.1", 0)
    if send_buffer is not None:  # accepted connections inherit it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    server = uvicorn_server(app, GatewayConfig(client_id="g", client_secret="s"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield sock.getsockname()[1], server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def _header_names(request: Request) -> Response:
    """The names of the fields the app sees as the request's headers, once it read the body."""
    await request.body()
    return Response(b" ".join(name for name, _ in request.scope["headers"]))


async def test_a_chunked_requests_trailer_fields_are_neither_headers_nor_held() -> None:
    """llhttp reports trailer fields as it does headers, and uvicorn added each to the request's
    headers as it came, however many: past the limit on heads, and seen by the app as headers
    (RFC 9110 §6.5.1: a trailer field is not merged into the header section)."""
    head = (
        b"POST /names HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    trailers = b"".join(b"x-trailer-%d: %s\r\n" % (i, b"a" * 1000) for i in range(40))
    app = Starlette(routes=[Route("/names", _header_names, methods=["POST"])])
    async with _serving(app) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(head + b"7\r\ntoken=x\r\n0\r\n")
            for start in range(0, len(trailers), 4096):  # in reads of its own, as a client sends
                writer.write(trailers[start : start + 4096])
                await writer.drain()
            writer.write(b"\r\n")
            reply = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n"), reply[:200]
    assert reply.endswith(b"\r\n\r\nhost connection transfer-encoding"), reply[-200:]


@pytest.mark.parametrize(
    "big",
    [
        pytest.param(_introspection(extra=b"x-big: " + b"a" * MAX_HEAD_BYTES + b"\r\n"), id="ends"),
        pytest.param(
            b"POST /oauth/introspect HTTP/1.1\r\nx-never-ends: " + b"a" * 16 * MAX_HEAD_BYTES,
            id="never-ends",
        ),
    ],
)
async def test_a_head_over_the_limit_behind_a_pipelined_request_is_refused_after_its_reply(
    big: bytes,
) -> None:
    """The 431 was written as soon as the head was found too large: while the app still answered
    the request before it, whose reply the client then took it for, and which never came."""
    async with _gateway(SlowBackend()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            # A head is measured from the first read after it began: one longer than a read.
            writer.write(_introspection() + big)
            reply = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n"), reply[:200]
    assert reply.count(b"HTTP/1.1 431 Request Header Fields Too Large\r\n") == 1
    assert reply.endswith(b"Request header fields too large."), reply[-200:]


async def _kibibytes(request: Request) -> Response:
    return Response(b"a" * 1024 * request.path_params["n"])


@pytest.mark.usefixtures("short_timeout")
@pytest.mark.parametrize(
    "requests",
    [
        pytest.param(
            b"GET /32 HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n", id="closed-unsent"
        ),
        pytest.param(b"GET /32 HTTP/1.1\r\nhost: gw\r\n\r\n" * 8, id="app-waits-to-write"),
    ],
)
async def test_a_client_that_does_not_read_its_replies_is_dropped(requests: bytes) -> None:
    """asyncio and uvloop close a connection only once what is buffered for it is sent, and
    uvicorn's app waits to write while too much is: a client that stopped reading held its
    connection, and the app's task, for good."""
    app = Starlette(routes=[Route("/{n:int}", _kibibytes)])
    loop = asyncio.get_running_loop()
    async with _serving(app, send_buffer=4096) as (port, server):
        client = socket.socket()
        with contextlib.closing(client):
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.setblocking(False)
            await loop.sock_connect(client, ("127.0.0.1", port))
            await loop.sock_sendall(client, requests)
            await eventually(lambda: bool(server.server_state.connections))
            await eventually(lambda: not server.server_state.connections, within=5)
