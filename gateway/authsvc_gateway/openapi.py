"""The OpenAPI 3.1 description of every route the gateway serves (`GET /openapi.json`).

Written by hand from the same `paths` the routes use; a test checks that the two sets match and
that the document is valid OpenAPI.
"""

from __future__ import annotations

from typing import Any

from authsvc_gateway import paths
from authsvc_gateway.config import GatewayConfig
from authsvc_gateway.errors import HTTP_STATUS
from authsvc_gateway.metadata import metadata_paths

_FORM = "application/x-www-form-urlencoded"
_JSON = "application/json"
_HTML = "text/html"
_TEXT = "text/plain"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description: str, schema: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {_JSON: {"schema": _ref(schema)}},
    }
    if headers:
        response["headers"] = headers
    return response


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_HTML: {"schema": {"type": "string"}}}}


def _form(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {_FORM: {"schema": _ref(schema)}}}


_OAUTH_ERROR = _json("An OAuth error (RFC 6749 §5.2)", "OAuthError")
_CLIENT_ERROR = _json(
    "invalid_client, with its WWW-Authenticate challenge, when HTTP Basic was tried or no "
    "credentials were sent (otherwise invalid_client is a 400)",
    "OAuthError",
    {"WWW-Authenticate": {"schema": {"type": "string"}}},
)
_UNAVAILABLE = _json("authsvc cannot be reached (temporarily_unavailable)", "OAuthError")
_CLIENT_AUTH: list[dict[str, list[str]]] = [{"clientSecretBasic": []}, {}]
_QUERY = {"in": "query", "schema": {"type": "string"}}


def _query(name: str, description: str, *, required: bool = True) -> dict[str, Any]:
    return {**_QUERY, "name": name, "description": description, "required": required}


def openapi_document(config: GatewayConfig) -> dict[str, Any]:
    """The OpenAPI document for this gateway, with its public URL as the server."""
    document_paths: dict[str, Any] = {
        paths.AUTHORIZE: {"get": _authorize()},
        paths.LOGIN: {"post": _login()},
        paths.CONSENT: {"post": _consent()},
        paths.TOKEN: {"post": _token()},
        paths.REVOKE: {"post": _revoke()},
        paths.INTROSPECT: {"post": _introspect()},
        paths.JWKS: {"get": _jwks()},
        paths.OPENAPI: {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {_JSON: {}}}},
            }
        },
        paths.LIVENESS: {"get": _liveness()},
        paths.READINESS: {"get": _readiness()},
    }
    for index, path in enumerate(metadata_paths(config.issuer)):
        document_paths[path] = {"get": _metadata(suffix="" if index == 0 else "ForIssuerPath")}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "authsvc OAuth 2.1 gateway",
            "version": "1",
            "description": (
                "OAuth 2.1 for external clients: the authorization code flow with PKCE (S256), "
                "refresh token rotation, client credentials, revocation (RFC 7009), "
                "introspection (RFC 7662), JWKS and server metadata (RFC 8414). Requests are "
                "form-encoded; errors follow RFC 6749 §5.2."
            ),
        },
        "servers": [{"url": config.public_url}],
        "paths": document_paths,
        "components": {"schemas": _SCHEMAS, "securitySchemes": _SECURITY_SCHEMES},
    }


def _authorize() -> dict[str, Any]:
    return {
        "summary": "Start the authorization code flow (RFC 6749 §4.1.1, RFC 7636 §4.3)",
        "operationId": "authorize",
        "parameters": [
            _query("response_type", "Only `code`."),
            _query("client_id", "The registered client."),
            _query(
                "redirect_uri",
                "One of the client's registered redirect URIs; may be left out by a client that"
                " registered exactly one, not a loopback one (OAuth 2.1 §4.1.1).",
                required=False,
            ),
            _query("code_challenge", "BASE64URL(SHA256(code_verifier)), 43 characters."),
            _query("code_challenge_method", "Only `S256`."),
            _query("scope", "Space-separated scopes the client may request.", required=False),
            _query(
                "resource",
                "RFC 8707; may repeat. Each an audience registered for the client; the code's"
                " tokens are for these only.",
                required=False,
            ),
            _query("state", "Returned unchanged with the code or the error.", required=False),
        ],
        "responses": {
            "200": _html("The sign-in page"),
            "302": {
                "description": "An error sent back to the client's redirect URI, with `state`",
                "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}},
            },
            "400": _html("An error page: the redirect URI cannot be trusted"),
            "503": _html("authsvc cannot be reached"),
        },
    }


def _login() -> dict[str, Any]:
    return {
        "summary": "Submit the sign-in form (browser only; needs the CSRF cookie and token)",
        "operationId": "login",
        "requestBody": _form("LoginForm"),
        "responses": {
            "200": _html("The consent page, or the sign-in page with 'Invalid credentials.'"),
            "303": {
                "description": "Back to the client's redirect URI with `code`, `state`, `iss`",
                "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}},
            },
            "400": _html("A malformed form or authorization request"),
            "403": _html("The CSRF check failed"),
            "429": {
                "description": "Too many failed logins for the account or the IP",
                "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                "content": {_HTML: {"schema": {"type": "string"}}},
            },
        },
    }


def _consent() -> dict[str, Any]:
    return {
        "summary": "Allow or deny a third-party client (browser only; needs the CSRF cookie)",
        "operationId": "consent",
        "requestBody": _form("ConsentForm"),
        "responses": {
            "303": {
                "description": "Back to the client with `code`, or with `error=access_denied`",
                "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}},
            },
            "400": _html("The consent ticket is invalid or expired"),
            "403": _html("The CSRF check failed"),
        },
    }


def _token() -> dict[str, Any]:
    return {
        "summary": "Exchange a grant for tokens (RFC 6749 §3.2)",
        "operationId": "token",
        "description": (
            "Grants: authorization_code (with code_verifier), refresh_token (rotating; a reused "
            "refresh token revokes its family), client_credentials. Replies are not cached."
        ),
        "security": _CLIENT_AUTH,
        "requestBody": _form("TokenRequest"),
        "responses": {
            "200": _json("The tokens (RFC 6749 §5.1)", "TokenResponse"),
            "400": _OAUTH_ERROR,
            "401": _CLIENT_ERROR,
            "503": _UNAVAILABLE,
        },
    }


def _revoke() -> dict[str, Any]:
    return {
        "summary": "Revoke a token (RFC 7009); a refresh token takes its family with it",
        "operationId": "revoke",
        "security": _CLIENT_AUTH,
        "requestBody": _form("RevocationRequest"),
        "responses": {
            "200": {"description": "Revoked, or the token was unknown or already invalid"},
            "400": _OAUTH_ERROR,
            "401": _CLIENT_ERROR,
            "503": _UNAVAILABLE,
        },
    }


def _introspect() -> dict[str, Any]:
    return {
        "summary": "Introspect a token (RFC 7662); confidential clients only",
        "operationId": "introspect",
        "security": [{"clientSecretBasic": []}, {}],
        "requestBody": _form("IntrospectionRequest"),
        "responses": {
            "200": _json("The token's state (RFC 7662 §2.2)", "IntrospectionResponse"),
            "400": _OAUTH_ERROR,
            "401": _CLIENT_ERROR,
            "503": _UNAVAILABLE,
        },
    }


def _jwks() -> dict[str, Any]:
    return {
        "summary": "The public signing keys as a JWK Set (RFC 7517)",
        "operationId": "jwks",
        "responses": {
            "200": _json(
                "Pending, active and retired public keys",
                "JwkSet",
                {"Cache-Control": {"schema": {"type": "string"}}},
            ),
            "503": _UNAVAILABLE,
        },
    }


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_TEXT: {"schema": {"type": "string"}}}}


def _liveness() -> dict[str, Any]:
    return {
        "summary": "Liveness: the gateway process serves HTTP",
        "operationId": "liveness",
        "responses": {"200": _text("Always, while the process serves")},
    }


def _readiness() -> dict[str, Any]:
    return {
        "summary": "Readiness: authsvc answers and its database does too (grpc.health.v1 SERVING)",
        "operationId": "readiness",
        "responses": {
            "200": _text("Ready for token requests"),
            "503": _text("authsvc or its database is unavailable, or authsvc is shutting down"),
        },
    }


def _metadata(*, suffix: str) -> dict[str, Any]:
    return {
        "summary": "Authorization server metadata (RFC 8414)",
        "operationId": "serverMetadata" + suffix,
        "responses": {"200": _json("The metadata document", "ServerMetadata")},
    }


_STRING: dict[str, Any] = {"type": "string"}
_INTEGER: dict[str, Any] = {"type": "integer"}

_SCHEMAS: dict[str, Any] = {
    "OAuthError": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "enum": sorted(HTTP_STATUS)},
            "error_description": _STRING,
        },
    },
    "TokenRequest": {
        "type": "object",
        "required": ["grant_type"],
        "properties": {
            "grant_type": {
                "type": "string",
                "enum": ["authorization_code", "refresh_token", "client_credentials"],
            },
            "code": _STRING,
            "redirect_uri": {
                "type": "string",
                "description": "authorization_code: as sent in the authorization request, if it was",
            },
            "code_verifier": {"type": "string", "minLength": 43, "maxLength": 128},
            "refresh_token": _STRING,
            "scope": _STRING,
            "audience": {"type": "string", "description": "client_credentials: audiences"},
            "resource": {
                "type": "string",
                "description": "RFC 8707; may repeat. client_credentials: audiences;"
                " authorization_code: the access token's, among the code's",
            },
            "client_id": _STRING,
            "client_secret": {"type": "string", "description": "client_secret_post only"},
        },
    },
    "TokenResponse": {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in"],
        "properties": {
            "access_token": {"type": "string", "description": "RFC 9068 JWT"},
            "token_type": {"type": "string", "enum": ["Bearer"]},
            "expires_in": _INTEGER,
            "refresh_token": _STRING,
            "scope": _STRING,
        },
    },
    "RevocationRequest": {
        "type": "object",
        "required": ["token"],
        "properties": {
            "token": _STRING,
            "token_type_hint": {"type": "string", "enum": ["access_token", "refresh_token"]},
            "client_id": _STRING,
            "client_secret": _STRING,
        },
    },
    "IntrospectionRequest": {
        "type": "object",
        "required": ["token"],
        "properties": {
            "token": _STRING,
            "token_type_hint": {"type": "string", "enum": ["access_token", "refresh_token"]},
            "client_id": _STRING,
            "client_secret": _STRING,
        },
    },
    "IntrospectionResponse": {
        "type": "object",
        "required": ["active"],
        "properties": {
            "active": {"type": "boolean"},
            "scope": _STRING,
            "client_id": _STRING,
            "token_type": _STRING,
            "token_use": {"type": "string", "enum": ["access_token", "refresh_token"]},
            "exp": _INTEGER,
            "iat": _INTEGER,
            "nbf": _INTEGER,
            "sub": _STRING,
            "aud": {"type": "array", "items": _STRING},
            "iss": _STRING,
            "jti": _STRING,
            "sid": _STRING,
        },
    },
    "JwkSet": {
        "type": "object",
        "required": ["keys"],
        "properties": {"keys": {"type": "array", "items": {"type": "object"}}},
    },
    "ServerMetadata": {
        "type": "object",
        "required": ["issuer", "token_endpoint", "jwks_uri", "response_types_supported"],
        "additionalProperties": True,
    },
    "LoginForm": {
        "type": "object",
        "required": ["csrf_token", "username", "password", "client_id"],
        "properties": {
            "csrf_token": _STRING,
            "username": _STRING,
            "password": {"type": "string", "format": "password"},
            "client_id": _STRING,
            "redirect_uri": _STRING,
            "response_type": _STRING,
            "code_challenge": _STRING,
            "code_challenge_method": _STRING,
            "scope": _STRING,
            "state": _STRING,
        },
    },
    "ConsentForm": {
        "type": "object",
        "required": ["csrf_token", "ticket", "decision"],
        "properties": {
            "csrf_token": _STRING,
            "ticket": _STRING,
            "decision": {"type": "string", "enum": ["allow", "deny"]},
        },
    },
}

_SECURITY_SCHEMES: dict[str, Any] = {
    "clientSecretBasic": {
        "type": "http",
        "scheme": "basic",
        "description": "client_secret_basic (RFC 6749 §2.3.1); or client_secret_post in the form",
    }
}
