"""`authsvc serve`: the long-running process.

Start-up: migrate an empty database, load keys, bootstrap dev credentials on the first dev run,
start gRPC (and, in dev, the HTTP gateway in the same process), then wait for SIGTERM or SIGINT.
Shutdown: health NOT_SERVING, refuse new calls, let calls in flight finish within
AUTHSVC_SHUTDOWN_GRACE seconds, stop background work, close the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from typing import Any

from authsvc.authority import Authority, open_authority
from authsvc.client_registry import ADMIN_SCOPES
from authsvc.config import Settings
from authsvc.rpc.server import start_server, stop_server

log = logging.getLogger(__name__)

DEV_CREDENTIALS = "dev-credentials.json"
GATEWAY_SCOPES = ("authsvc:gateway", "authsvc:introspect", "authsvc:revoke")
DEMO_REDIRECT_URI = "http://127.0.0.1:8765/callback"


async def bootstrap_dev(authority: Authority) -> dict[str, Any] | None:
    """On the first dev run (no clients yet): an admin client, the gateway's client, a demo
    service client and a demo public web client. Saved 0600 in the data directory, printed once."""
    if await authority.list_clients():
        return None
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
    path = authority.settings.data_dir / DEV_CREDENTIALS
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(credentials, handle, indent=2)
    return credentials


def _banner(settings: Settings, grpc_port: int, created: dict[str, Any] | None) -> str:
    lines = [
        "",
        f"authsvc is serving gRPC on 127.0.0.1:{grpc_port}  (data: {settings.data_dir})",
    ]
    if created is not None:
        lines += [
            "First run: dev credentials created (shown once; also in "
            f"{settings.data_dir / DEV_CREDENTIALS}, mode 0600):",
            f"  admin client   {created['admin']['client_id']}  {created['admin']['client_secret']}",
            f"  demo client    {created['demo']['client_id']}  {created['demo']['client_secret']}",
        ]
    lines += [
        "Next: in another terminal run  .venv/bin/authsvc demo  "
        "to get a token over gRPC and verify it.",
        "",
    ]
    return "\n".join(lines)


async def serve(settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    authority = await open_authority(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        created = await bootstrap_dev(authority) if settings.dev else None
        running = await start_server(authority)
        metrics_port = (
            running.metrics.serve(settings.metrics_address) if settings.metrics_address else None
        )
        authority.start_background()
        log.info(
            "serving",
            extra={"grpc_port": running.port, "metrics_port": metrics_port, "dev": settings.dev},
        )
        print(_banner(settings, running.port, created), flush=True)
        await stop.wait()
        log.info("shutting down", extra={"grace_seconds": settings.shutdown_grace})
        await stop_server(running, settings.shutdown_grace)
    finally:
        await authority.close()
    log.info("stopped")
    return 0
