"""The call counters and latency histogram, as Prometheus reads them."""

from __future__ import annotations

from prometheus_client import generate_latest

from authsvc.testing import RunningAuthority


def test_latency_buckets_are_cumulative_and_inclusive(running: RunningAuthority) -> None:
    metrics = running.server.metrics
    for seconds in (0.0001, 0.0005, 0.003, 10.0):
        metrics.observe("Verify", "OK", seconds)
    metrics.refused("Verify", "UNAUTHENTICATED")

    text = generate_latest(metrics.registry).decode()

    def sample(name: str) -> str:
        return next(line for line in text.splitlines() if line.startswith(name + " "))

    assert sample('authsvc_rpc_duration_seconds_bucket{le="0.0005",method="Verify"}').endswith(
        " 2.0"
    )
    assert sample('authsvc_rpc_duration_seconds_bucket{le="0.001",method="Verify"}').endswith(
        " 2.0"
    )
    assert sample('authsvc_rpc_duration_seconds_bucket{le="0.005",method="Verify"}').endswith(
        " 3.0"
    )
    assert sample('authsvc_rpc_duration_seconds_bucket{le="5.0",method="Verify"}').endswith(" 3.0")
    assert sample('authsvc_rpc_duration_seconds_bucket{le="+Inf",method="Verify"}').endswith(" 4.0")
    assert sample('authsvc_rpc_duration_seconds_count{method="Verify"}').endswith(" 4.0")
    assert float(sample('authsvc_rpc_duration_seconds_sum{method="Verify"}').split()[-1]) == (
        0.0001 + 0.0005 + 0.003 + 10.0
    )
    assert sample('authsvc_rpc_calls_total{code="OK",method="Verify"}').endswith(" 4.0")
    assert sample('authsvc_rpc_calls_total{code="UNAUTHENTICATED",method="Verify"}').endswith(
        " 1.0"
    )
