"""Prometheus metrics for operators: calls by method and status, latency, and the state gauges.

The state gauges (revocation entries, feed cursor, keys by state) are read at scrape time, so
they cost the request path nothing. Each server has its own registry, so tests and several
authorities in one process do not share counters.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from authsvc.authority import Authority
from authsvc.rpc.handlers import Context, StreamBehaviour, UnaryBehaviour, wrap_handler

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

    def serve(self, address: str) -> int:
        """Expose /metrics over HTTP on `address` (host:port; port 0 picks one). The port."""
        host, _, port = address.rpartition(":")
        server, _thread = start_http_server(int(port), addr=host, registry=self.registry)
        return int(server.server_port)


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts and times every call, whatever its outcome."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.rsplit("/", 1)[-1]
        calls, latency = self._metrics.calls, self._metrics.latency.labels(method)

        def record(context: Context, started: float) -> None:
            code = context.code() or grpc.StatusCode.OK
            calls.labels(method, getattr(code, "name", str(code))).inc()
            latency.observe(time.perf_counter() - started)

        def unary(behaviour: UnaryBehaviour) -> UnaryBehaviour:
            async def timed(request: Any, context: Context) -> Any:
                started = time.perf_counter()
                try:
                    return await behaviour(request, context)
                finally:
                    record(context, started)

            return timed

        def stream(behaviour: StreamBehaviour) -> StreamBehaviour:
            async def timed(request: Any, context: Context) -> AsyncIterator[Any]:
                started = time.perf_counter()
                try:
                    async for item in behaviour(request, context):
                        yield item
                finally:
                    record(context, started)

            return timed

        return wrap_handler(handler, unary, stream)
