"""How cost grows with stored state: `Rotate` and `Verify` p50 with 1M stored refresh tokens against
the same with 10k (`--quick`: 100k against 10k).

Latency is measured at concurrency 1, so it is the cost of one call rather than queueing. Each
database is loaded with raw SQL (`bench.dataset`), then served by a fresh authsvc.
"""

from __future__ import annotations

from typing import Any

from authsvc_client.v1 import authsvc_pb2 as pb

from bench.dataset import load_refresh_tokens, sqlite_with_schema
from bench.grpc_rows import TOKEN_SERVICE, Load, bearer, drive
from bench.processes import Processes, python_module
from bench.runner import Figure, Run

TARGET = 1.2
SMALL = 10_000


ROUNDS = 3


def _loads(facts: dict[str, Any], round_: int) -> dict[str, Load]:
    metadata = bearer(facts["caller_token"])
    seed = facts["refresh_seeds"][round_]
    verify = pb.VerifyRequest(token=facts["app_token"], audience=facts["app_audience"])
    return {
        "rotate": Load(
            TOKEN_SERVICE + "Rotate",
            [pb.RotateRequest(refresh_token=seed).SerializeToString()],
            metadata,
            chain=True,
        ),
        "verify": Load(TOKEN_SERVICE + "Verify", [verify.SerializeToString()], metadata),
    }


def measure(run: Run) -> list[Figure]:
    large = run.scaled(1_000_000, 100_000)
    sizes = (SMALL, large)
    for tokens in sizes:
        load_refresh_tokens(sqlite_with_schema(run.workdir / f"scaling-{tokens}"), tokens)
    results: dict[tuple[int, str], list[dict[str, Any]]] = {}
    with Processes(run.workdir) as processes:
        servers = {
            tokens: processes.start(
                f"scaling-{tokens}",
                python_module(
                    "bench.serve",
                    "authsvc",
                    "--data-dir",
                    str(run.workdir / f"scaling-{tokens}"),
                    "--refresh-seeds",
                    str(ROUNDS),
                ),
            )
            for tokens in sizes
        }
        # Both servers run side by side and are measured in alternation; the lowest p50 of the
        # rounds counts, since noise on a shared machine only ever adds latency.
        for round_ in range(ROUNDS):
            for tokens, server in servers.items():
                for op, load in _loads(server.ready, round_).items():
                    result = drive(server, load, run, concurrency=1, duration_s=run.duration_s / 2)
                    results.setdefault((tokens, op), []).append(result)
    figures = []
    for op, rpc in (("rotate", "Rotate"), ("verify", "Verify")):
        small = min(results[(SMALL, op)], key=lambda r: r["p50_ms"])
        big = min(results[(large, op)], key=lambda r: r["p50_ms"])
        figures.append(
            Figure(
                f"{rpc} p50 at C=1, {large:,} vs {SMALL:,} refresh tokens",
                big["p50_ms"],
                small["p50_ms"],
                "ms",
                better="lower",
                target=TARGET,
                note=f"p99 {big['p99_ms']} ms vs {small['p99_ms']} ms; best of {ROUNDS} rounds",
                detail={"baseline": small, "subject": big},
            )
        )
    return figures
