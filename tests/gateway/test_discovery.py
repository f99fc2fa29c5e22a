"""Metadata, JWKS and the OpenAPI document: consistent with each other and with the routes."""

from __future__ import annotations

import httpx
import pytest
from authsvc_gateway import create_app, paths
from authsvc_gateway.config import GatewayConfig
from authsvc_gateway.metadata import metadata_paths
from openapi_spec_validator import validate

from tests.gateway.conftest import Deployment, deploy
from tests.gateway.fakes import FakeBackend

# CORS preflights are answered by middleware before routing; HEAD comes with every GET.

# Tests here register their own clients and move no clock, so they share one deployment.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture
def deployment(shared_deployment: Deployment) -> Deployment:
    return shared_deployment


@pytest.fixture
def http(shared_http: httpx.AsyncClient) -> httpx.AsyncClient:
    return shared_http


_IMPLICIT_METHODS = {"HEAD", "OPTIONS"}


async def test_metadata_jwks_and_openapi_agree(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    metadata = (await http.get(paths.METADATA)).json()
    # RFC 8414 §3.3: the issuer is exactly authsvc's, and exactly what the tokens carry.
    assert metadata["issuer"] == deployment.authority.settings.issuer == deployment.config.issuer
    openapi = (await http.get(paths.OPENAPI)).json()
    validate(openapi)
    served = set(openapi["paths"])
    for name in (
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "revocation_endpoint",
        "introspection_endpoint",
        "service_documentation",
    ):
        url = httpx.URL(metadata[name])
        assert str(url).startswith(deployment.url), name
        assert url.path in served, name
    assert metadata["response_types_supported"] == ["code"]
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert set(metadata["grant_types_supported"]) == {
        "authorization_code",
        "refresh_token",
        "client_credentials",
    }
    assert "password" not in metadata["grant_types_supported"]
    assert set(metadata["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "none",
    }
    assert "none" not in metadata["introspection_endpoint_auth_methods_supported"]
    token_schema = openapi["components"]["schemas"]["TokenRequest"]["properties"]["grant_type"]
    assert set(token_schema["enum"]) == set(metadata["grant_types_supported"])

    jwks = await http.get(metadata["jwks_uri"])
    assert jwks.status_code == 200
    ring = deployment.authority.authority.publish_keys()
    assert jwks.text == ring.jwks_json  # byte for byte what authsvc publishes
    assert ring.signer.kid in {key["kid"] for key in jwks.json()["keys"]}
    for key in jwks.json()["keys"]:
        assert "d" not in key  # public halves only


async def test_jwks_max_age_never_exceeds_the_publication_lead(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    reply = await http.get(paths.JWKS)
    directives = dict(
        item.strip().partition("=")[::2] for item in reply.headers["cache-control"].split(",")
    )
    assert "public" in directives
    assert 0 < int(directives["max-age"]) <= deployment.authority.settings.jwks_max_age


async def test_metadata_is_served_under_the_issuer_path_too(tmp_path) -> None:
    config = GatewayConfig(client_id="g", client_secret="s", issuer="https://a.example/t1")
    assert metadata_paths(config.issuer) == (paths.METADATA, paths.METADATA + "/t1")
    app = create_app(config, FakeBackend())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://a.example"
    ) as http:
        for path in metadata_paths(config.issuer):
            assert (await http.get(path)).json()["issuer"] == "https://a.example/t1"


async def test_cors_answers_configured_origins_on_browser_endpoints(tmp_path) -> None:
    origin = "https://app.example"
    async with (
        deploy(tmp_path, cors_origins=(origin,)) as deployment,
        httpx.AsyncClient(base_url=deployment.url) as http,
    ):
        for path in (paths.TOKEN, paths.REVOKE, paths.JWKS, paths.METADATA):
            preflight = await http.options(
                path,
                headers={
                    "origin": origin,
                    "access-control-request-method": "POST",
                    "access-control-request-headers": "content-type",
                },
            )
            assert preflight.status_code == 200, path
            assert preflight.headers["access-control-allow-origin"] == origin
        jwks = await http.get(paths.JWKS, headers={"origin": origin})
        assert jwks.headers["access-control-allow-origin"] == origin
        token = await http.post(
            paths.TOKEN, data={"grant_type": "client_credentials"}, headers={"origin": origin}
        )
        assert token.headers["access-control-allow-origin"] == origin

        stranger = await http.get(paths.JWKS, headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in stranger.headers
        refused = await http.options(
            paths.TOKEN,
            headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        )
        assert "access-control-allow-origin" not in refused.headers
        # Neither the sign-in pages nor introspection are readable cross-origin.
        for path in (paths.INTROSPECT, paths.AUTHORIZE):
            other = await http.get(path, headers={"origin": origin})
            assert "access-control-allow-origin" not in other.headers


async def test_no_cors_without_configured_origins(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    reply = await http.get(paths.JWKS, headers={"origin": "https://app.example"})
    assert "access-control-allow-origin" not in reply.headers
