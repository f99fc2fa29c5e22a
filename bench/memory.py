"""Memory: authsvc's RSS idle and with 100k live families (`--quick`: 10k).

A live family here is one stored in the database (families and refresh tokens, loaded with raw SQL)
whose current access token has been verified once, so the service holds what it would hold while
those sessions are in use. The interceptor's memory with 100k revoked families is reported by the
interceptor measurement.
"""

from __future__ import annotations

from bench.dataset import TOKENS_PER_FAMILY, load_refresh_tokens, sqlite_with_schema
from bench.processes import Processes, python_module
from bench.runner import Figure, Run


def measure(run: Run) -> list[Figure]:
    families = run.scaled(100_000, 10_000)
    data_dir = run.workdir / "memory"
    load_refresh_tokens(sqlite_with_schema(data_dir), families * TOKENS_PER_FAMILY)
    with Processes(run.workdir) as processes:
        idle = processes.start(
            "memory-idle",
            python_module("bench.serve", "authsvc", "--data-dir", str(run.workdir / "idle")),
        ).ready
        live = processes.start(
            "memory-live",
            python_module(
                "bench.serve",
                "authsvc",
                "--data-dir",
                str(data_dir),
                "--warm-families",
                str(families),
            ),
        ).ready
    added = live["rss_serving"] - idle["rss_serving"]
    return [
        Figure(
            f"authsvc RSS, {families:,} live families vs idle",
            live["rss_serving"],
            idle["rss_serving"],
            "B",
            better="none",
            note=f"{added / families:,.0f} bytes per live family (verification cache entry included)",
            detail={"idle": idle_facts(idle), "live": idle_facts(live), "families": families},
        ),
        Figure(
            "authsvc bytes per live family",
            added / families,
            None,
            "B/entry",
            better="none",
        ),
    ]


def idle_facts(facts: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in facts.items() if k.startswith("rss") or k == "warm_families"}
