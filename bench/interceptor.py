"""The interceptor a service drops into its own grpc.aio server (`authsvc_client`), warm caches:
a unary call through it against the same service without it. Also its memory with 100k revoked
families (`--quick`: 10k) pushed by authsvc's revocation stream.

Three processes besides the load generator: authsvc (keys and the revocation stream), the service
with the interceptor, the same service without it. Every call carries the same valid token, so the
interceptor answers from its verification cache after the first one.
"""

from __future__ import annotations

from authsvc_client.v1 import authsvc_pb2 as pb

from bench.dataset import load_revoked_families, sqlite_with_schema
from bench.grpc_rows import (
    TOKEN_SERVICE,
    Load,
    alternate,
    bearer,
    cpu_us_per_call,
    drive,
    spread,
)
from bench.processes import Child, Processes, python_module
from bench.runner import Figure, Run, Skip

TARGET = 0.90


def _require_interceptor() -> None:
    try:
        from authsvc_client import AsyncAuthInterceptor  # noqa: F401
    except ImportError as exc:
        raise Skip(f"authsvc_client has no AsyncAuthInterceptor yet ({exc})") from exc


def _protected(
    processes: Processes, name: str, authority: Child, *, interceptor: bool, revoked: int = 0
) -> Child:
    facts = authority.ready
    argv = ["protected"]
    if interceptor:
        argv += [
            "--authority",
            f"127.0.0.1:{facts['port']}",
            "--issuer",
            facts["issuer"],
            "--client-id",
            facts["caller_id"],
            "--client-secret",
            facts["caller_secret"],
            "--expect-revocations",
            str(revoked),
        ]
    else:
        argv.append("--no-interceptor")
    return processes.start(name, python_module("bench.serve", *argv))


def measure(run: Run) -> list[Figure]:
    _require_interceptor()
    revoked = run.scaled(100_000, 10_000)
    revoked_dir = run.workdir / "interceptor-revoked"
    load_revoked_families(sqlite_with_schema(revoked_dir), revoked)
    with Processes(run.workdir) as processes:
        authority = processes.start(
            "interceptor-authsvc",
            python_module("bench.serve", "authsvc", "--data-dir", str(run.workdir / "icpt")),
        )
        bare = _protected(processes, "service-bare", authority, interceptor=False)
        guarded = _protected(processes, "service-guarded", authority, interceptor=True)
        facts = authority.ready
        request = pb.VerifyRequest(token="x", audience="y").SerializeToString()
        load = Load(TOKEN_SERVICE + "Verify", [request], bearer(facts["app_token"]))
        base, subject, rounds = alternate(
            run, lambda: drive(bare, load, run), lambda: drive(guarded, load, run)
        )
        crowded_authority = processes.start(
            "interceptor-authsvc-revoked",
            python_module("bench.serve", "authsvc", "--data-dir", str(revoked_dir)),
        )
        crowded = _protected(
            processes, "service-revoked", crowded_authority, interceptor=True, revoked=revoked
        )
    added_us = cpu_us_per_call(subject) - cpu_us_per_call(base)
    memory = crowded.ready["rss_feed_ready"] - guarded.ready["rss_feed_ready"]
    return [
        Figure(
            f"unary call through the interceptor, C={run.concurrency}",
            subject["rps"],
            base["rps"],
            "rps",
            target=TARGET,
            note=f"server CPU added per call: {added_us:.0f} µs; {spread(rounds)}",
            detail={"baseline": base, "subject": subject, **rounds},
        ),
        Figure(
            f"interceptor RSS, {revoked:,} revoked families vs none",
            crowded.ready["rss_feed_ready"],
            guarded.ready["rss_feed_ready"],
            "B",
            better="none",
            note=f"{memory / revoked:,.0f} bytes per revoked family; "
            f"{crowded.ready['revoked_entries']:,} entries held",
            detail={"with_revocations": crowded.ready, "without": guarded.ready},
        ),
    ]
