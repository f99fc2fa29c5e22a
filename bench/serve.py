"""The servers a measurement starts, each in its own process: `python -m bench.serve KIND ... READY`.

    authsvc    the real service (`authsvc.rpc.server.start_server` over `open_authority`, system
               clock, SQLite in --data-dir or --database-url), with bench clients registered and
               tokens minted; optionally one verified token for each of N stored families first
    empty      authsvc's server setup (options, services registered the same way, health,
               reflection) with empty handlers and no interceptor: the baseline of the Verify row
    protected  a small service with empty handlers behind `authsvc_client.AsyncAuthInterceptor`
               (or without it, `--no-interceptor`): the interceptor row

Each writes its facts (port, pid, credentials, RSS) to READY as JSON once it serves, and stops on
SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from authsvc_client.v1 import authsvc_pb2 as pb

from bench.machine import rss_bytes
from bench.processes import write_ready

TOKEN_SERVICE = "authsvc.v1.TokenService"
APP_AUDIENCE = "bench-api"
APP_SCOPES = ("api:read", "api:write")


async def _until_terminated() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def _rss() -> int:
    gc.collect()
    return rss_bytes(os.getpid())


# authsvc


async def _durability(authority: Any) -> dict[str, Any]:
    """What the server's own connections say about durability (SQLite pragmas, PG settings)."""
    from sqlalchemy import text

    engine = authority.ctx.store.engine
    async with engine.connect() as conn:
        if engine.url.get_backend_name() == "sqlite":
            journal = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
            synchronous = (await conn.execute(text("PRAGMA synchronous"))).scalar_one()
            names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
            return {"journal_mode": journal, "synchronous": names.get(synchronous, synchronous)}
        fsync = (await conn.execute(text("SHOW fsync"))).scalar_one()
        commit = (await conn.execute(text("SHOW synchronous_commit"))).scalar_one()
        return {"fsync": fsync, "synchronous_commit": commit}


def _warm(authority: Any, families: int) -> dict[str, int]:
    """One verified access token per stored family (`bench.dataset` loaded them): the state a
    service holds while those sessions are live. RSS before and after."""
    from authsvc.issuance import mint_access_token
    from bench.dataset import BULK_CLIENT, family_id

    before = _rss()
    for i in range(families):
        issued = mint_access_token(
            authority.ctx,
            subject=f"user-{i}",
            client_id=BULK_CLIENT,
            scope=("api:read",),
            audience=(APP_AUDIENCE,),
            family_id=family_id(i),
        )
        authority.verify(issued.token, audience=APP_AUDIENCE)
    return {"rss_before_warm": before, "rss_after_warm": _rss(), "warm_families": families}


async def serve_authsvc(args: argparse.Namespace) -> None:
    from authsvc.authority import open_authority
    from authsvc.client_registry import ADMIN_SCOPES
    from authsvc.clock import SystemClock
    from authsvc.rpc.server import start_server, stop_server
    from authsvc.testing import throwaway_settings

    overrides: dict[str, Any] = {}
    if args.database_url:
        overrides["database_url"] = args.database_url
    settings = throwaway_settings(Path(args.data_dir), **overrides)
    authority = await open_authority(settings, SystemClock())
    try:
        caller = await authority.create_client(
            "bench-caller",
            grant_types=["client_credentials"],
            scopes=ADMIN_SCOPES,
            audiences=[settings.audience],
        )
        app = await authority.create_client(
            "bench-app",
            grant_types=["client_credentials", "refresh_token"],
            scopes=APP_SCOPES,
            audiences=[APP_AUDIENCE],
        )
        caller_token = await authority.client_credentials(
            client_id=caller.client_id,
            client_secret=caller.client_secret,
            audience=[settings.audience],
        )
        app_token = await authority.client_credentials(
            client_id=app.client_id,
            client_secret=app.client_secret,
            scope=APP_SCOPES,
            audience=[APP_AUDIENCE],
        )
        facts: dict[str, Any] = {
            "pid": os.getpid(),
            "issuer": settings.issuer,
            "audience": settings.audience,
            "caller_id": caller.client_id,
            "caller_secret": caller.client_secret,
            "caller_token": caller_token.token,
            "app_id": app.client_id,
            "app_secret": app.client_secret,
            "app_token": app_token.token,
            "app_audience": APP_AUDIENCE,
            "durability": await _durability(authority),
            "rss_idle": _rss(),
        }
        facts["refresh_seeds"] = [
            pair.refresh_token
            for pair in [
                await authority.issue_token_pair(
                    subject=f"seed-{i}", client_id=app.client_id, audience=[APP_AUDIENCE]
                )
                for i in range(args.refresh_seeds)
            ]
        ]
        if args.warm_families:
            facts.update(_warm(authority, args.warm_families))
        running = await start_server(authority)
        authority.start_background()
        facts["port"] = running.port
        gateway = (
            asyncio.create_task(_embedded_gateway(authority, caller, args.gateway_port))
            if args.gateway_port
            else None
        )
        if gateway is not None:
            facts["gateway_port"] = args.gateway_port
        facts["rss_serving"] = _rss()
        facts["scheduling"] = args.scheduling
        write_ready(args.ready, facts)
        await _until_terminated()
        if gateway is not None:
            gateway.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gateway
        await stop_server(running, grace=1.0)
    finally:
        await authority.close()


async def _embedded_gateway(authority: Any, caller: Any, port: int) -> None:
    """The HTTP gateway in this process over the in-process backend, as `authsvc serve` embeds
    it (`AUTHSVC_GATEWAY_EMBEDDED`, the default of `make run`)."""
    from authsvc_gateway.config import GatewayConfig
    from authsvc_gateway.in_process import InProcessBackend
    from authsvc_gateway.server import serve as serve_gateway

    settings = authority.settings
    config = GatewayConfig(
        client_id=caller.client_id,
        client_secret=caller.client_secret,
        issuer=settings.issuer,
        audience=settings.audience,
        port=port,
        public_url=f"http://127.0.0.1:{port}",
    )
    await serve_gateway(config, backend=InProcessBackend(authority))


# empty and protected services


def _empty_servicer(base: type, service_name: str) -> Any:
    """An instance of `base` (a generated servicer class) whose unary methods answer an empty
    response of their type at once, doing nothing else."""
    service = pb.DESCRIPTOR.services_by_name[service_name]
    methods: dict[str, Any] = {}
    for method in service.methods:
        if method.server_streaming:
            continue  # WatchRevocations keeps the generated UNIMPLEMENTED answer

        def make(answer: Any) -> Callable[[Any, Any, Any], Awaitable[Any]]:
            async def handle(_self: Any, _request: Any, _context: Any) -> Any:
                return answer

            return handle

        methods[method.name] = make(getattr(pb, method.output_type.name)())
    return type(f"Empty{service_name}", (base,), methods)()


async def _serve_empty_services(
    args: argparse.Namespace, interceptors: list[Any], extra: dict[str, Any]
) -> None:
    """authsvc's own server setup (options, the two services registered the same way, health,
    reflection), with empty handlers and the given interceptors instead of authsvc's."""
    from authsvc_client.v1 import authsvc_pb2_grpc as pb_grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    from authsvc.rpc.server import SERVER_OPTIONS, SERVICE_NAMES

    server = grpc.aio.server(interceptors=interceptors, options=SERVER_OPTIONS)
    pb_grpc.add_TokenServiceServicer_to_server(
        _empty_servicer(pb_grpc.TokenServiceServicer, "TokenService"), server
    )
    pb_grpc.add_AuthorizationServiceServicer_to_server(
        _empty_servicer(pb_grpc.AuthorizationServiceServicer, "AuthorizationService"), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    write_ready(args.ready, {"pid": os.getpid(), "port": port, "rss_serving": _rss(), **extra})
    await _until_terminated()
    await server.stop(1.0)


async def serve_empty(args: argparse.Namespace) -> None:
    await _serve_empty_services(args, [], {"scheduling": args.scheduling})


async def serve_protected(args: argparse.Namespace) -> None:
    if args.no_interceptor:
        await _serve_empty_services(args, [], {"interceptor": False})
        return
    from authsvc_client import AsyncAuthInterceptor, ServiceCredentials

    credentials = ServiceCredentials(
        args.authority,
        client_id=args.client_id,
        client_secret=args.client_secret,
        audience=[args.authority_audience],
    )
    interceptor = AsyncAuthInterceptor(
        args.authority,
        issuer=args.issuer,
        audience=APP_AUDIENCE,
        credentials=credentials,
        required_scopes={f"/{TOKEN_SERVICE}/*": ["api:read"]},
        public_methods=[],
    )
    async with interceptor:
        # start() waits at most its ready_timeout (5 s) for the replay of the revocations in
        # force to end; 100,000 of them may take longer on a slow machine.
        deadline = asyncio.get_running_loop().time() + 60
        while len(interceptor.verifier.revocations) < args.expect_revocations:
            if asyncio.get_running_loop().time() > deadline:
                raise SystemExit("the revocation replay did not arrive within 60 s")
            await asyncio.sleep(0.05)
        facts = {
            "interceptor": True,
            "revoked_entries": len(interceptor.verifier.revocations),
            "rss_feed_ready": _rss(),
        }
        await _serve_empty_services(args, [interceptor], facts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    kinds = parser.add_subparsers(dest="kind", required=True)
    auth = kinds.add_parser("authsvc")
    auth.add_argument("--data-dir", required=True)
    auth.add_argument("--database-url", default="")
    auth.add_argument(
        "--warm-families", type=int, default=0, help="verify a token of each stored family first"
    )
    auth.add_argument("--refresh-seeds", type=int, default=0, help="refresh tokens to start from")
    auth.add_argument(
        "--gateway-port", type=int, default=0, help="also serve the embedded HTTP gateway here"
    )
    kinds.add_parser("empty")
    protected = kinds.add_parser("protected")
    protected.add_argument("--no-interceptor", action="store_true")
    protected.add_argument("--authority", default="")
    protected.add_argument("--issuer", default="")
    protected.add_argument("--authority-audience", default="authsvc")
    protected.add_argument("--client-id", default="")
    protected.add_argument("--client-secret", default="")
    protected.add_argument("--expect-revocations", type=int, default=0)
    for sub in (auth, kinds.choices["empty"], protected):
        sub.add_argument("ready", help="where to write the ready JSON")
    args = parser.parse_args(argv)
    serve = {"authsvc": serve_authsvc, "empty": serve_empty, "protected": serve_protected}
    from authsvc.config import Settings
    from authsvc.serve import run_event_loop, scheduling_policy

    # authsvc, and the empty baseline that shares its server setup, run under the scheduling
    # policy `authsvc serve` would apply in the same environment (AUTHSVC_SCHED_BATCH, off unless
    # set); the protected service stands in for another team's program and keeps the default.
    args.scheduling = (
        scheduling_policy(Settings.from_env()) if args.kind in ("authsvc", "empty") else "default"
    )
    run_event_loop(serve[args.kind](args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
