"""CORS (Fetch standard) for the configured browser origins, on the endpoints browser apps call.

Starlette's CORSMiddleware does the protocol; this wrapper only limits it to some paths, so the
sign-in pages and introspection never answer cross-origin reads.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send


class PathCors:
    """Apply CORSMiddleware to requests whose path is in `paths`; pass the rest through."""

    def __init__(self, app: ASGIApp, *, paths: Collection[str], origins: Collection[str]) -> None:
        self._app = app
        self._paths = frozenset(paths)
        self._cors = CORSMiddleware(
            app,
            allow_origins=list(origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["WWW-Authenticate", "Retry-After"],
            # Browser apps are public clients: no cookies or HTTP auth travel cross-origin.
            allow_credentials=False,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self._paths:
            await self._cors(scope, receive, send)
        else:
            await self._app(scope, receive, send)
