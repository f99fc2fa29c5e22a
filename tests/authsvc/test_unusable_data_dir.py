"""A start that cannot work (a data directory `authsvc serve` cannot use, a taken port) stops
with exit 2 and says which and why, in JSON lines, without a traceback and without "retry later"
(a restart loop would hide the cause); and `make run` recovers from a lost dev credentials file.
Real `authsvc` processes, no stdin."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from authsvc.authority import open_authority
from authsvc.keys.sealing import new_kek_text
from authsvc.serve import DEV_CREDENTIALS, bootstrap_dev
from authsvc.testing import throwaway_settings
from tests.authsvc.processes import BOUND, free_port, run_to_end, start_authsvc


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    env.update(
        AUTHSVC_DATA_DIR=str(data_dir),
        AUTHSVC_GRPC_ADDRESS=f"127.0.0.1:{free_port()}",
        AUTHSVC_GATEWAY_ADDRESS=f"127.0.0.1:{free_port()}",
        AUTHSVC_METRICS_ADDRESS="",
        AUTHSVC_SHUTDOWN_GRACE="1",
        **extra,
    )
    return env


@contextlib.asynccontextmanager
async def _serving(env: dict[str, str], *args: str) -> AsyncIterator[None]:
    """`authsvc *args` until its banner's "Next:" line; SIGTERM and wait afterwards."""
    process = await start_authsvc(env, *args)
    assert process.stdout is not None
    try:
        async with asyncio.timeout(BOUND):
            while not (line := await process.stdout.readline()).startswith(b"Next:"):
                if not line:
                    _, err = await process.communicate()
                    pytest.fail(f"exited {process.returncode}: {err.decode()[-2000:]}")
        yield
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), BOUND)


async def _first_dev_run(data_dir: Path) -> None:
    """What the first `make run` leaves in the data directory: keys, dev clients, credentials."""
    settings = throwaway_settings(data_dir, kek="", dev=True, gateway_embedded=True)
    authority = await open_authority(settings)
    try:
        assert await bootstrap_dev(authority) is not None
    finally:
        await authority.close()


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """`folder` read-only: by its mode for a user, by the immutable attribute for root (who
    ignores modes)."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        try:
            yield
        finally:
            folder.chmod(0o700)
        return
    try:
        subprocess.run(["chattr", "+i", str(folder)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"root cannot make a folder read-only here (chattr: {exc})")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=False, capture_output=True)


@pytest.mark.parametrize("command", [["serve", "--dev"], ["migrate"]])
async def test_a_data_dir_that_is_a_file_stops_the_start(
    tmp_path: Path, command: list[str]
) -> None:
    not_a_directory = tmp_path / "var"
    not_a_directory.write_text("")
    code, err = await run_to_end(_env(not_a_directory, AUTHSVC_KEK=new_kek_text()), *command)
    assert code == 2, err[-2000:]
    assert f"AUTHSVC_DATA_DIR={not_a_directory}: exists and is not a directory" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("state", ["fresh", "after-a-first-run"])
async def test_a_read_only_data_dir_stops_the_start_saying_so(tmp_path: Path, state: str) -> None:
    """Fresh, writing the dev key-encryption key had ended in a PermissionError traceback; after
    a first run, the start said "the database is unreachable, retry later", which no retry
    mends."""
    data = tmp_path / "var"
    data.mkdir()
    if state == "after-a-first-run":
        await _first_dev_run(data)
    with _read_only(data):
        code, err = await run_to_end(_env(data), "serve", "--dev")
    assert code == 2, err[-2000:]
    assert str(data) in err
    assert "Traceback" not in err
    assert "retry later" not in err


async def test_make_run_serves_again_after_its_dev_credentials_file_was_deleted(
    tmp_path: Path,
) -> None:
    data = tmp_path / "var"
    await _first_dev_run(data)
    (data / DEV_CREDENTIALS).unlink()
    async with _serving(_env(data), "serve", "--dev"):
        assert (data / DEV_CREDENTIALS).exists()


async def test_a_taken_grpc_port_stops_the_start_in_json_lines_only(tmp_path: Path) -> None:
    """gRPC's C core wrote its own "E1204 ... add_port.cc:83] Failed to add port" line among
    authsvc's JSON lines, which a log pipeline reading JSON cannot parse."""
    env = _env(tmp_path, AUTHSVC_KEK=new_kek_text())
    host, port = env["AUTHSVC_GRPC_ADDRESS"].rsplit(":", 1)
    with socket.socket() as taken:
        taken.bind((host, int(port)))
        taken.listen()
        code, err = await run_to_end(env, "serve")
    assert code == 2, err[-2000:]
    assert "AUTHSVC_GRPC_ADDRESS" in err
    for line in err.splitlines():
        if not line.startswith("authsvc: "):  # the CLI's own last word, for a person
            json.loads(line)
