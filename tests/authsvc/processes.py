"""`authsvc` as a real process, for the tests of what an operator sees: its exit status and
what it writes, with no stdin (as `make run` and CI start it)."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

BOUND = 20.0  # seconds a start that cannot work may take to say so


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def start_authsvc(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    """`python -m authsvc *args` with `env`, stdin closed, stdout and stderr piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "authsvc",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def run_to_end(env: dict[str, str], *args: str) -> tuple[int, str]:
    """`authsvc *args`, which must stop by itself within BOUND: its exit status and stderr."""
    process = await start_authsvc(env, *args)
    try:
        _, err = await asyncio.wait_for(process.communicate(), BOUND)
    except TimeoutError:
        process.kill()
        await process.communicate()
        pytest.fail("it served: the start did not stop")
    assert process.returncode is not None
    return process.returncode, err.decode()
