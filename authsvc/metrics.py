"""Prometheus metrics for operators: calls by method and status, latency, and the state gauges.

Calls are recorded where they already pass through one place: the servicers' error edge
(`authsvc.rpc.servicer`) and, for calls refused before any handler, caller authorization. An
interceptor of its own would cost every call another trip through grpc.aio's interceptor chain.
The state gauges (revocation entries, feed cursor, keys by state) are read at scrape time, so
they cost the request path nothing. Each server has its own registry, so tests and several
authorities in one process do not share counters.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from authsvc.authority import Authority

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class AuthorityCollector(Collector):
    """Gauges read from the authority when scraped."""

    def __init__(self, authority: Authority) -> None:
        self._authority = authority

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ctx = self._authority.ctx
        entries = GaugeMetricFamily(
            "authsvc_revocation_entries", "Revocations held in memory for Verify"
        )
        entries.add_metric([], len(ctx.revocations))
        yield entries
        cursor = GaugeMetricFamily("authsvc_revocation_cursor", "Last revocation event applied")
        cursor.add_metric([], ctx.feed.cursor)
        yield cursor
        keys = GaugeMetricFamily("authsvc_signing_keys", "Keys in the ring", labels=["state"])
        states: dict[str, int] = {"pending": 0, "active": 0, "retired": 0}
        for record in ctx.key_ring.records:
            states[record.state] = states.get(record.state, 0) + 1
        for state, count in sorted(states.items()):
            keys.add_metric([state], count)
        yield keys


class Metrics:
    """The registry and the RPC instruments of one server."""

    def __init__(self, authority: Authority) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "authsvc_rpc_calls",
            "RPCs handled, by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "authsvc_rpc_duration_seconds",
            "RPC handling time, by method",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(AuthorityCollector(authority))
        # Label lookups hash and lock; the request path reuses each child once made.
        self._call_children: dict[tuple[str, str], Any] = {}
        self._latency_children: dict[str, Any] = {}

    def observe(self, method: str, code: str, seconds: float) -> None:
        """One handled call: counted by method and status, timed by method."""
        self._children(method, code).inc()
        self._latency(method).observe(seconds)

    def refused(self, method: str, code: str) -> None:
        """One call refused before any handler ran (caller authorization)."""
        self._children(method, code).inc()

    def _children(self, method: str, code: str) -> Any:
        child = self._call_children.get((method, code))
        if child is None:
            child = self._call_children[(method, code)] = self.calls.labels(method, code)
        return child

    def _latency(self, method: str) -> Any:
        child = self._latency_children.get(method)
        if child is None:
            child = self._latency_children[method] = self.latency.labels(method)
        return child

    def serve(self, address: str) -> int:
        """Expose /metrics over HTTP on `address` (host:port; port 0 picks one). The port."""
        host, _, port = address.rpartition(":")
        server, _thread = start_http_server(int(port), addr=host, registry=self.registry)
        return int(server.server_port)
