"""Probes for load balancers and orchestrators: `/healthz` (liveness) and `/readyz` (readiness).

`/healthz` answers 200 while this process serves HTTP at all: restarting it would not help with
anything else. `/readyz` answers 200 only while authsvc can serve calls that need its database,
the state authsvc's grpc.health.v1 service reports (see `AuthorityBackend.ready`), and 503
otherwise, so a balancer sends token requests elsewhere. Neither says why: the replies are public.
"""

from __future__ import annotations

import threading

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from authsvc_gateway.backend import AuthorityBackend

_NOT_CACHED = {"Cache-Control": "no-store"}


class HealthEndpoints:
    """GET /healthz and GET /readyz; `/readyz` also answers 503 once `draining` is set (the
    standalone gateway's shutdown)."""

    def __init__(self, backend: AuthorityBackend, draining: threading.Event | None = None) -> None:
        self._backend = backend
        self._draining = draining or threading.Event()

    async def liveness(self, request: Request) -> Response:
        return PlainTextResponse("ok\n", headers=_NOT_CACHED)

    async def readiness(self, request: Request) -> Response:
        if not self._draining.is_set() and await self._backend.ready():
            return PlainTextResponse("ready\n", headers=_NOT_CACHED)
        return PlainTextResponse("not ready\n", status_code=503, headers=_NOT_CACHED)
