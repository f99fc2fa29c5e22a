"""What a client reads before it starts: RFC 8414 metadata, the JWK Set and the OpenAPI document."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from authsvc_gateway.errors import OAuthError, error_response
from authsvc_gateway.key_set import KeySetCache


class DiscoveryEndpoints:
    """GET /.well-known/oauth-authorization-server, /.well-known/jwks.json and /openapi.json."""

    def __init__(
        self, keys: KeySetCache, metadata: dict[str, Any], openapi: dict[str, Any]
    ) -> None:
        self._keys = keys
        # Both documents depend on the configuration only, so they are serialised once.
        self._metadata = json.dumps(metadata).encode()
        self._openapi = json.dumps(openapi).encode()

    async def metadata(self, request: Request) -> Response:
        """RFC 8414 §3.2: the metadata document."""
        return Response(
            self._metadata,
            media_type="application/json",
            headers={"Cache-Control": "public, max-age=3600"},
        )

    async def jwks(self, request: Request) -> Response:
        """RFC 7517 §5: the public keys, cacheable no longer than authsvc's publication lead."""
        try:
            published = await self._keys.current()
        except OAuthError as error:
            return error_response(error)
        return Response(
            published.jwks_json,
            media_type="application/json",
            headers={"Cache-Control": f"public, max-age={published.max_age}"},
        )

    async def openapi(self, request: Request) -> Response:
        """The OpenAPI 3.1 document of every route."""
        return Response(self._openapi, media_type="application/json")
