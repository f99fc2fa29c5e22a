"""What the gateway logs: no line per request, whichever way it runs, and JSON lines from every
entry point.

A request line would cost a log write per request at the rates the gateway serves, and it would
carry the query string: `state`, `code_challenge` and `redirect_uri` of /oauth/authorize.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from authsvc_gateway import paths
from authsvc_gateway.config import GATEWAY_SCOPES

from authsvc.testing import RunningAuthority, start_authority
from tests.gateway.conftest import BACKENDS, deploy, pkce_pair

STATE = "state-that-must-not-be-logged"
AUTHSVC = Path(sys.executable).with_name("authsvc")
LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
BOUND = 30.0  # seconds for a gateway process to start or to stop


async def _requests(url: str) -> str:
    """A few requests, one of them with a query string; the PKCE challenge it sent."""
    _, challenge = pkce_pair()
    query = {"client_id": "nobody", "state": STATE, "code_challenge": challenge}
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.get(paths.AUTHORIZE, params=query)).status_code == 400
        assert (await http.post(paths.TOKEN, data={"grant_type": "password"})).status_code == 401
        assert (await http.get("/.well-known/oauth-authorization-server")).status_code == 200
    return challenge


def _mentions_a_request(text: str, challenge: str) -> bool:
    return any(needle in text for needle in (STATE, challenge, paths.AUTHORIZE, paths.TOKEN))


@pytest.mark.parametrize("backend", [pytest.param(name, id=name) for name in BACKENDS])
async def test_no_line_per_request_at_info(
    tmp_path: Path, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    # "grpc" is the standalone gateway, "in_process" the one embedded in `authsvc serve`: both
    # run under `authsvc_gateway.server.uvicorn_server`, as here.
    caplog.set_level(logging.INFO)
    async with deploy(tmp_path, backend=backend) as deployment:
        challenge = await _requests(deployment.url)
    served = [r for r in caplog.records if r.name != "httpx"]  # httpx: the test's own client
    assert [r for r in served if r.name == "uvicorn.access"] == []
    for record in served:
        assert not _mentions_a_request(record.getMessage(), challenge), record.getMessage()
    assert any(r.name == "uvicorn.error" for r in served)  # uvicorn's own INFO is kept


@pytest.mark.parametrize(
    "command",
    [
        pytest.param([sys.executable, "-m", "authsvc_gateway"], id="python-m-authsvc_gateway"),
        pytest.param([str(AUTHSVC), "gateway"], id="authsvc-gateway"),
    ],
)
async def test_a_gateway_process_logs_json_lines_and_no_request(
    tmp_path: Path, command: list[str]
) -> None:
    async with start_authority(tmp_path / "authsvc") as running:
        await _run_and_read_logs(running, tmp_path / "gateway", command)


async def _run_and_read_logs(running: RunningAuthority, data_dir: Path, command: list[str]) -> None:
    own = await running.create_client(
        "gateway", scopes=GATEWAY_SCOPES, audiences=[running.settings.audience]
    )
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "AUTHSVC_DATA_DIR": str(data_dir),
        "AUTHSVC_LOG_LEVEL": "INFO",
        "AUTHSVC_ISSUER": running.settings.issuer,
        "AUTHSVC_GATEWAY_ADDRESS": "127.0.0.1:0",
        "AUTHSVC_GATEWAY_UPSTREAM": running.address,
        "AUTHSVC_GATEWAY_CLIENT_ID": own.client_id,
        "AUTHSVC_GATEWAY_CLIENT_SECRET": own.client_secret,
    }
    gateway = await asyncio.create_subprocess_exec(
        *command, env=environment, stderr=asyncio.subprocess.PIPE
    )
    assert gateway.stderr is not None
    lines: list[str] = []
    try:
        port = await asyncio.wait_for(_listening_port(gateway.stderr, lines), BOUND)
        challenge = await _requests(f"http://127.0.0.1:{port}")
        gateway.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(gateway.stderr.read(), BOUND)
        # A graceful stop is a clean exit (uvicorn on its own would die of the signal again).
        assert await asyncio.wait_for(gateway.wait(), BOUND) == 0
    finally:
        if gateway.returncode is None:
            gateway.kill()
            await gateway.wait()
    lines += rest.decode().splitlines()
    entries = [json.loads(line) for line in lines]  # each line one JSON object
    assert [e for e in entries if e["logger"] == "uvicorn.access"] == []
    # Started without AUTHSVC_GATEWAY_SESSION_KEY, a standalone gateway says what that breaks.
    [warning] = [e for e in entries if "SESSION_KEY is not set" in e["message"]]
    assert warning["level"] == "warning"
    assert "`authsvc kek` prints a fresh one" in warning["hint"]
    for line in lines:
        assert not _mentions_a_request(line, challenge), line


async def _listening_port(stderr: asyncio.StreamReader, lines: list[str]) -> int:
    """Read log lines (kept in `lines`) until uvicorn says where it listens; that port."""
    while True:
        line = (await stderr.readline()).decode()
        assert line, "the gateway exited before listening:\n" + "".join(lines)
        lines.append(line.rstrip("\n"))
        found = LISTENING.search(line)
        if found:
            return int(found.group(1))


@pytest.mark.parametrize("entry", ["authsvc_gateway.__main__", "authsvc.cli"])
def test_grpcs_native_logs_are_off_before_either_program_imports_grpc(entry: str) -> None:
    """grpc reads GRPC_VERBOSITY once, when it is imported: `python -m authsvc_gateway` imported
    it before anything set the variable, and its native lines went on breaking the JSON logs."""
    probe = textwrap.dedent(
        f"""
        import builtins, os
        real, seen = builtins.__import__, []
        def hook(name, *args, **kwargs):
            if name == "grpc" and not seen:
                seen.append(os.environ.get("GRPC_VERBOSITY"))
            return real(name, *args, **kwargs)
        builtins.__import__ = hook
        import {entry}
        print(seen[0])
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "NONE", done.stderr[-2000:]
