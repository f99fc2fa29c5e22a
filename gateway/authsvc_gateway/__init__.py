"""authsvc's OAuth 2.1 HTTP gateway: external clients speak OAuth to it, it speaks gRPC to authsvc.

It holds no token logic: every token is issued, rotated, checked and revoked by authsvc through
the `AuthorityBackend` seam.
"""

from authsvc_gateway.app import create_app
from authsvc_gateway.backend import AuthorityBackend, GrpcBackend
from authsvc_gateway.config import ConfigError, GatewayConfig
from authsvc_gateway.server import serve, start_gateway

__all__ = [
    "AuthorityBackend",
    "ConfigError",
    "GatewayConfig",
    "GrpcBackend",
    "create_app",
    "serve",
    "start_gateway",
]
