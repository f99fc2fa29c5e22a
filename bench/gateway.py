"""The HTTP gateway against node-oidc-provider: client-credentials grants/s and introspections/s at
concurrency 16, both driven by the peer folder's own load generator (`../shared/peers/load.py`).

The peer issues EdDSA JWTs for client credentials and introspects its own opaque tokens in memory
(it does not introspect its JWTs); the gateway introspects the JWT it issued. Skipped, with the
reason, where the gateway, the peers folder or Node is missing. Nothing of the peer is copied: it
runs from a copy of its folder with `npm ci` when it has no node_modules.

The rows against the peer measure the default deployment: the gateway embedded in the authsvc
process (`make run`), calling the domain in-process. Two more rows put the standalone gateway
(`authsvc gateway` in its own process, over loopback gRPC) beside it: the network hop issue 3
asks to be measured. The three are measured in alternation; each ratio is the median
round pair's (`bench.grpc_rows.paired`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from bench.grpc_rows import paired, spread
from bench.machine import cpu_seconds
from bench.processes import Child, Processes, python_module
from bench.runner import REPO, Figure, Run, Skip

TARGET = 1.0
#: At least this much warm-up before each measurement: Node's JIT needs it more than CPython.
WARMUP_S = 2.0
# The peers folder beside the checkout, or where AUTHSVC_BENCH_PEERS says (a clone elsewhere).
PEERS = Path(os.environ.get("AUTHSVC_BENCH_PEERS") or REPO.parent / "shared" / "peers")
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


def _load(
    url: str, run: Run, server_pid: int, *extra: str, also_pid: int | None = None
) -> dict[str, dict[str, Any]]:
    """Both measurements of load.py, each after a warm-up run of its own; `also_pid` is a second
    server process (authsvc behind a standalone gateway) whose CPU seconds are added to them."""
    results = {}
    for job, name in (("cc", "client_credentials"), ("introspect", "introspection")):
        argv = [
            "python3",
            str(PEERS / "load.py"),
            url,
            "-c",
            str(run.concurrency),
            "--warmup",
            "0",
            "--server-pid",
            str(server_pid),
            "--only",
            job,
            *extra,
        ]
        _run_load([*argv, "-d", str(max(run.warmup_s, WARMUP_S))])
        before = cpu_seconds(also_pid)
        result = _run_load([*argv, "-d", str(run.duration_s)])[name]
        if also_pid is not None:
            result["authsvc_cpu_s"] = round(cpu_seconds(also_pid) - before, 2)
        results[name] = result
    return results


def _run_load(argv: list[str]) -> dict[str, dict[str, Any]]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load.py failed: {done.stderr[-800:]}")
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {r["measurement"]: r for r in results}


def _gateway_load(
    url: str, run: Run, server_pid: int, facts: dict[str, Any], also_pid: int | None = None
) -> dict[str, dict[str, Any]]:
    return _load(
        url,
        run,
        server_pid,
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
        also_pid=also_pid,
    )


def _measure_embedded(processes: Processes, run: Run) -> dict[str, dict[str, Any]]:
    """The default deployment (`make run`, AUTHSVC_GATEWAY_EMBEDDED): the gateway inside the
    authsvc process, calling the domain directly."""
    port = _free_port()
    authority = processes.start(
        "gateway-embedded",
        python_module(
            "bench.serve",
            "authsvc",
            "--data-dir",
            tempfile.mkdtemp(prefix="gateway-embedded-", dir=run.workdir),
            "--gateway-port",
            str(port),
        ),
    )
    url = f"http://127.0.0.1:{port}"
    _wait_http(url + "/.well-known/oauth-authorization-server", authority)
    return _gateway_load(url, run, authority.pid, authority.ready)


def _measure_standalone(processes: Processes, run: Run) -> dict[str, dict[str, Any]]:
    """`authsvc gateway` in a process of its own, calling authsvc over loopback gRPC. The CPU
    figure counts both processes."""
    authority = processes.start(
        "gateway-authsvc",
        python_module(
            "bench.serve",
            "authsvc",
            "--data-dir",
            tempfile.mkdtemp(prefix="gateway-standalone-", dir=run.workdir),
        ),
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
    return _gateway_load(url, run, gateway.pid, facts, also_pid=authority.pid)


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


def _paired(
    baselines: list[dict[str, dict[str, Any]]], subjects: list[dict[str, dict[str, Any]]], name: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The median round pair of one load (`bench.grpc_rows.paired`)."""
    return paired([r[name] for r in baselines], [r[name] for r in subjects])


def _cpu_us(result: dict[str, Any]) -> float:
    cpu = (result.get("server_cpu_s") or 0.0) + result.get("authsvc_cpu_s", 0.0)
    return 1e6 * cpu / result["ok"] if result["ok"] else 0.0


def _once(run: Run, measure: Any) -> dict[str, dict[str, Any]]:
    with Processes(run.workdir) as processes:
        result: dict[str, dict[str, Any]] = measure(processes, run)
    return result


def measure(run: Run) -> list[Figure]:
    if find_spec("authsvc_gateway") is None:
        raise Skip("the HTTP gateway (authsvc_gateway) is not installed in this tree yet")
    if not (PEERS / "load.py").is_file():
        raise Skip(f"no peers folder at {PEERS} (set AUTHSVC_BENCH_PEERS to where it is)")
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise Skip("Node.js is not installed")
    peer_rounds, embedded_rounds, standalone_rounds = [], [], []
    for _ in range(run.rounds):  # in alternation: noise on a shared machine hits all three
        peer_rounds.append(_once(run, _measure_peer))
        embedded_rounds.append(_once(run, _measure_embedded))
        standalone_rounds.append(_once(run, _measure_standalone))
    figures = []
    for name, label in (
        ("client_credentials", "client-credentials grants"),
        ("introspection", "introspections"),
    ):
        peer, ours = _paired(peer_rounds, embedded_rounds, name)
        figures.append(
            Figure(
                f"gateway {label}/s vs node-oidc-provider, C={run.concurrency}",
                ours["rps"],
                peer["rps"],
                "rps",
                target=TARGET,
                note=f"embedded gateway (the default); p99 {ours['p99_ms']} ms vs "
                f"{peer['p99_ms']} ms; server CPU {_cpu_us(ours):.0f} vs {_cpu_us(peer):.0f} "
                f"µs/request; errors {ours['errors']} vs {peer['errors']}; "
                + spread(
                    {
                        "baseline_rounds": [r[name] for r in peer_rounds],
                        "subject_rounds": [r[name] for r in embedded_rounds],
                    }
                ),
                detail={
                    "baseline": peer,
                    "subject": ours,
                    "baseline_rounds": [r[name] for r in peer_rounds],
                    "subject_rounds": [r[name] for r in embedded_rounds],
                },
            )
        )
    for name, label in (
        ("client_credentials", "client-credentials grants"),
        ("introspection", "introspections"),
    ):
        embedded, standalone = _paired(embedded_rounds, standalone_rounds, name)
        figures.append(
            Figure(
                f"standalone gateway over gRPC vs embedded: {label}/s, C={run.concurrency}",
                standalone["rps"],
                embedded["rps"],
                "rps",
                better="none",
                note=f"the gRPC hop (issue 3); server CPU {_cpu_us(standalone):.0f} vs "
                f"{_cpu_us(embedded):.0f} µs/request, both processes counted",
                detail={
                    "baseline": embedded,
                    "subject": standalone,
                    "subject_rounds": [r[name] for r in standalone_rounds],
                },
            )
        )
    return figures
