"""The HTTP gateway against node-oidc-provider: client-credentials grants/s and introspections/s at
concurrency 16, both driven by the peer folder's own load generator (`../shared/peers/load.py`).

The peer issues EdDSA JWTs for client credentials and introspects its own opaque tokens in memory
(it does not introspect its JWTs); the gateway introspects the JWT it issued. Skipped, with the
reason, where the gateway, the peers folder or Node is missing. Nothing of the peer is copied: it
runs from a copy of its folder with `npm ci` when it has no node_modules.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from bench.processes import Child, Processes, python_module
from bench.runner import REPO, Figure, Run, Skip

TARGET = 1.0
PEERS = REPO.parent / "shared" / "peers"
PEER_URL = "http://127.0.0.1:4010"
PEER_CACHE = REPO / "var" / "bench" / "oidc-provider"  # var/ is ignored by git


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, child: Child, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise RuntimeError(f"{child.name} exited:\n{child.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (loopback only)
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{child.name} did not answer {url} within {timeout:.0f} s")


def _peer_folder() -> Path:
    """The peer with its node_modules: the shared folder itself, or a copy with `npm ci` done."""
    source = PEERS / "oidc-provider"
    if (source / "node_modules").is_dir():
        return source
    lock = (source / "package-lock.json").read_bytes()
    if not (
        (PEER_CACHE / "node_modules").is_dir()
        and (PEER_CACHE / "package-lock.json").read_bytes() == lock
    ):
        shutil.rmtree(PEER_CACHE, ignore_errors=True)
        shutil.copytree(source, PEER_CACHE, ignore=shutil.ignore_patterns("node_modules"))
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=PEER_CACHE,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise Skip(f"npm ci for the peer failed: {done.stderr[-500:]}")
    return PEER_CACHE


def _load(url: str, run: Run, server_pid: int, *extra: str) -> dict[str, dict[str, Any]]:
    argv = [
        "python3",
        str(PEERS / "load.py"),
        url,
        "-d",
        str(run.duration_s),
        "-c",
        str(run.concurrency),
        "--warmup",
        str(run.warmup_s),
        "--server-pid",
        str(server_pid),
        *extra,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load.py failed: {done.stderr[-800:]}")
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {r["measurement"]: r for r in results}


def _measure_gateway(processes: Processes, run: Run) -> dict[str, dict[str, Any]]:
    authority = processes.start(
        "gateway-authsvc",
        python_module("bench.serve", "authsvc", "--data-dir", str(run.workdir / "gateway")),
    )
    facts = authority.ready
    port = _free_port()
    gateway = processes.start(
        "gateway",
        python_module("authsvc_gateway"),
        env={
            "AUTHSVC_GATEWAY_ADDRESS": f"127.0.0.1:{port}",
            "AUTHSVC_GATEWAY_UPSTREAM": f"127.0.0.1:{facts['port']}",
            "AUTHSVC_GATEWAY_CLIENT_ID": facts["caller_id"],
            "AUTHSVC_GATEWAY_CLIENT_SECRET": facts["caller_secret"],
            "AUTHSVC_ISSUER": facts["issuer"],
            "AUTHSVC_AUDIENCE": facts["audience"],
        },
        ready_file=False,
    )
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/.well-known/oauth-authorization-server", gateway)
    return _load(
        url,
        run,
        gateway.pid,
        "--token-path",
        "/oauth/token",
        "--introspect-path",
        "/oauth/introspect",
        "--client-id",
        facts["app_id"],
        "--client-secret",
        facts["app_secret"],
        "--scope",
        "api:read",
        "--cc-param",
        f"audience={facts['app_audience']}",
        "--introspect-token-param",
        f"audience={facts['app_audience']}",
    )


def _measure_peer(processes: Processes, run: Run) -> dict[str, dict[str, Any]]:
    folder = _peer_folder()
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 4010)) == 0:
            raise Skip("127.0.0.1:4010 is taken; the peer needs it")
    peer = processes.start("oidc-peer", ["node", "server.mjs"], cwd=folder, ready_file=False)
    _wait_http(PEER_URL + "/.well-known/openid-configuration", peer)
    return _load(
        PEER_URL, run, peer.pid, "--introspect-token-param", "resource=urn:peer:api-opaque"
    )


def measure(run: Run) -> list[Figure]:
    if find_spec("authsvc_gateway") is None:
        raise Skip("the HTTP gateway (authsvc_gateway) is not installed in this tree yet")
    if not (PEERS / "load.py").is_file():
        raise Skip(f"no peers folder at {PEERS}")
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise Skip("Node.js is not installed")
    with Processes(run.workdir) as processes:
        peer = _measure_peer(processes, run)
    with Processes(run.workdir) as processes:
        ours = _measure_gateway(processes, run)
    figures = []
    for name, label in (
        ("client_credentials", "client-credentials grants"),
        ("introspection", "introspections"),
    ):
        figures.append(
            Figure(
                f"gateway {label}/s vs node-oidc-provider, C={run.concurrency}",
                ours[name]["rps"],
                peer[name]["rps"],
                "rps",
                target=TARGET,
                note=f"p99 {ours[name]['p99_ms']} ms vs {peer[name]['p99_ms']} ms; "
                f"errors {ours[name]['errors']} vs {peer[name]['errors']}",
                detail={"baseline": peer[name], "subject": ours[name]},
            )
        )
    return figures
