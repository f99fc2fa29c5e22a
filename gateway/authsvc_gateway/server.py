"""Running the gateway under uvicorn: `serve` for the CLI, `start_gateway` for tests and benches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from types import FrameType

import uvicorn
from authsvc_client.v1 import authsvc_pb2 as pb
from starlette.types import ASGIApp

from authsvc_gateway.app import create_app
from authsvc_gateway.backend import AuthorityBackend, GrpcBackend
from authsvc_gateway.config import ConfigError, GatewayConfig
from authsvc_gateway.direct_routes import DirectRoutes
from authsvc_gateway.errors import OAuthError, TemporarilyUnavailable
from authsvc_gateway.http_protocol import CoalescingHttpToolsProtocol

log = logging.getLogger(__name__)

#: How long in-flight requests get to finish on shutdown before their connections are closed.
GRACEFUL_SHUTDOWN_SECONDS = 5


# What authsvc answers at the first call when the gateway's own client is wrong: fix the
# configuration. Any other error is authsvc's own (server_error) and may pass.
REFUSED_CLIENT = frozenset(
    {"invalid_client", "unauthorized_client", "invalid_scope", "insufficient_scope"}
)


class UpstreamUnavailable(Exception):
    """authsvc was unavailable for the gateway's first call, at start: nothing to serve in front of.
    The message names the address tried; the process exits 1, as authsvc does without its
    database, for its supervisor to start it again."""


async def confirm_issuer(backend: AuthorityBackend, config: GatewayConfig) -> None:
    """Refuse to start when the metadata would name another issuer than authsvc's tokens carry.

    A client that checks `iss` against the metadata (RFC 8414 §3.3, RFC 9207) would reject every
    token, so the gateway asks authsvc for a token of its own and compares. That is the first
    call to authsvc, so it also finds an authsvc that is unavailable (`UpstreamUnavailable`) or
    that refuses the gateway's own client (`ConfigError`).
    """
    try:
        token = await backend.client_credentials(
            pb.ClientCredentialsRequest(
                client_id=config.client_id,
                client_secret=config.client_secret,
                audience=[config.audience],
            )
        )
        found = await backend.introspect(pb.IntrospectRequest(token=token.access_token))
    except TemporarilyUnavailable as exc:
        raise UpstreamUnavailable(
            f"authsvc at AUTHSVC_GATEWAY_UPSTREAM={config.upstream} is unavailable (it does not "
            "answer there, or has no database): start it first, or set AUTHSVC_GATEWAY_UPSTREAM "
            "to its gRPC address (and AUTHSVC_GATEWAY_UPSTREAM_CA_FILE when it serves TLS)"
        ) from exc
    except OAuthError as exc:
        said = f"{exc.error}: {exc.description}" if exc.description else exc.error
        if exc.error not in REFUSED_CLIENT:  # authsvc failed, not the client: start again later
            raise UpstreamUnavailable(
                f"authsvc at AUTHSVC_GATEWAY_UPSTREAM={config.upstream} could not answer the "
                f"gateway's first call ({said})"
            ) from exc
        raise ConfigError(
            f"authsvc at {config.upstream} refused the gateway's own client "
            f"AUTHSVC_GATEWAY_CLIENT_ID={config.client_id} ({said}): "
            "check AUTHSVC_GATEWAY_CLIENT_ID and AUTHSVC_GATEWAY_CLIENT_SECRET, and the client's "
            "grant, scopes and audience (gateway/README.md)"
        ) from exc
    if found.iss != config.issuer:
        raise ConfigError(
            f"AUTHSVC_ISSUER is {config.issuer!r} for the gateway but authsvc issues tokens "
            f"as {found.iss!r}; set the same value for both"
        )


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket already listening on host:port (0 picks a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # The protocol must be named: asyncio sets TCP_NODELAY only on connections accepted from a
    # socket whose proto is IPPROTO_TCP, and without it every reply waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class GatewayServer(uvicorn.Server):
    """uvicorn's server, with the signals left to whoever runs it.

    uvicorn's own `capture_signals` stops gracefully on SIGINT or SIGTERM and then raises the
    signal again, so a gateway that shut down cleanly still died of SIGTERM (exit status -15,
    143 in a container). Here `serve` catches the two signals itself and returns normally, so
    `authsvc gateway` exits 0; and the gateway embedded in `authsvc serve` catches none, so
    that SIGTERM reaches authsvc's own handler, which marks health NOT_SERVING before the
    gateway stops accepting.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        stop_on_signals: bool,
        drain: float = 0.0,
        draining: threading.Event | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(config)
        self.stop_on_signals = stop_on_signals
        self.drain = drain
        self.draining = draining or threading.Event()
        self._monotonic = monotonic
        self._drain_ends: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """The first signal turns `/readyz` to 503 and, with a drain period, serves on until it
        ends (a load balancer's checks see the 503 and stop sending requests); the next signal,
        or the end of the period, stops as uvicorn does: no new connections, requests in flight
        finish."""
        if self.drain > 0 and not self.draining.is_set():
            self.draining.set()
            self._drain_ends = self._monotonic() + self.drain
            log.info(
                "draining", extra={"drain_seconds": self.drain, "hint": "a second signal ends it"}
            )
            return
        self.draining.set()
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_ends is not None and self._monotonic() >= self._drain_ends:
            return True
        return await super().on_tick(counter)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if not self.stop_on_signals or threading.current_thread() is not threading.main_thread():
            yield  # Python delivers signals to the main thread only
            return
        stopping = (signal.SIGINT, signal.SIGTERM)
        previous = {signum: signal.signal(signum, self.handle_exit) for signum in stopping}
        try:
            yield  # see handle_exit: drain, then requests in flight; another SIGINT cuts them off
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def uvicorn_server(
    app: ASGIApp,
    config: GatewayConfig,
    *,
    stop_on_signals: bool = False,
    draining: threading.Event | None = None,
) -> GatewayServer:
    """A uvicorn server for `app` that leaves the process's logging configuration alone, logs
    no line per request and, with `stop_on_signals`, stops gracefully on SIGINT or SIGTERM
    after `config.shutdown_drain` seconds with `draining` set (the app's `/readyz` at 503)."""
    return GatewayServer(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_config=None,
            # uvicorn's access log is a record per request, a cost at the rates the gateway
            # serves, and its request line carries the query string (/oauth/authorize's state,
            # code_challenge, redirect_uri), which has no place in logs. Off for the standalone
            # and the embedded gateway alike; what matters is logged by our own loggers.
            access_log=False,
            # httptools (llhttp, in C) rather than h11 (pure Python): about 100 µs less CPU per
            # request, a third of what the whole token endpoint costs; and each reply written
            # in one system call, not two (authsvc_gateway.http_protocol, docs/performance.md).
            http=CoalescingHttpToolsProtocol,
            # The gateway serves no WebSocket. With uvicorn's default ("auto") an Upgrade request
            # would be handed to whichever WebSocket library is installed (uvicorn[standard]
            # brings one), outside the limits of the protocol above.
            ws="none",
            server_header=False,
            # X-Forwarded-For is believed only from configured proxies; otherwise anyone could
            # pick the IP the login rate limit counts against.
            proxy_headers=bool(config.trusted_proxies),
            forwarded_allow_ips=list(config.trusted_proxies) or None,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        ),
        stop_on_signals=stop_on_signals,
        drain=config.shutdown_drain if stop_on_signals else 0.0,
        draining=draining,
    )


async def serve(
    config: GatewayConfig,
    *,
    backend: AuthorityBackend | None = None,
    sock: socket.socket | None = None,
    stop_on_signals: bool = True,
) -> None:
    """Serve the gateway until cancelled or, with `stop_on_signals` and on the main thread,
    until SIGINT or SIGTERM (then it returns normally, once in-flight requests are done).

    Without a `backend`, connects to authsvc at `config.upstream` over gRPC.
    """
    if backend is None:
        if not config.session_key_shared:
            log.warning(
                "AUTHSVC_GATEWAY_SESSION_KEY is not set: this gateway signs its login forms with "
                "a key of its own, so a login in progress fails after a restart or on another "
                "replica",
                extra={
                    "hint": "set AUTHSVC_GATEWAY_SESSION_KEY to the same value everywhere; "
                    "`authsvc kek` prints a fresh one"
                },
            )
        async with GrpcBackend.connect(config) as grpc_backend:
            await serve(config, backend=grpc_backend, sock=sock, stop_on_signals=stop_on_signals)
        return
    await confirm_issuer(backend, config)
    draining = threading.Event()
    app = create_app(config, backend, draining=draining)
    server = uvicorn_server(app, config, stop_on_signals=stop_on_signals, draining=draining)
    task = asyncio.create_task(server.serve(sockets=[sock] if sock is not None else None))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        # Cancelled by our caller: let uvicorn finish in-flight requests before returning.
        server.should_exit = True
        await task
        raise


@dataclass(frozen=True)
class RunningGateway:
    """A gateway serving in the background: its base URL and its app."""

    url: str
    app: DirectRoutes


@contextlib.asynccontextmanager
async def start_gateway(
    config: GatewayConfig, backend: AuthorityBackend, sock: socket.socket
) -> AsyncIterator[RunningGateway]:
    """Serve `config` on the already-listening `sock` until the block exits.

    The socket listens before uvicorn starts, so clients may connect at once: the kernel queues
    them until uvicorn accepts. `config.public_url` should name the socket's port.
    """
    app = create_app(config, backend)
    server = uvicorn_server(app, config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    host, port = sock.getsockname()[:2]
    try:
        yield RunningGateway(url=f"http://{host}:{port}", app=app)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=GRACEFUL_SHUTDOWN_SECONDS + 5)
