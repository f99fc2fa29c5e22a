"""`IssueTokenPair` and `Rotate`, durable against power loss, against the bare driver running the
same SQL transactions with the same durability (`bench.raw_sql`).

Two subjects against one baseline. Over gRPC: the RPC as a caller sees it, at concurrency 16 from
the load generator (caller authentication, the transaction, the signed access token, the reply
after the commit). In-process (`bench.domain_load`): the same domain call without a transport, 16
concurrent callers, which is what the baseline is too. The baseline is the bare driver alone,
without signing or authentication: SQLite runs its transactions back to back on one connection,
which is the fastest it goes (one writer at a time); PostgreSQL runs 16 concurrent transactions
over a pool the size of authsvc's.

Beside them, each round also drives the empty handler of authsvc's server setup (`bench.serve
empty`) with the same method and metadata, for what the transport alone costs the server per call.
The over-gRPC row's note puts the two costs together: the empty call's server CPU plus the
domain's time per call in-process predict the rate over gRPC of a server whose event loop does
nothing else, and so how near the target the row can come on this machine.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from authsvc_client.v1 import authsvc_pb2 as pb

from bench.grpc_rows import (
    TOKEN_SERVICE,
    Load,
    bearer,
    best_of,
    cpu_us_per_call,
    drive,
    paired,
    spread,
)
from bench.processes import Child, Processes, python_module, run_json
from bench.runner import Figure, Run, Skip

TARGET = 0.5
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def _issue_load(facts: dict[str, Any]) -> Load:
    request = pb.IssueTokenPairRequest(
        subject="bench-user", client_id=facts["app_id"], audience=[facts["app_audience"]]
    )
    return Load(
        TOKEN_SERVICE + "IssueTokenPair",
        [request.SerializeToString()],
        bearer(facts["caller_token"]),
    )


class _RotationSeeds:
    """Hands each measurement round its own fresh refresh tokens (a used one would be reuse)."""

    def __init__(self, facts: dict[str, Any], per_round: int) -> None:
        self._seeds = list(facts["refresh_seeds"])
        self._per_round = per_round
        self._metadata = bearer(facts["caller_token"])

    def load(self) -> Load:
        seeds, self._seeds = self._seeds[: self._per_round], self._seeds[self._per_round :]
        if len(seeds) < self._per_round:
            raise RuntimeError("out of refresh-token seeds")
        requests = [pb.RotateRequest(refresh_token=s).SerializeToString() for s in seeds]
        return Load(TOKEN_SERVICE + "Rotate", requests, self._metadata, chain=True)


async def create_schema(database_url: str, workdir: Path) -> None:
    from authsvc.storage import migrate
    from authsvc.storage.engine import create_engine
    from authsvc.testing import throwaway_settings

    engine = create_engine(throwaway_settings(workdir, database_url=database_url))
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()


def _transport_load(facts: dict[str, Any], rpc: str) -> Load:
    """The same method and metadata for the empty handler, which ignores the request."""
    if rpc == "IssueTokenPair":
        return _issue_load(facts)
    request = pb.RotateRequest(refresh_token="r" * 43).SerializeToString()
    return Load(TOKEN_SERVICE + rpc, [request], bearer(facts["caller_token"]))


def _prediction(transport: dict[str, Any], in_process: dict[str, Any], base: dict[str, Any]) -> str:
    """What the transport's and the domain's costs alone predict for the row over gRPC."""
    transport_us = cpu_us_per_call(transport)
    domain_us = 1e6 / in_process["rps"]
    predicted = 1e6 / (transport_us + domain_us)
    return (
        f"the empty call's {transport_us:.0f} µs of server CPU plus the domain's {domain_us:.0f} "
        f"µs per call in-process predict {predicted:,.0f} rps, {predicted / base['rps']:.2f}× the "
        "raw baseline"
    )


def _pair(
    run: Run,
    server: Child,
    empty: Child,
    raw: list[str],
    domain: list[str],
    *,
    database: str,
) -> list[Figure]:
    """Per operation: the raw driver, the RPC over gRPC, the domain in-process and the empty
    handler, in alternation; two rows against the raw rounds, each its median pair (`paired`)."""
    seeds = _RotationSeeds(server.ready, run.concurrency)
    timing = ["--duration", str(run.duration_s), "--warmup", str(run.warmup_s)]
    figures = []
    for op, rpc in (("issue", "IssueTokenPair"), ("rotate", "Rotate")):
        raws, remote, local, transports = [], [], [], []
        for _ in range(run.rounds):
            raws.append(run_json([*raw, op, *timing], timeout=120))
            remote.append(
                drive(server, _issue_load(server.ready) if op == "issue" else seeds.load(), run)
            )
            local.append(run_json([*domain, op, *timing], timeout=120))
            transports.append(drive(empty, _transport_load(server.ready, rpc), run))
        base, subject = paired(raws, remote)
        local_base, in_process = paired(raws, local)
        transport = best_of(transports)  # the least the transport costs: noise only adds
        durability = {"authsvc": server.ready["durability"], "raw": base.get("durability")}
        figures += [
            Figure(
                f"{rpc} on {database} over gRPC, C={run.concurrency}",
                subject["rps"],
                base["rps"],
                "rps",
                target=TARGET,
                note=f"durability {durability}; p99 {subject['p99_ms']} ms vs {base['p99_ms']} ms; "
                f"CPU per call: server {cpu_us_per_call(subject):.0f} µs, load generator "
                f"{cpu_us_per_call(subject, 'client'):.0f} µs (on the same cores; the raw loop has "
                f"none); {_prediction(transport, in_process, base)}; "
                f"{spread({'baseline_rounds': raws, 'subject_rounds': remote})}",
                detail={
                    "baseline": base,
                    "subject": subject,
                    "baseline_rounds": raws,
                    "subject_rounds": remote,
                    "transport_rounds": transports,
                },
            ),
            Figure(
                f"{rpc} on {database} in-process (no gRPC), C={run.concurrency}",
                in_process["rps"],
                local_base["rps"],
                "rps",
                target=TARGET,
                note=f"the domain call without transport, like the raw loop; p99 "
                f"{in_process['p99_ms']} ms vs {local_base['p99_ms']} ms; "
                f"{spread({'baseline_rounds': raws, 'subject_rounds': local})}",
                detail={"baseline": local_base, "subject": in_process, "subject_rounds": local},
            ),
        ]
    return figures


def measure_sqlite(run: Run) -> list[Figure]:
    raw_db = run.workdir / "raw-sqlite" / "raw.db"
    raw_db.parent.mkdir()
    asyncio.run(create_schema(f"sqlite+aiosqlite:///{raw_db}", raw_db.parent))
    with Processes(run.workdir) as processes:
        empty = processes.start("sqlite-empty", python_module("bench.serve", "empty"))
        server = processes.start(
            "sqlite-authsvc",
            python_module(
                "bench.serve",
                "authsvc",
                "--data-dir",
                str(run.workdir / "sqlite"),
                "--refresh-seeds",
                str(run.concurrency * run.rounds),
            ),
        )
        return _pair(
            run,
            server,
            empty,
            python_module("bench.raw_sql", "sqlite", "--db", str(raw_db)),
            python_module("bench.domain_load", "--data-dir", str(run.workdir / "sqlite-domain")),
            database="SQLite",
        )


def measure_postgres(run: Run) -> list[Figure]:
    admin_dsn = os.environ.get("AUTHSVC_BENCH_POSTGRES_URL") or DEFAULT_POSTGRES
    admin_dsn = admin_dsn.replace("postgresql+asyncpg://", "postgresql://")
    databases = ("authsvc_bench_subject", "authsvc_bench_raw", "authsvc_bench_domain")
    try:
        asyncio.run(_recreate(admin_dsn, databases))
    except (OSError, ImportError) as exc:
        raise Skip(
            f"no PostgreSQL at {_redact(admin_dsn)} ({exc}); set AUTHSVC_BENCH_POSTGRES_URL"
        ) from exc
    except Exception as exc:
        raise Skip(f"PostgreSQL at {_redact(admin_dsn)} refused: {exc}") from exc
    try:
        subject_dsn, raw_dsn, domain_dsn = (_with_database(admin_dsn, name) for name in databases)
        try:
            asyncio.run(create_schema(_sqlalchemy(raw_dsn), run.workdir))
        except Exception as exc:
            raise Skip(f"authsvc's migrations do not run on PostgreSQL here: {exc}") from exc
        with Processes(run.workdir) as processes:
            empty = processes.start("postgres-empty", python_module("bench.serve", "empty"))
            server = processes.start(
                "postgres-authsvc",
                python_module(
                    "bench.serve",
                    "authsvc",
                    "--data-dir",
                    str(run.workdir / "postgres"),
                    "--database-url",
                    _sqlalchemy(subject_dsn),
                    "--refresh-seeds",
                    str(run.concurrency * run.rounds),
                ),
            )
            raw = python_module(
                "bench.raw_sql", "postgres", "--dsn", raw_dsn, "--concurrency", str(run.concurrency)
            )
            domain = python_module(
                "bench.domain_load",
                "--data-dir",
                str(run.workdir / "postgres-domain"),
                "--database-url",
                _sqlalchemy(domain_dsn),
            )
            return _pair(run, server, empty, raw, domain, database="PostgreSQL")
    finally:
        asyncio.run(_drop(admin_dsn, databases))


async def _recreate(admin_dsn: str, databases: tuple[str, ...]) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        for name in databases:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop(admin_dsn: str, databases: tuple[str, ...]) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        for name in databases:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _with_database(dsn: str, name: str) -> str:
    return dsn.rsplit("/", 1)[0] + "/" + name


def _sqlalchemy(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


def _redact(dsn: str) -> str:
    scheme, _, rest = dsn.partition("://")
    userinfo, at, host = rest.rpartition("@")
    return f"{scheme}://{userinfo.split(':')[0]}{'@' if at else ''}{host}"
