"""The public surface of authsvc_client: exported names, docstrings, the claims helper."""

from __future__ import annotations

import contextvars

import authsvc_client
import pytest
from authsvc_client import current_claims
from authsvc_client._context import CURRENT_CLAIMS

from .conftest import AUDIENCE, ISSUER, NOW, Signer

EXPORTED = {
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
}


def test_the_exported_names_are_exactly_these() -> None:
    assert set(authsvc_client.__all__) == EXPORTED


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_every_export_is_importable_and_documented(name: str) -> None:
    obj = getattr(authsvc_client, name)
    if callable(obj) and not isinstance(obj, frozenset | tuple):
        assert obj.__doc__, f"{name} has no docstring"
        assert obj.__module__.startswith("authsvc_client._"), "exports come from private modules"


def test_current_claims_outside_a_protected_call() -> None:
    with pytest.raises(LookupError, match="no verified access token"):
        current_claims()
    assert current_claims(default=None) is None


def test_current_claims_inside_a_protected_call(signer: Signer) -> None:
    claims = authsvc_client.verify_access_token(
        signer.mint(), keys=signer.published(), issuer=ISSUER, audience=AUDIENCE, now=NOW
    ).claims

    def handler() -> str:
        CURRENT_CLAIMS.set(claims)
        return current_claims().sub

    assert contextvars.copy_context().run(handler) == "alice"
    assert current_claims(None) is None


def test_claims_and_keys_keep_secrets_out_of_their_repr(signer: Signer) -> None:
    claims = authsvc_client.verify_access_token(
        signer.mint(), keys=signer.published(), issuer=ISSUER, audience=AUDIENCE, now=NOW
    ).claims
    assert "raw" not in repr(claims)
    assert "key=" not in repr(next(iter(signer.published().values())))
