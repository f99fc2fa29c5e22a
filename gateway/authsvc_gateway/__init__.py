"""authsvc's OAuth 2.1 HTTP gateway: external clients speak OAuth to it, it speaks gRPC to authsvc.

It holds no token logic: every token is issued, rotated, checked and revoked by authsvc through
the `AuthorityBackend` seam.
"""

import os

# As in `authsvc`'s package (which says why): gRPC's native log lines off unless the environment
# asks for them, before anything here imports grpc. `python -m authsvc_gateway` imports grpc
# through this package before anything imports `authsvc`.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

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
