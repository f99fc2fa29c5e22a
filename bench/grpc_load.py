"""A closed-loop gRPC load generator, run as its own process: `python -m bench.grpc_load PLAN.json`.

C workers on one grpc.aio channel each keep one unary call in flight, back to back, for a bounded
time or number of calls, whichever comes first. Requests are serialized once, before the clock
starts, and responses are not parsed (except to follow a rotation chain), so the generator spends
its CPU on gRPC itself; the same generator drives every subject and its baseline, so whatever it
costs is the same on both sides of a ratio.

The plan (JSON):
    target       "127.0.0.1:PORT" (loopback only)
    method       "/authsvc.v1.TokenService/Verify"
    requests     [base64 of a serialized request, ...]   fixed mode: worker i sends requests[i % n]
    chain        optional: {"field": "refresh_token"}     rotation mode: each worker starts from
                 requests[i] and sends, next, a RotateRequest built from its last TokenPair
    metadata     [[key, value], ...]
    concurrency, duration_s, warmup_s, max_requests, server_pid (for its CPU seconds)

It prints one JSON line: rps, p50/p90/p99/max in ms, errors (with the first one), CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from bench.machine import cpu_seconds, percentile, require_loopback

MAX_DURATION_S = 60.0
MAX_REQUESTS = 2_000_000


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""

    def failed(self, exc: BaseException) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = _describe(exc)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return repr(exc)


def _next_rotation(response: bytes) -> bytes:
    """The RotateRequest that trades the refresh token of `response` (a TokenPair)."""
    from authsvc_client.v1 import authsvc_pb2 as pb

    pair = pb.TokenPair.FromString(response)
    return pb.RotateRequest(refresh_token=pair.refresh_token).SerializeToString()


async def _fixed(
    call: grpc.aio.UnaryUnaryMultiCallable,
    request: bytes,
    metadata: tuple[tuple[str, str], ...],
    deadline: float,
    budget: list[int],
    tally: Tally,
) -> None:
    """Send `request` again and again until the deadline or the shared budget runs out."""
    clock = time.perf_counter
    latencies = tally.latencies
    while budget[0] > 0 and time.monotonic() < deadline:
        budget[0] -= 1
        started = clock()
        try:
            await call(request, metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as exc:
            tally.failed(exc)
            continue
        latencies.append(clock() - started)


async def _chain(
    call: grpc.aio.UnaryUnaryMultiCallable,
    carried: list[bytes],
    i: int,
    metadata: tuple[tuple[str, str], ...],
    deadline: float,
    budget: list[int],
    tally: Tally,
) -> None:
    """Trade refresh tokens one after another; the last unsent request goes back in `carried`."""
    clock = time.perf_counter
    request = carried[i]
    while budget[0] > 0 and time.monotonic() < deadline:
        budget[0] -= 1
        started = clock()
        try:
            response = await call(request, metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as exc:
            tally.failed(exc)
            return  # the chain is broken: this worker has no token left to trade
        tally.latencies.append(clock() - started)
        request = _next_rotation(response)
    carried[i] = request


async def _phase(
    channel: grpc.aio.Channel, plan: dict[str, Any], requests: list[bytes], seconds: float
) -> tuple[Tally, float, list[bytes]]:
    """One bounded closed loop; the tally, its wall time and, in chain mode, the next requests."""
    call = channel.unary_unary(plan["method"])  # bytes in, bytes out
    metadata = tuple((k, v) for k, v in plan.get("metadata", ()))
    chain = bool(plan.get("chain"))
    concurrency = int(plan["concurrency"])
    budget = [min(int(plan.get("max_requests", MAX_REQUESTS)), MAX_REQUESTS)]
    tallies = [Tally() for _ in range(concurrency)]
    started = time.monotonic()
    deadline = started + seconds
    carried = list(requests)

    if chain:
        workers = [
            _chain(call, carried, i, metadata, deadline, budget, tallies[i])
            for i in range(concurrency)
        ]
    else:
        workers = [
            _fixed(call, carried[i % len(carried)], metadata, deadline, budget, tallies[i])
            for i in range(concurrency)
        ]
    await asyncio.gather(*workers)
    elapsed = time.monotonic() - started
    merged = Tally()
    for tally in tallies:
        merged.latencies.extend(tally.latencies)
        merged.errors += tally.errors
        merged.first_error = merged.first_error or tally.first_error
    return merged, elapsed, carried


async def measure(plan: dict[str, Any]) -> dict[str, Any]:
    """Warm up, then measure; the figures as a dict."""
    require_loopback(plan["target"])
    duration = min(float(plan["duration_s"]), MAX_DURATION_S)
    requests = [base64.b64decode(r) for r in plan["requests"]]
    if plan.get("chain") and len(requests) < int(plan["concurrency"]):
        raise SystemExit("chain mode needs one starting request per worker")
    server_pid = plan.get("server_pid")
    options = [("grpc.max_receive_message_length", 1 << 20)]
    async with grpc.aio.insecure_channel(plan["target"], options=options) as channel:
        await asyncio.wait_for(channel.channel_ready(), 10)
        warmup = min(float(plan.get("warmup_s", 1.0)), 10.0)
        if warmup > 0:
            _, _, requests = await _phase(channel, plan, requests, warmup)
        server_cpu = cpu_seconds(server_pid)
        own_cpu = cpu_seconds(os.getpid())
        tally, elapsed, _ = await _phase(channel, plan, requests, duration)
        server_cpu = cpu_seconds(server_pid) - server_cpu if server_pid else None
        own_cpu = cpu_seconds(os.getpid()) - own_cpu
    latencies = sorted(tally.latencies)
    ms = 1000.0
    return {
        "method": plan["method"],
        "concurrency": int(plan["concurrency"]),
        "duration_s": round(elapsed, 3),
        "ok": len(latencies),
        "errors": tally.errors,
        "first_error": tally.first_error or None,
        "rps": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(percentile(latencies, 50) * ms, 3),
        "p90_ms": round(percentile(latencies, 90) * ms, 3),
        "p99_ms": round(percentile(latencies, 99) * ms, 3),
        "max_ms": round(latencies[-1] * ms, 3) if latencies else 0.0,
        "client_cpu_s": round(own_cpu, 2),
        "server_cpu_s": None if server_cpu is None else round(server_cpu, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plan", help="path to the plan JSON, or - for standard input")
    args = parser.parse_args(argv)
    text = sys.stdin.read() if args.plan == "-" else open(args.plan).read()  # noqa: SIM115
    result = asyncio.run(measure(json.loads(text)))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
