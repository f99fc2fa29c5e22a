"""Driving gRPC servers with `bench.grpc_load` in its own process, and pairing subject with baseline."""

from __future__ import annotations

import base64
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.processes import Child, python_module, run_json
from bench.runner import Run

TOKEN_SERVICE = "/authsvc.v1.TokenService/"


@dataclass(frozen=True)
class Load:
    """What to send: a method, its serialized requests, call metadata; `chain` follows rotations."""

    method: str
    requests: Sequence[bytes]
    metadata: Sequence[tuple[str, str]] = ()
    chain: bool = False


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def drive(
    server: Child,
    load: Load,
    run: Run,
    *,
    concurrency: int | None = None,
    duration_s: float | None = None,
    warmup_s: float | None = None,
) -> dict[str, Any]:
    """One closed-loop measurement of `server` by the load generator; its JSON result."""
    duration = run.duration_s if duration_s is None else duration_s
    plan = {
        "target": f"127.0.0.1:{server.ready['port']}",
        "method": load.method,
        "requests": [base64.b64encode(r).decode() for r in load.requests],
        "metadata": [list(m) for m in load.metadata],
        "chain": load.chain,
        "concurrency": concurrency or run.concurrency,
        "duration_s": duration,
        "warmup_s": run.warmup_s if warmup_s is None else warmup_s,
        "server_pid": server.pid,
    }
    result = run_json(python_module("bench.grpc_load", "-"), stdin=json.dumps(plan), timeout=120)
    if result["ok"] == 0:
        raise RuntimeError(f"no call succeeded against {server.name}: {result['first_error']}")
    return result


def cpu_us_per_call(result: dict[str, Any], side: str = "server") -> float:
    """CPU microseconds per answered call of the server (`side="server"`) or of the load
    generator itself (`side="client"`), over the measured window."""
    calls = result["rps"] * result["duration_s"]
    return 1e6 * (result[f"{side}_cpu_s"] or 0.0) / calls if calls else 0.0


def best_of(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The round with the highest throughput: noise on a shared machine only ever slows a run."""
    return max(results, key=lambda r: r["rps"])


def paired(
    baselines: Sequence[dict[str, Any]], subjects: Sequence[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (baseline, subject) round pair whose throughput ratio is the median of the pairs'.

    Round i of each side runs back to back with the other's, so a pair shares the machine's
    state, and the median pair is one that a single fast or slow round cannot pick. The best
    of each side, taken apart, can pit one side's luckiest round against the other's ordinary
    ones: on this kind of machine the same empty server has run at 1,800 and 3,300 calls/s in
    consecutive rounds. With an even number of pairs, the lower of the middle two.
    """
    pairs = sorted(zip(baselines, subjects, strict=True), key=lambda p: p[1]["rps"] / p[0]["rps"])
    return pairs[(len(pairs) - 1) // 2]


def spread(rounds: dict[str, list[dict[str, Any]]]) -> str:
    """The rounds behind a ratio, for its note: each side's range, the ratio of the medians, and
    the ratio of each side's best round, the statistic of the bench's runs before the eighth
    round of docs/performance-history.md."""
    base = [r["rps"] for r in rounds["baseline_rounds"]]
    subject = [r["rps"] for r in rounds["subject_rounds"]]
    ratio = statistics.median(subject) / statistics.median(base)
    best = max(subject) / max(base)
    return (
        f"rounds: baseline {min(base):,.0f}-{max(base):,.0f}, subject "
        f"{min(subject):,.0f}-{max(subject):,.0f} rps; ratio of medians {ratio:.2f}×, of each "
        f"side's best {best:.2f}×"
    )


def alternate(
    run: Run, baseline: Any, subject: Any
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Measure baseline and subject in alternation, `run.rounds` times each; the median pair
    (`paired`) and every round, for the JSON."""
    base_results, subject_results = [], []
    for _ in range(run.rounds):
        base_results.append(baseline())
        subject_results.append(subject())
    rounds = {"baseline_rounds": base_results, "subject_rounds": subject_results}
    base, chosen = paired(base_results, subject_results)
    return base, chosen, rounds
