"""RFC 8414 authorization server metadata, built from the configuration alone."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from authsvc_gateway import paths
from authsvc_gateway.client_auth import AuthMethod
from authsvc_gateway.config import GatewayConfig

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
SECRET_METHODS = (AuthMethod.CLIENT_SECRET_BASIC.value, AuthMethod.CLIENT_SECRET_POST.value)


def server_metadata(config: GatewayConfig) -> dict[str, Any]:
    """The metadata document (RFC 8414 §2); `issuer` is authsvc's issuer, exactly."""
    return {
        "issuer": config.issuer,
        "authorization_endpoint": config.endpoint(paths.AUTHORIZE),
        "token_endpoint": config.endpoint(paths.TOKEN),
        "jwks_uri": config.endpoint(paths.JWKS),
        "revocation_endpoint": config.endpoint(paths.REVOKE),
        "introspection_endpoint": config.endpoint(paths.INTROSPECT),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(GRANT_TYPES),
        "token_endpoint_auth_methods_supported": [*SECRET_METHODS, AuthMethod.NONE.value],
        "revocation_endpoint_auth_methods_supported": [*SECRET_METHODS, AuthMethod.NONE.value],
        # RFC 7662 §4: introspection needs an authenticated caller, so public clients are out.
        "introspection_endpoint_auth_methods_supported": list(SECRET_METHODS),
        "code_challenge_methods_supported": ["S256"],
        # RFC 9207: authorization responses carry `iss`, against mix-up attacks.
        "authorization_response_iss_parameter_supported": True,
        "service_documentation": config.endpoint(paths.OPENAPI),
    }


def metadata_paths(issuer: str) -> tuple[str, ...]:
    """Where the metadata is served: RFC 8414 §3.1 inserts the well-known segment before the
    issuer's path, and the plain path is kept too for clients that ignore the issuer's path."""
    issuer_path = urlsplit(issuer).path.rstrip("/")
    if not issuer_path:
        return (paths.METADATA,)
    return (paths.METADATA, paths.METADATA + issuer_path)
