"""`create_app`: the gateway's ASGI application over any `AuthorityBackend`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from authsvc_gateway import paths
from authsvc_gateway.backend import AuthorityBackend
from authsvc_gateway.config import GatewayConfig
from authsvc_gateway.cors import PathCors
from authsvc_gateway.direct_routes import DirectRoutes
from authsvc_gateway.errors import InvalidRequest, ServerError, error_response
from authsvc_gateway.key_set import KeySetCache
from authsvc_gateway.metadata import metadata_paths, server_metadata
from authsvc_gateway.openapi import openapi_document
from authsvc_gateway.pages import error_page
from authsvc_gateway.routes.authorize import AuthorizationEndpoints
from authsvc_gateway.routes.discovery import DiscoveryEndpoints
from authsvc_gateway.routes.health import HealthEndpoints
from authsvc_gateway.routes.introspect import IntrospectionEndpoint
from authsvc_gateway.routes.revoke import RevocationEndpoint
from authsvc_gateway.routes.token import TokenEndpoint

log = logging.getLogger(__name__)


def create_app(
    config: GatewayConfig,
    backend: AuthorityBackend,
    *,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    draining: threading.Event | None = None,
) -> DirectRoutes:
    """The gateway app. `clock` (wall time) dates consent tickets; `monotonic` drives the JWK
    Set cache; once `draining` is set, `/readyz` answers 503. The backend's lifetime is the
    caller's. (The login limits are authsvc's.)"""
    authorization = AuthorizationEndpoints(backend, config, clock=clock)
    discovery = DiscoveryEndpoints(
        KeySetCache(backend, clock=monotonic),
        server_metadata(config),
        openapi_document(config),
    )
    health = HealthEndpoints(backend, draining)
    # The endpoints programs call all the time: served by DirectRoutes, and by Starlette too for
    # the requests DirectRoutes passes on (first, as Starlette tries a regular expression each).
    client_endpoints = {
        paths.TOKEN: TokenEndpoint(backend).handle,
        paths.INTROSPECT: IntrospectionEndpoint(backend).handle,
        paths.REVOKE: RevocationEndpoint(backend).handle,
    }
    routes = [
        *(Route(path, endpoint, methods=["POST"]) for path, endpoint in client_endpoints.items()),
        Route(paths.AUTHORIZE, authorization.authorize, methods=["GET"]),
        Route(paths.LOGIN, authorization.login, methods=["POST"]),
        Route(paths.CONSENT, authorization.consent, methods=["POST"]),
        Route(paths.JWKS, discovery.jwks, methods=["GET"]),
        Route(paths.OPENAPI, discovery.openapi, methods=["GET"]),
        Route(paths.LIVENESS, health.liveness, methods=["GET"]),
        Route(paths.READINESS, health.readiness, methods=["GET"]),
        *(
            Route(path, discovery.metadata, methods=["GET"])
            for path in metadata_paths(config.issuer)
        ),
    ]
    middleware = []
    if config.cors_origins:
        cors_paths = {*paths.CORS, *metadata_paths(config.issuer)}
        middleware.append(Middleware(PathCors, paths=cors_paths, origins=config.cors_origins))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={405: _wrong_method, Exception: _unexpected},
    )
    # Starlette answers `/oauth/token/` with a 307 to `/oauth/token`, built from the request as
    # it arrived: behind a proxy that ends TLS, an http:// URL the client would re-send its
    # secret to. Every path here is exact; any other is a 404.
    app.router.redirect_slashes = False
    return DirectRoutes(app, client_endpoints, middleware=middleware, unexpected=_unexpected)


#: Endpoints whose callers are programs and read RFC 6749 §5.2 JSON errors.
_JSON_PATHS = frozenset({paths.TOKEN, paths.REVOKE, paths.INTROSPECT})
#: Endpoints a browser shows: their errors are pages.
_PAGE_PATHS = frozenset({paths.AUTHORIZE, paths.LOGIN, paths.CONSENT})


async def _wrong_method(request: Request, exc: Exception) -> Response:
    # `GET /oauth/token` is a common first try; say what to do in the caller's vocabulary.
    allowed = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    if request.url.path not in _JSON_PATHS:
        return Response("Method Not Allowed", status_code=405, headers=allowed)
    reply = error_response(InvalidRequest(f"use POST with a form body on {request.url.path}"))
    reply.status_code = 405
    reply.headers.update(allowed)
    return reply


async def _unexpected(request: Request, exc: Exception) -> Response:
    # A bug, not an input: every input is refused before it gets this far. Starlette logs the
    # traceback after this reply; the caller learns nothing more than server_error, on a page
    # where a browser asked.
    error = ServerError("unexpected error")
    if request.url.path in _PAGE_PATHS:
        return error_page(error)
    return error_response(error)
