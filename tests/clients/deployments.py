"""A deployment for end-to-end tests: a real authsvc on port 0, the notes example protected by
it, and the clients registered for a test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import notes_pb2
import notes_pb2_grpc
from authsvc_client import AsyncAuthClient, ServiceCredentials
from protected_service import serve

from authsvc.client_registry import RegisteredClient
from authsvc.testing import RunningAuthority, start_authority

# Fast heartbeats: the interceptor counts the stream live from its first message.
AUTHORITY_SETTINGS = {"heartbeat_interval": 0.2}
OK = grpc.StatusCode.OK
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
NOTES_SCOPES = ("notes:read", "notes:write")


@dataclass
class Deployment:
    """authsvc, the notes service protected by it, and the clients registered for the test."""

    authority: RunningAuthority
    notes: notes_pb2_grpc.NotesStub
    notes_address: str
    interceptor: Any
    caller: RegisteredClient  # a service calling notes with client-credentials tokens
    web: RegisteredClient  # a user-facing app holding user token pairs
    admin: AsyncAuthClient

    async def caller_token(self, scope: tuple[str, ...] = NOTES_SCOPES) -> str:
        return await self.authority.access_token(self.caller, scope=scope, audience=["notes"])

    async def user_pair(self, subject: str = "alice", device: str = "phone") -> Any:
        return await self.admin.issue_token_pair(
            subject, self.web.client_id, audience=["notes"], device_id=device
        )

    async def status(self, token: str | None, method: str = "WhoAmI", request: Any = None) -> Any:
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        request = request or getattr(notes_pb2, f"{method}Request")()
        try:
            await getattr(self.notes, method)(request, metadata=metadata, timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return OK


@asynccontextmanager
async def deployment(
    tmp_path: Path, *, settings: dict[str, Any] | None = None, **protection: Any
) -> AsyncIterator[Deployment]:
    """authsvc with `settings` over AUTHORITY_SETTINGS, and the notes service protected by the
    interceptor with `protection`."""
    async with start_authority(tmp_path, **{**AUTHORITY_SETTINGS, **(settings or {})}) as running:
        notes_service = await running.create_client("notes", audiences=["authsvc"])
        caller = await running.create_client("reports", scopes=NOTES_SCOPES, audiences=["notes"])
        web = await running.create_client(
            "web",
            grant_types=["authorization_code", "refresh_token"],
            scopes=NOTES_SCOPES,
            audiences=["notes"],
            redirect_uris=["https://web.test/callback"],
            first_party=True,
        )
        stream_credentials = ServiceCredentials(
            running.address,
            client_id=notes_service.client_id,
            client_secret=notes_service.client_secret,
            audience=["authsvc"],
            clock=running.clock,
        )
        admin_credentials = ServiceCredentials(
            running.address,
            client_id=running.admin.client_id,
            client_secret=running.admin.client_secret,
            audience=[running.settings.audience],
            clock=running.clock,
        )
        server, port, interceptor = await serve(
            running.address,
            running.settings.issuer,
            stream_credentials,
            clock=running.clock,
            **protection,
        )
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        admin = AsyncAuthClient.connect(running.address, credentials=admin_credentials)
        try:
            yield Deployment(
                authority=running,
                notes=notes_pb2_grpc.NotesStub(channel),
                notes_address=f"127.0.0.1:{port}",
                interceptor=interceptor,
                caller=caller,
                web=web,
                admin=admin,
            )
        finally:
            await admin.close()
            await channel.close()
            await server.stop(None)
            await interceptor.close()
            stream_credentials.close()
            admin_credentials.close()


async def rejected_within(deployed: Deployment, token: str, seconds: float = 2.0) -> float:
    """Call notes with `token` until it is refused; the seconds that took (bounded)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while await deployed.status(token) == OK:
        if loop.time() - started > seconds:
            raise AssertionError(f"token still accepted after {seconds}s")
    return loop.time() - started
