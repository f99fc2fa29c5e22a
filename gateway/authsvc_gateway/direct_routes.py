"""The token, introspection and revocation endpoints reached without Starlette's router, for the
requests programs send all the time.

Starlette takes each request through its error middleware, the app's own middleware, its
exception middleware, a regular expression per route and an exception wrapper per endpoint
before the endpoint runs: about a fifth of the embedded gateway's samples under introspection
load (py-spy). `DirectRoutes` sends a POST to one of these paths through the error middleware
and the app's middleware straight to its endpoint, and everything else (other paths and
methods, requests with an `Origin`, a mounted root path, lifespan) to the Starlette app, which
serves every route itself.

What is left out does nothing for these requests: the method is the route's, so no 405; the
path is matched exactly; and the endpoints raise no `HTTPException`, the only exceptions the
exception middleware handles here. What is kept is the same code as in Starlette's stack: its
`ServerErrorMiddleware` with the app's handler (a server_error reply, then the exception raised
on for the server to log) and the app's middleware (CORS adds `Vary: Origin` on its paths).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType

from starlette.middleware import Middleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


class DirectRoutes:
    """An ASGI app: POSTs without an `Origin` to a path of `endpoints` go to its endpoint through
    `middleware` and `unexpected`; the rest go to `app`, which must serve the same endpoints at
    the same paths with the same middleware and handler of unexpected exceptions."""

    def __init__(
        self,
        app: ASGIApp,
        endpoints: Mapping[str, Endpoint],
        *,
        middleware: Sequence[Middleware],
        unexpected: ExceptionHandler,
    ) -> None:
        self.app = app
        self._paths = frozenset(endpoints)
        direct: ASGIApp = _Endpoints(endpoints)
        for cls, args, kwargs in reversed(middleware):  # as Starlette builds its stack
            direct = cls(direct, *args, **kwargs)
        self._direct = ServerErrorMiddleware(direct, handler=unexpected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in self._paths
            and not scope.get("root_path")
            and not _has_origin(scope["headers"])
        ):
            await self._direct(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class _Endpoints:
    """The endpoint of the request's path, run as Starlette's `request_response` runs it."""

    def __init__(self, endpoints: Mapping[str, Endpoint]) -> None:
        self._endpoints = MappingProxyType(dict(endpoints))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._endpoints[scope["path"]](Request(scope, receive, send))
        await response(scope, receive, send)


def _has_origin(headers: list[tuple[bytes, bytes]]) -> bool:
    # Looked up by its lower-case name, as Starlette's CORSMiddleware does.
    return any(name == b"origin" for name, _ in headers)
