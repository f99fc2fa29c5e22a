"""What a grpc.aio call costs by itself, and how that cost grows when calls arrive fewer at a time.

An empty handler (`bench.serve empty`, authsvc's server setup) answers `IssueTokenPair` at
concurrency 16 and at concurrency 4, driven by the same load generator. At 16 calls in flight
grpc.aio and the loop handle several calls per wake-up; at 4, and at the rates an RPC that commits
to disk reaches even at 16, nearly every call pays the wake-ups alone. The server's and the load
generator's CPU per call are reported, not targeted: they are the floor under the storage rows
over gRPC, which the raw loop of their baseline does not pay (docs/performance.md).

Beside them, the same empty server at C=16 under SCHED_BATCH (`AUTHSVC_SCHED_BATCH=true`, off by
default; authsvc/scheduling.py) against the default policy, in alternation: what the opt-in saves
per call. Reported, not targeted.
"""

from __future__ import annotations

from authsvc_client.v1 import authsvc_pb2 as pb

from bench.grpc_rows import TOKEN_SERVICE, Load, best_of, cpu_us_per_call, drive
from bench.processes import Processes, python_module
from bench.runner import Figure, Run

FEW_IN_FLIGHT = 4


def measure(run: Run) -> list[Figure]:
    request = pb.IssueTokenPairRequest(subject="bench-user", client_id="bench-app")
    load = Load(TOKEN_SERVICE + "IssueTokenPair", [request.SerializeToString()])
    with Processes(run.workdir) as processes:
        empty = processes.start(
            "transport-empty",
            python_module("bench.serve", "empty"),
            env={"AUTHSVC_SCHED_BATCH": "false"},
        )
        batch = processes.start(
            "transport-empty-batch",
            python_module("bench.serve", "empty"),
            env={"AUTHSVC_SCHED_BATCH": "true"},
        )
        many, few, batched = [], [], []
        for _ in range(run.rounds):
            many.append(drive(empty, load, run))
            few.append(drive(empty, load, run, concurrency=FEW_IN_FLIGHT))
            batched.append(drive(batch, load, run))
    # The least CPU per call of each side's rounds: noise only ever adds to it.
    at_16 = min(many, key=cpu_us_per_call)
    at_few = min(few, key=cpu_us_per_call)
    at_16_batch = min(batched, key=cpu_us_per_call)
    detail = {"baseline": at_16, "subject": at_few, "baseline_rounds": many, "subject_rounds": few}
    return [
        Figure(
            f"empty grpc.aio call, server CPU per call, C={FEW_IN_FLIGHT} vs C={run.concurrency}",
            cpu_us_per_call(at_few),
            cpu_us_per_call(at_16),
            "µs",
            better="none",
            note=f"{best_of(few)['rps']:,.0f} vs {best_of(many)['rps']:,.0f} calls/s",
            detail=detail,
        ),
        Figure(
            f"empty grpc.aio call, load generator CPU per call, C={FEW_IN_FLIGHT} vs "
            f"C={run.concurrency}",
            cpu_us_per_call(at_few, "client"),
            cpu_us_per_call(at_16, "client"),
            "µs",
            better="none",
            note="a Python grpc.aio client, on the same cores as the server",
        ),
        Figure(
            f"empty grpc.aio call, server CPU per call, C={run.concurrency}, SCHED_BATCH vs "
            "default policy",
            cpu_us_per_call(at_16_batch),
            cpu_us_per_call(at_16),
            "µs",
            better="none",
            note=f"{best_of(batched)['rps']:,.0f} vs {best_of(many)['rps']:,.0f} calls/s; "
            f"policy {batch.ready.get('scheduling')} vs {empty.ready.get('scheduling')} "
            "(AUTHSVC_SCHED_BATCH, off by default)",
            detail={
                "baseline": at_16,
                "subject": at_16_batch,
                "baseline_rounds": many,
                "subject_rounds": batched,
            },
        ),
    ]
