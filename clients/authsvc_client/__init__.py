"""Client side of authsvc: what a service installs to verify tokens and to obtain them.

Protect a gRPC server with `AsyncAuthInterceptor` (grpc.aio) or `AuthInterceptor` (sync) and read
the caller's verified claims with `current_claims()`. Call other services with
`ServiceCredentials`. Call authsvc itself with `AsyncAuthClient` or `AuthClient`. Every failure is
an `AuthError` carrying its OAuth code.
"""

from ._cache import VerificationCache
from ._channels import is_local_target
from ._client import AsyncAuthClient, AuthClient
from ._clock import Clock, SystemClock
from ._context import current_claims
from ._credentials import (
    AsyncRetryOnUnauthenticated,
    CredentialsClosed,
    RetryOnUnauthenticated,
    ServiceCredentials,
)
from ._errors import (
    AccessDenied,
    AuthError,
    InsufficientScope,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    InvalidToken,
    NotFound,
    ServerError,
    TemporarilyUnavailable,
    TooManyAttempts,
    UnauthorizedClient,
    UnknownSigningKey,
    UnsupportedGrantType,
    UnsupportedTokenType,
    refuses_bearer,
)
from ._interceptors import AsyncAuthInterceptor, AuthInterceptor
from ._jwks import KeyCache, PublishedKey, parse_jwks
from ._policy import WhenStale
from ._redirect_uris import implied_redirect_uri, redirect_uri_allowed, redirect_uri_registered
from ._revocations import RevocationSet
from ._scopes import DEFAULT_PUBLIC_SERVICES, MethodScopes
from ._verification import (
    ACCESS_TOKEN_TYPES,
    AUDIENCE_NOT_ACCEPTED,
    ED25519_NAMES,
    FORBIDDEN_HEADERS,
    MAX_TOKEN_BYTES,
    PINNED_ALGORITHMS,
    Claims,
    VerifiedToken,
    check_claims,
    verify_access_token,
)
from ._verifier import LocalVerifier

__all__ = [
    "ACCESS_TOKEN_TYPES",
    "AUDIENCE_NOT_ACCEPTED",
    "DEFAULT_PUBLIC_SERVICES",
    "ED25519_NAMES",
    "FORBIDDEN_HEADERS",
    "MAX_TOKEN_BYTES",
    "PINNED_ALGORITHMS",
    "AccessDenied",
    "AsyncAuthClient",
    "AsyncAuthInterceptor",
    "AsyncRetryOnUnauthenticated",
    "AuthClient",
    "AuthError",
    "AuthInterceptor",
    "Claims",
    "Clock",
    "CredentialsClosed",
    "InsufficientScope",
    "InvalidClient",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "InvalidTarget",
    "InvalidToken",
    "KeyCache",
    "LocalVerifier",
    "MethodScopes",
    "NotFound",
    "PublishedKey",
    "RetryOnUnauthenticated",
    "RevocationSet",
    "ServerError",
    "ServiceCredentials",
    "SystemClock",
    "TemporarilyUnavailable",
    "TooManyAttempts",
    "UnauthorizedClient",
    "UnknownSigningKey",
    "UnsupportedGrantType",
    "UnsupportedTokenType",
    "VerificationCache",
    "VerifiedToken",
    "WhenStale",
    "check_claims",
    "current_claims",
    "implied_redirect_uri",
    "is_local_target",
    "parse_jwks",
    "redirect_uri_allowed",
    "redirect_uri_registered",
    "refuses_bearer",
    "verify_access_token",
]
