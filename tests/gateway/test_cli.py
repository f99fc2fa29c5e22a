"""A standalone gateway that cannot start, from either entry point: one line that says what to
change, the exit status README gives (2 for the configuration, 1 for an authsvc that is
unavailable), and no traceback."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest
from authsvc_gateway.config import GATEWAY_SCOPES, ConfigError, GatewayConfig
from authsvc_gateway.errors import InvalidClient, InvalidScope, ServerError, TemporarilyUnavailable
from authsvc_gateway.server import UpstreamUnavailable, confirm_issuer

from authsvc.testing import RunningAuthority, start_authority
from authsvc.tokens import opaque

AUTHSVC = Path(sys.executable).with_name("authsvc")
BOUND = 30.0  # seconds for a gateway process to give up
ENTRY_POINTS = [
    pytest.param([sys.executable, "-m", "authsvc_gateway"], id="python-m-authsvc_gateway"),
    pytest.param([str(AUTHSVC), "gateway"], id="authsvc-gateway"),
]


def _closed_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


async def _start(command: list[str], data_dir: Path, **env: str) -> tuple[int, list[str]]:
    """Run the gateway until it exits; its status and the stderr lines that are not JSON logs."""
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "AUTHSVC_DATA_DIR": str(data_dir),
        "AUTHSVC_GATEWAY_ADDRESS": "127.0.0.1:0",
        **env,
    }
    process = await asyncio.create_subprocess_exec(
        *command, env=environment, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), BOUND)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    text = stderr.decode()
    assert "Traceback" not in text, text[-3000:]
    return process.returncode, [line for line in text.splitlines() if not line.startswith("{")]


async def _own_client(running: RunningAuthority) -> tuple[str, str]:
    own = await running.create_client(
        "gateway", scopes=GATEWAY_SCOPES, audiences=[running.settings.audience]
    )
    assert own.client_secret is not None
    return own.client_id, own.client_secret


@pytest.mark.parametrize("command", ENTRY_POINTS)
async def test_an_authsvc_that_does_not_answer_is_named_by_its_address(
    tmp_path: Path, command: list[str]
) -> None:
    upstream = _closed_address()
    status, lines = await _start(
        command,
        tmp_path,
        AUTHSVC_GATEWAY_UPSTREAM=upstream,
        AUTHSVC_GATEWAY_CLIENT_ID="gateway",
        AUTHSVC_GATEWAY_CLIENT_SECRET=opaque.new_secret(opaque.Kind.CLIENT_SECRET),
    )
    assert status == 1
    [line] = lines
    assert f"authsvc at AUTHSVC_GATEWAY_UPSTREAM={upstream} is unavailable" in line
    assert "start it first" in line


@pytest.mark.parametrize("command", ENTRY_POINTS)
async def test_a_refused_gateway_client_is_a_configuration_error(
    tmp_path: Path, command: list[str]
) -> None:
    wrong = opaque.new_secret(opaque.Kind.CLIENT_SECRET)
    async with start_authority(tmp_path / "authsvc") as running:
        client_id, _ = await _own_client(running)
        status, lines = await _start(
            command,
            tmp_path / "gateway",
            AUTHSVC_ISSUER=running.settings.issuer,
            AUTHSVC_GATEWAY_UPSTREAM=running.address,
            AUTHSVC_GATEWAY_CLIENT_ID=client_id,
            AUTHSVC_GATEWAY_CLIENT_SECRET=wrong,
        )
    assert status == 2
    [line] = lines
    assert f"refused the gateway's own client AUTHSVC_GATEWAY_CLIENT_ID={client_id}" in line
    assert "invalid_client" in line
    assert wrong not in line


async def test_authsvc_gateway_explains_another_issuer(tmp_path: Path) -> None:
    async with start_authority(tmp_path / "authsvc") as running:
        client_id, secret = await _own_client(running)
        status, lines = await _start(
            [str(AUTHSVC), "gateway"],
            tmp_path / "gateway",
            AUTHSVC_ISSUER="https://elsewhere.example",
            AUTHSVC_GATEWAY_UPSTREAM=running.address,
            AUTHSVC_GATEWAY_CLIENT_ID=client_id,
            AUTHSVC_GATEWAY_CLIENT_SECRET=secret,
        )
    assert status == 2
    [line] = lines
    assert line.startswith("authsvc: configuration error: AUTHSVC_ISSUER is")
    assert secret not in line


class _FirstCallFails:
    """A backend whose first call, the gateway's own token, fails with `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def client_credentials(self, request: object) -> object:
        raise self.error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (InvalidClient("client authentication failed"), ConfigError),
        (InvalidScope("scope not allowed for this client"), ConfigError),
        (ServerError("authsvc could not answer"), UpstreamUnavailable),
        (TemporarilyUnavailable("retry later"), UpstreamUnavailable),
    ],
)
async def test_only_a_refused_client_at_start_is_a_configuration_error(
    error: Exception, expected: type[Exception]
) -> None:
    # A configuration error exits 2 and a supervisor leaves it down; authsvc failing once at
    # the gateway's start exits 1, to be started again.
    config = GatewayConfig(client_id="gateway", client_secret="s")
    with pytest.raises(expected):
        await confirm_issuer(_FirstCallFails(error), config)  # type: ignore[arg-type]
