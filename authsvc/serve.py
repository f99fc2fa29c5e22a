"""`authsvc serve`: the long-running process.

Start-up: migrate an empty database, load keys, bootstrap dev credentials on the first dev run,
start gRPC (and, in dev, the HTTP gateway in the same process), then wait for SIGTERM or SIGINT.
Shutdown: health NOT_SERVING (gRPC and the gateway's /readyz), serve on for
AUTHSVC_SHUTDOWN_DRAIN seconds (0 by default; a second signal ends it), refuse new calls, end the
revocation streams cleanly (verifiers resume elsewhere), let calls in flight finish within
AUTHSVC_SHUTDOWN_GRACE seconds, stop background work (the database health probe too), close the
database.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import os
import signal
import socket
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from authsvc.authority import Authority, open_authority
from authsvc.client_registry import ADMIN_SCOPES
from authsvc.config import ConfigError, Settings, make_directory
from authsvc.keys.derivation import GATEWAY_SESSION, derive_key
from authsvc.keys.sealing import load_kek
from authsvc.rpc.server import start_server, stop_server
from authsvc.scheduling import prefer_batch_scheduling

if TYPE_CHECKING:
    from authsvc_gateway.config import GatewayConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

DEV_CREDENTIALS = "dev-credentials.json"
GATEWAY_SCOPES = ("authsvc:gateway", "authsvc:issue", "authsvc:introspect", "authsvc:revoke")
DEMO_REDIRECT_URI = "http://127.0.0.1:8765/callback"


async def bootstrap_dev(authority: Authority) -> dict[str, Any] | None:
    """On a dev run with no dev credentials to read (the first run, or their file was lost or
    cut short): an admin client, the gateway's client, a demo service client and a demo public
    web client. Saved 0600 in the data directory, printed once. None when the registry has
    clients and the file reads."""
    path = authority.settings.data_dir / DEV_CREDENTIALS
    if await authority.list_clients():
        if _dev_credentials_read(path) is not None:
            return None
        log.warning(
            "the dev credentials file is missing or unreadable; registering new dev clients",
            extra={
                "path": str(path),
                "hint": "the earlier dev clients stay registered (authsvc clients list)",
            },
        )
    audience = authority.settings.audience
    admin = await authority.create_client(
        "dev-admin", grant_types=["client_credentials"], scopes=ADMIN_SCOPES, audiences=[audience]
    )
    gateway = await authority.create_client(
        "gateway", grant_types=["client_credentials"], scopes=GATEWAY_SCOPES, audiences=[audience]
    )
    demo = await authority.create_client(
        "demo-service",
        grant_types=["client_credentials"],
        scopes=["demo:read", "demo:write"],
        audiences=["demo-api", audience],
    )
    web = await authority.create_client(
        "demo-web",
        grant_types=["authorization_code", "refresh_token"],
        scopes=["openid", "demo:read"],
        audiences=["demo-api"],
        redirect_uris=[DEMO_REDIRECT_URI],
        public=True,
        first_party=True,
    )
    credentials = {
        "admin": {"client_id": admin.client_id, "client_secret": admin.client_secret},
        "gateway": {"client_id": gateway.client_id, "client_secret": gateway.client_secret},
        "demo": {"client_id": demo.client_id, "client_secret": demo.client_secret},
        "web": {"client_id": web.client_id, "redirect_uri": DEMO_REDIRECT_URI},
    }
    _write_private(path, json.dumps(credentials, indent=2))
    return credentials


def _write_private(path: Path, text: str) -> None:
    """Write `path` (0600) whole or not at all: a crash or a full disk mid-write leaves the file
    as it was, not cut short."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _dev_credentials_read(path: Path) -> dict[str, Any] | None:
    """The dev credentials file's contents, or None if it is missing or not what dev mode
    writes (cut short by a crash, edited by hand)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(part), dict) for part in ("admin", "gateway", "demo", "web")
    ):
        return None
    return data


def read_dev_credentials(settings: Settings, otherwise: str) -> dict[str, Any]:
    """The credentials the first `serve --dev` wrote, or a ConfigError saying how to get them:
    `make run` (which writes them again when they are missing or unreadable), or `otherwise`."""
    path = settings.data_dir / DEV_CREDENTIALS
    data = _dev_credentials_read(path)
    if data is None:
        what = "cannot be read" if path.exists() else "does not exist"
        raise ConfigError(
            f"{path} {what}: run `make run` (dev mode writes it, with new dev clients when it is "
            f"missing or unreadable), or {otherwise}"
        )
    return data


def dev_issuer(settings: Settings, environ: Mapping[str, str]) -> Settings:
    """Dev mode's issuer, when AUTHSVC_ISSUER does not name one: the embedded gateway's own URL.
    The default (port 8080) would otherwise be the metadata's `issuer` wherever
    AUTHSVC_GATEWAY_ADDRESS moved the gateway, and clients that check RFC 8414 §3.3 (the issuer
    is the URL the metadata was fetched from) refuse it."""
    if (
        not settings.dev
        or environ.get("AUTHSVC_ISSUER")
        or environ.get("AUTHSVC_GATEWAY_PUBLIC_URL")
    ):
        return settings
    url = _dev_gateway_url(settings.gateway_address)
    return settings if url is None else dataclasses.replace(settings, issuer=url)


def _dev_gateway_url(address: str) -> str | None:
    """The URL the dev gateway on `address` serves at, as an issuer may name it: loopback, the
    port known (None otherwise; an http issuer must be loopback, and a mismatch is warned of at
    start)."""
    host, _, port = address.rpartition(":")
    if port == "0":
        return None  # not known before the socket is bound
    host = host.strip("[]")
    if host in {"0.0.0.0", "::", ""}:  # noqa: S104 - read, not bound
        host = "127.0.0.1"
    if host not in {"127.0.0.1", "localhost", "::1"}:
        return None
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _warn_of_another_issuer(settings: Settings, gateway: GatewayConfig) -> None:
    if settings.issuer.rstrip("/") != gateway.public_url.rstrip("/"):
        log.warning(
            "the issuer is not the gateway's public URL: clients that check RFC 8414 §3.3 "
            "refuse its metadata",
            extra={
                "issuer": settings.issuer,
                "public_url": gateway.public_url,
                "hint": "set AUTHSVC_ISSUER and AUTHSVC_GATEWAY_PUBLIC_URL to the same URL",
            },
        )


def gateway_config(settings: Settings, *, session_key: bytes | None = None) -> GatewayConfig:
    """The gateway's settings from the same AUTHSVC_* environment; in dev, its own client comes
    from the credentials the first `serve --dev` wrote. `session_key` is used unless
    AUTHSVC_GATEWAY_SESSION_KEY is set (`embedded_session_key`)."""
    from authsvc_gateway.config import ConfigError as GatewayConfigError
    from authsvc_gateway.config import GatewayConfig

    env = dict(os.environ)
    if not env.get("AUTHSVC_GATEWAY_CLIENT_ID"):
        own = read_dev_credentials(
            settings,
            "set AUTHSVC_GATEWAY_CLIENT_ID and AUTHSVC_GATEWAY_CLIENT_SECRET to the gateway's own "
            "client (see gateway/README.md)",
        )["gateway"]
        env["AUTHSVC_GATEWAY_CLIENT_ID"] = own["client_id"]
        env["AUTHSVC_GATEWAY_CLIENT_SECRET"] = own["client_secret"]
    if (
        settings.dev
        and not env.get("AUTHSVC_ISSUER")
        and settings.issuer == _dev_gateway_url(settings.gateway_address)
    ):
        # The issuer dev mode took from the gateway's address (`dev_issuer`): the gateway's
        # public URL is that one, whatever its listening host spells ("0.0.0.0", "[::1]").
        env.setdefault("AUTHSVC_GATEWAY_PUBLIC_URL", settings.issuer)
    env.setdefault("AUTHSVC_ISSUER", settings.issuer)
    env.setdefault("AUTHSVC_GATEWAY_ADDRESS", settings.gateway_address)
    env.setdefault("AUTHSVC_AUDIENCE", settings.audience)
    try:
        config = GatewayConfig.from_env(env)
    except GatewayConfigError as exc:
        raise ConfigError(str(exc)) from None
    if session_key is not None and not env.get("AUTHSVC_GATEWAY_SESSION_KEY"):
        config = dataclasses.replace(config, session_key=session_key, session_key_shared=True)
    return config


def embedded_session_key(settings: Settings) -> bytes:
    """The session key of the gateway that `authsvc serve` embeds: derived from the KEK, so every
    replica of a deployment signs and checks the login forms' CSRF tokens and consent tickets
    with the same key, and a restart does not break the logins in progress."""
    return derive_key(load_kek(settings), GATEWAY_SESSION)


def _gateway_socket(config: GatewayConfig) -> socket.socket:
    """The embedded gateway's listening socket, bound before anything serves: a taken address
    is a configuration error at start, not a gateway that dies after the banner."""
    from authsvc_gateway.server import listening_socket

    try:
        return listening_socket(config.host, config.port)
    except OSError as exc:
        raise ConfigError(
            f"AUTHSVC_GATEWAY_ADDRESS={config.host}:{config.port}: cannot listen there "
            f"({exc.strerror}); each replica on one machine needs its own port"
        ) from exc


async def _embedded_gateway(
    authority: Authority, config: GatewayConfig, sock: socket.socket
) -> None:
    from authsvc_gateway.in_process import InProcessBackend
    from authsvc_gateway.server import serve as serve_gateway

    # The signals are `serve`'s below: on SIGTERM health turns NOT_SERVING first, then the
    # gateway is cancelled and finishes the requests in flight.
    try:
        await serve_gateway(
            config, backend=InProcessBackend(authority), sock=sock, stop_on_signals=False
        )
    except SystemExit as exc:
        # uvicorn's way to say it could not start; raised from a task, asyncio would let it
        # end the whole event loop at once, without the graceful stop below.
        raise RuntimeError(f"the embedded gateway exited ({exc.code})") from exc


async def _drain(seconds: float, stop: asyncio.Event) -> None:
    """Go on serving for `seconds` after health turned NOT_SERVING, so that load balancers that
    poll it stop sending calls before this replica refuses them. A second signal ends it early."""
    if seconds <= 0:
        return
    log.info("draining", extra={"drain_seconds": seconds, "hint": "a second signal ends it"})
    stop.clear()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _banner(
    settings: Settings,
    grpc_port: int,
    gateway: GatewayConfig | None,
    created: dict[str, Any] | None,
) -> str:
    host = settings.grpc_address.rpartition(":")[0]
    lines = ["", f"authsvc is serving gRPC on {host}:{grpc_port}  (data: {settings.data_dir})"]
    if gateway is not None:
        lines.append(
            f"OAuth 2.1 gateway on {gateway.public_url}  (metadata: "
            f"{gateway.public_url}/.well-known/oauth-authorization-server)"
        )
    if created is not None:
        lines += [
            "First run: dev credentials created (shown once; also in "
            f"{settings.data_dir / DEV_CREDENTIALS}, mode 0600):",
            f"  admin client   {created['admin']['client_id']}  {created['admin']['client_secret']}",
            f"  demo client    {created['demo']['client_id']}  {created['demo']['client_secret']}",
        ]
    if settings.dev:  # `authsvc demo` calls as a dev client: a replica outside dev has none
        lines.append(
            "Next: in another terminal run  .venv/bin/authsvc demo  "
            "to get a token over gRPC and verify it."
        )
    else:
        lines.append(
            "Next: register the clients that call it:  .venv/bin/authsvc clients create "
            "--name NAME --audience API  (README.md, 'The command line')."
        )
    lines.append("")
    return "\n".join(lines)


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on the event loop every authsvc process uses (the benchmarks too): uvloop
    where it is installed (it is a dependency on POSIX), asyncio's own loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def scheduling_policy(settings: Settings) -> str:
    """Apply AUTHSVC_SCHED_BATCH to this process, before it starts its server's threads; the
    policy it runs under, for the start-up log."""
    if not settings.sched_batch:
        return "default"
    why_not = prefer_batch_scheduling()
    return f"default: {why_not}" if why_not else "SCHED_BATCH"


def freeze_startup_objects() -> int:
    """Exempt what start-up built from the cyclic garbage collector's full collections; how
    many objects that is.

    Modules, descriptors, compiled statements, the server's own state: about 100,000 objects
    that live as long as the process, which each full collection walked again, holding the
    event loop 26-80 ms (docs/performance.md, change 21). Start-up's garbage is collected
    first, so that none of it is kept for good.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


async def serve(settings: Settings) -> int:
    status = 0
    failure: ConfigError | None = None
    gateway_sock: socket.socket | None = None
    scheduling = scheduling_policy(settings)
    make_directory(settings.data_dir, "AUTHSVC_DATA_DIR")
    authority = await open_authority(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        created = await bootstrap_dev(authority) if settings.dev else None
        # Before anything listens: a gateway that cannot be configured stops the start cleanly.
        gateway = (
            gateway_config(settings, session_key=embedded_session_key(settings))
            if settings.gateway_embedded
            else None
        )
        if gateway is not None:
            _warn_of_another_issuer(settings, gateway)
            gateway_sock = _gateway_socket(gateway)
        running = await start_server(authority)
        try:
            metrics_port = (
                running.metrics.serve(settings.metrics_address)
                if settings.metrics_address
                else None
            )
        except OSError as exc:
            await stop_server(running, 0)
            raise ConfigError(
                f"AUTHSVC_METRICS_ADDRESS={settings.metrics_address}: cannot listen there "
                f"({exc.strerror}); each replica on one machine needs its own port (port 0 picks "
                "a free one)"
            ) from exc
        authority.start_background()
        log.info(
            "serving",
            extra={
                "grpc_port": running.port,
                "metrics_port": metrics_port,
                "dev": settings.dev,
                "scheduling": scheduling,
                "gc_frozen_objects": freeze_startup_objects(),
            },
        )
        gateway_task = (
            asyncio.create_task(_embedded_gateway(authority, gateway, gateway_sock), name="gateway")
            if gateway is not None and gateway_sock is not None
            else None
        )
        if gateway_task is not None:
            gateway_task.add_done_callback(lambda _: stop.set())  # a dead gateway stops us
        print(_banner(settings, running.port, gateway, created), flush=True)
        await stop.wait()
        await authority.health.begin_shutdown()  # gRPC health and /readyz: NOT_SERVING first
        await _drain(settings.shutdown_drain, stop)
        if gateway_task is not None:
            from authsvc_gateway.config import ConfigError as GatewayConfigError

            died = gateway_task.done()
            gateway_task.cancel()  # uvicorn finishes requests in flight first
            try:
                await gateway_task
            except asyncio.CancelledError:
                pass
            except GatewayConfigError as exc:  # found at its start: a refused client, say
                failure = ConfigError(str(exc))
            except Exception as exc:
                log.error("the embedded gateway stopped: %r", exc, exc_info=exc)
            if died:
                status = 1  # it stopped on its own, not on a signal: say so to the supervisor
        log.info("shutting down", extra={"grace_seconds": settings.shutdown_grace})
        # WatchRevocations streams never finish on their own: ended cleanly at once, their
        # verifiers resume on another replica, and only unary calls in flight use the grace.
        await stop_server(running, settings.shutdown_grace, end_streams=authority.end_subscriptions)
    finally:
        if gateway_sock is not None:
            gateway_sock.close()
        await authority.close()
    log.info("stopped")
    if failure is not None:
        raise failure  # after the graceful stop: the CLI prints it and exits 2
    return status
