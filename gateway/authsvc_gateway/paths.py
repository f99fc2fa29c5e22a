"""The URL paths the gateway serves, named once."""

from __future__ import annotations

from typing import Final

AUTHORIZE: Final = "/oauth/authorize"
LOGIN: Final = "/oauth/login"
CONSENT: Final = "/oauth/consent"
TOKEN: Final = "/oauth/token"  # noqa: S105 (a path, not a secret)
REVOKE: Final = "/oauth/revoke"
INTROSPECT: Final = "/oauth/introspect"
JWKS: Final = "/.well-known/jwks.json"
#: RFC 8414 §3; an issuer with a path adds it after this (`metadata_paths`).
METADATA: Final = "/.well-known/oauth-authorization-server"
OPENAPI: Final = "/openapi.json"
#: Probes for balancers and orchestrators (`routes.health`).
LIVENESS: Final = "/healthz"
READINESS: Final = "/readyz"

#: Endpoints a browser app calls with fetch(), and so the ones that answer CORS.
CORS: Final = frozenset({TOKEN, REVOKE, JWKS, METADATA})
