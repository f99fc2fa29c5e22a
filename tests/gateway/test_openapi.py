"""The OpenAPI document describes exactly the routes, and is valid OpenAPI 3.1."""

from __future__ import annotations

import pytest
from authsvc_gateway import create_app
from authsvc_gateway.config import GatewayConfig
from authsvc_gateway.openapi import openapi_document
from openapi_spec_validator import validate
from starlette.routing import Route

from tests.gateway.fakes import FakeBackend

# CORS preflights are answered by middleware before routing; HEAD comes with every GET.
_IMPLICIT_METHODS = {"HEAD", "OPTIONS"}


def _routes(config: GatewayConfig) -> set[tuple[str, str]]:
    app = create_app(config, FakeBackend())
    return {
        (route.path, method.lower())
        for route in app.app.routes
        if isinstance(route, Route)
        for method in (route.methods or set()) - _IMPLICIT_METHODS
    }


@pytest.mark.parametrize(
    "issuer",
    [
        pytest.param("http://127.0.0.1:8080", id="issuer-without-path"),
        pytest.param("https://auth.example.com/tenant-1", id="issuer-with-path"),
    ],
)
def test_the_openapi_document_describes_exactly_the_routes(issuer: str) -> None:
    config = GatewayConfig(client_id="g", client_secret="s", issuer=issuer)
    document = openapi_document(config)
    validate(document)
    described = {
        (path, method) for path, operations in document["paths"].items() for method in operations
    }
    assert described == _routes(config)
