"""Real `authsvc serve` processes sharing one database, driven the way an operator would.

    fleet = Fleet(tmp_path, database_url)
    await fleet.cli("migrate")
    a, b = await fleet.start("a"), await fleet.start("b")
    admin = await fleet.create_admin()              # `authsvc clients create --admin` (CLI)
    tokens = a.tokens                               # TokenServiceStub on a's port
    ...
    a.kill()                                        # SIGKILL
    await fleet.stop_all()                          # SIGTERM and wait

Every replica gets the same KEK, its own data directory, log file and port (port 0: it says which
in its banner). Waits are bounded polls; a replica that exits early fails the test with its log.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_client.v1 import authsvc_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authsvc.keys.sealing import new_kek_text

AUTHSVC = Path(sys.executable).with_name("authsvc")
BANNER = re.compile(r"serving gRPC on (127\.0\.0\.1:\d+)")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


@dataclass(frozen=True)
class Admin:
    client_id: str
    client_secret: str = field(repr=False)


@dataclass
class Replica:
    """One `authsvc serve` process and a channel to it."""

    name: str
    process: asyncio.subprocess.Process
    log: Path
    address: str = ""
    channel: grpc.aio.Channel | None = None

    @property
    def tokens(self) -> authsvc_pb2_grpc.TokenServiceStub:
        assert self.channel is not None
        return authsvc_pb2_grpc.TokenServiceStub(self.channel)

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, connections dropped by the kernel."""
        self.process.send_signal(signal.SIGKILL)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Fleet:
    """Starts and stops replicas of one deployment (one database, one KEK)."""

    def __init__(self, root: Path, database_url: str, **settings: str) -> None:
        self.root = root
        self.database_url = database_url
        self.kek = new_kek_text()
        self.settings = settings
        self.replicas: list[Replica] = []
        self._admin_token: tuple[float, str] | None = None
        self.admin: Admin | None = None

    def environment(self, name: str) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("AUTHSVC_")}
        data_dir = self.root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        env.update(
            AUTHSVC_DATABASE_URL=self.database_url,
            AUTHSVC_KEK=self.kek,
            AUTHSVC_DATA_DIR=str(data_dir),
            AUTHSVC_GRPC_ADDRESS="127.0.0.1:0",
            AUTHSVC_METRICS_ADDRESS="127.0.0.1:0",
            AUTHSVC_SHUTDOWN_GRACE="2",
            AUTHSVC_DB_POOL_SIZE="5",
            AUTHSVC_LOG_LEVEL="INFO",
        )
        env.update({f"AUTHSVC_{key.upper()}": value for key, value in self.settings.items()})
        return env

    async def cli(self, *args: str) -> Any:
        """Run `authsvc --json <args>` against the fleet's database; its parsed JSON output."""
        process = await asyncio.create_subprocess_exec(
            str(AUTHSVC),
            "--json",
            *args,
            env=self.environment("cli"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await _finish(process)
        if process.returncode != 0:
            raise AssertionError(f"authsvc {' '.join(args)} failed: {err.decode()}")
        return json.loads(out)

    async def create_admin(self) -> Admin:
        created = await self.cli("clients", "create", "--name", "fleet-admin", "--admin")
        self.admin = Admin(created["client_id"], created["client_secret"])
        return self.admin

    async def serve_expecting_exit(self, name: str, **overrides: str) -> tuple[int, str]:
        """Run `authsvc serve` that should refuse to start; its exit status and last stderr line."""
        env = self.environment(name)
        env.update({f"AUTHSVC_{key.upper()}": value for key, value in overrides.items()})
        process = await asyncio.create_subprocess_exec(
            str(AUTHSVC),
            "serve",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await _finish(process)
        assert process.returncode is not None
        lines = err.decode(errors="replace").strip().splitlines()
        return process.returncode, lines[-1] if lines else ""

    async def start(self, name: str) -> Replica:
        """Start `authsvc serve` and wait until it answers health checks with SERVING."""
        log = self.root / f"{name}.log"
        with log.open("wb") as sink:
            process = await asyncio.create_subprocess_exec(
                str(AUTHSVC),
                "serve",
                env=self.environment(name),
                stdout=sink,
                stderr=asyncio.subprocess.STDOUT,
            )
        replica = Replica(name, process, log)
        self.replicas.append(replica)
        deadline = time.monotonic() + START_TIMEOUT
        while not (match := BANNER.search(replica.log_text())):
            if not replica.running or time.monotonic() > deadline:
                raise AssertionError(f"replica {name} did not start:\n{replica.log_text()}")
            await asyncio.sleep(0.05)
        replica.address = match.group(1)
        replica.channel = grpc.aio.insecure_channel(replica.address)
        await wait_serving(replica, deadline)
        return replica

    async def stop(self, replica: Replica) -> int | None:
        """SIGTERM and wait; the exit status."""
        if replica.running:
            replica.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(replica.process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            replica.kill()
            await replica.process.wait()
        if replica.channel is not None:
            await replica.channel.close()
        return replica.process.returncode

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(replica) for replica in self.replicas))

    async def admin_token(self, replica: Replica, *, fresh: bool = False) -> str:
        """A client-credentials token for the admin client, minted by `replica` (cached unless
        `fresh`)."""
        assert self.admin is not None
        if fresh or self._admin_token is None or self._admin_token[0] < time.monotonic():
            issued = await replica.tokens.ClientCredentials(
                pb.ClientCredentialsRequest(
                    client_id=self.admin.client_id,
                    client_secret=self.admin.client_secret,
                    audience=["authsvc"],
                ),
                timeout=10,
            )
            self._admin_token = (time.monotonic() + issued.expires_in / 2, issued.access_token)
        return self._admin_token[1]

    async def admin_metadata(self, replica: Replica) -> tuple[tuple[str, str], ...]:
        """Bearer metadata for the admin client."""
        return (("authorization", f"Bearer {await self.admin_token(replica)}"),)


async def _finish(process: asyncio.subprocess.Process) -> tuple[bytes, bytes]:
    """The output of a command expected to exit; killed (and the test failed) if it does not."""
    try:
        return await asyncio.wait_for(process.communicate(), START_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"authsvc did not exit within {START_TIMEOUT}s") from None


async def wait_serving(replica: Replica, deadline: float) -> None:
    assert replica.channel is not None
    health = health_pb2_grpc.HealthStub(replica.channel)
    while True:
        try:
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        if not replica.running or time.monotonic() > deadline:
            raise AssertionError(f"replica {replica.name} never SERVING:\n{replica.log_text()}")
        await asyncio.sleep(0.05)
