"""A real authsvc for tests and benchmarks: SQLite in a temporary folder, gRPC on port 0.

async with start_authority(tmp_path) as running:
    channel = grpc.aio.insecure_channel(running.address)
    ...
    running.clock.advance(601)      # move time instead of sleeping
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authsvc.authority import Authority, open_authority
from authsvc.client_registry import ADMIN_SCOPES, RegisteredClient
from authsvc.clock import ManualClock
from authsvc.config import Settings
from authsvc.keys.sealing import new_kek_text
from authsvc.passwords import Argon2Parameters
from authsvc.rpc.server import RunningServer, start_server, stop_server


@dataclass
class RunningAuthority:
    """A started authority with its server, clock and a bootstrap admin client."""

    authority: Authority
    server: RunningServer
    clock: ManualClock
    admin: RegisteredClient

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def settings(self) -> Settings:
        return self.authority.settings

    async def create_client(
        self,
        name: str = "test-client",
        *,
        grant_types: Sequence[str] = ("client_credentials",),
        scopes: Sequence[str] = (),
        audiences: Sequence[str] = ("api",),
        redirect_uris: Sequence[str] = (),
        public: bool = False,
        first_party: bool = False,
    ) -> RegisteredClient:
        return await self.authority.create_client(
            name,
            grant_types=grant_types,
            scopes=scopes,
            audiences=audiences,
            redirect_uris=redirect_uris,
            public=public,
            first_party=first_party,
        )

    async def create_user(self, username: str, password: str) -> str:
        return await self.authority.create_user(username, password)

    async def access_token(
        self,
        client: RegisteredClient,
        scope: Sequence[str] = (),
        audience: Sequence[str] = (),
    ) -> str:
        issued = await self.authority.client_credentials(
            client_id=client.client_id,
            client_secret=client.client_secret,
            scope=scope,
            audience=audience,
        )
        return issued.token

    async def admin_token(self) -> str:
        return await self.access_token(self.admin, audience=[self.settings.audience])


def throwaway_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a throwaway authority in `data_dir`."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "kek": new_kek_text(),
        "grpc_address": "127.0.0.1:0",
        "gateway_address": "127.0.0.1:0",
        "metrics_address": "",
        "shutdown_grace": 1.0,
        "heartbeat_interval": 1.0,
    }
    values.update(overrides)
    return Settings(**values)


# Argon2 at the OWASP floor costs ~20 ms a hash; tests keep that floor, not less.
TEST_PASSWORDS = Argon2Parameters()


@asynccontextmanager
async def start_authority(
    data_dir: Path, *, clock: ManualClock | None = None, **overrides: Any
) -> AsyncIterator[RunningAuthority]:
    """An authority on port 0 with a fresh SQLite database in `data_dir`.

    The clock starts at the real time (so external verifiers agree) and moves only when told.
    """
    settings = throwaway_settings(data_dir, **overrides)
    clock = clock or ManualClock(time.time())
    authority = await open_authority(settings, clock, password_parameters=TEST_PASSWORDS)
    try:
        admin = await authority.create_client(
            "admin",
            grant_types=["client_credentials"],
            scopes=ADMIN_SCOPES,
            audiences=[settings.audience],
        )
        server = await start_server(authority)
        try:
            yield RunningAuthority(authority, server, clock, admin)
        finally:
            await stop_server(server, grace=0)
    finally:
        await authority.close()
