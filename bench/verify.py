"""`Verify` at concurrency 16 against an empty grpc.aio handler with the same server setup.

Both servers run side by side (an idle one costs nothing) and are measured in alternation by the
same load generator, with the same request and the same bearer metadata. The subject is the whole
call as a service sees it: caller authentication, the Verify handler, its reply.
"""

from __future__ import annotations

from authsvc_client.v1 import authsvc_pb2 as pb

from bench.grpc_rows import (
    TOKEN_SERVICE,
    Load,
    alternate,
    bearer,
    cpu_us_per_call,
    drive,
    spread,
)
from bench.processes import Processes, python_module
from bench.runner import Figure, Run

TARGET_THROUGHPUT = 0.85


def measure(run: Run) -> list[Figure]:
    with Processes(run.workdir) as processes:
        authsvc = processes.start(
            "verify-authsvc",
            python_module("bench.serve", "authsvc", "--data-dir", str(run.workdir / "verify")),
        )
        empty = processes.start("verify-empty", python_module("bench.serve", "empty"))
        facts = authsvc.ready
        request = pb.VerifyRequest(token=facts["app_token"], audience=facts["app_audience"])
        load = Load(
            TOKEN_SERVICE + "Verify", [request.SerializeToString()], bearer(facts["caller_token"])
        )
        base, subject, rounds = alternate(
            run, lambda: drive(empty, load, run), lambda: drive(authsvc, load, run)
        )
    detail = {"baseline": base, "subject": subject, **rounds}
    server_us = cpu_us_per_call(subject) - cpu_us_per_call(base)
    return [
        Figure(
            f"Verify rps, C={run.concurrency}",
            subject["rps"],
            base["rps"],
            "rps",
            target=TARGET_THROUGHPUT,
            note=f"server CPU added per call: {server_us:.0f} µs; {spread(rounds)}",
            detail=detail,
        ),
        Figure(
            f"Verify p99, C={run.concurrency}",
            subject["p99_ms"],
            base["p99_ms"],
            "ms",
            better="none",
            note="lower is better; reported",
        ),
    ]
