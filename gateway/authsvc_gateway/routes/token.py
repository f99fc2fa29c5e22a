"""POST /oauth/token (RFC 6749 §3.2): the authorization_code, refresh_token and client_credentials
grants. The password and implicit grants do not exist (OAuth 2.1 §10)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from authsvc_client.v1 import authsvc_pb2 as pb
from starlette.requests import Request
from starlette.responses import Response

from authsvc_gateway.authorization import parse_scope
from authsvc_gateway.backend import AuthorityBackend
from authsvc_gateway.client_auth import AuthMethod, ClientCredentials, authenticate
from authsvc_gateway.errors import InvalidGrant, UnauthorizedClient, UnsupportedGrantType
from authsvc_gateway.forms import Params
from authsvc_gateway.routes.client_request import (
    answer_client_request,
    beyond_any_token,
    json_reply,
)

Grant = Callable[[AuthorityBackend, ClientCredentials, Params], Awaitable[dict[str, Any]]]


class TokenEndpoint:
    """Authenticates the client, then runs the grant it asks for."""

    def __init__(self, backend: AuthorityBackend) -> None:
        self._backend = backend

    async def handle(self, request: Request) -> Response:
        """Answer a token request with RFC 6749 §5.1 tokens or a §5.2 error."""
        return await answer_client_request(request, self._respond)

    async def _respond(self, form: Params, credentials: ClientCredentials) -> Response:
        grant_type = form.require("grant_type")
        grant = GRANTS.get(grant_type)
        if grant is None:
            raise UnsupportedGrantType(f"grant_type {grant_type} is not supported")
        return json_reply(await grant(self._backend, credentials, form))


async def authorization_code(
    backend: AuthorityBackend, credentials: ClientCredentials, form: Params
) -> dict[str, Any]:
    """RFC 6749 §4.1.3 with the RFC 7636 §4.5 verifier; authsvc checks the code and PKCE."""
    client = await authenticate(backend, credentials)
    _require_grant(client, "authorization_code")
    pair = await backend.exchange_authorization_code(
        pb.ExchangeAuthorizationCodeRequest(
            client_id=client.client_id,
            code=_grant_token(form, "code"),
            # OAuth 2.1 §4.1.3: required only if the authorization request had one; authsvc
            # compares it with what the code was bound to.
            redirect_uri=form.single("redirect_uri") or "",
            code_verifier=form.require("code_verifier"),
            # RFC 8707 §2.2: the access token's, among the code's; authsvc checks.
            audience=list(form.every("resource")),
        )
    )
    return token_pair_body(pair)


async def refresh_token(
    backend: AuthorityBackend, credentials: ClientCredentials, form: Params
) -> dict[str, Any]:
    """RFC 6749 §6 through authsvc's Rotate: a new pair, and reuse detection on the old token."""
    client = await authenticate(backend, credentials)
    _require_grant(client, "refresh_token")
    pair = await backend.rotate(
        pb.RotateRequest(
            refresh_token=_grant_token(form, "refresh_token"),
            client_id=client.client_id,
            scope=_scope(form),
        )
    )
    return token_pair_body(pair)


async def client_credentials(
    backend: AuthorityBackend, credentials: ClientCredentials, form: Params
) -> dict[str, Any]:
    """RFC 6749 §4.4, confidential clients only. authsvc's ClientCredentials checks the secret
    itself, so a confidential client costs one call to authsvc, not two. A client with no
    secret, named in the body or in Basic with an empty password, is authenticated as what it
    is: a public one is then unauthorized_client (§5.2) either way, any other invalid_client."""
    if credentials.method is AuthMethod.NONE or not credentials.client_secret:
        await authenticate(backend, credentials)
        raise UnauthorizedClient("public clients may not use client_credentials")
    audience = [*(form.single("audience") or "").split(), *form.every("resource")]
    token = await backend.client_credentials(
        pb.ClientCredentialsRequest(
            client_id=credentials.client_id,
            client_secret=credentials.client_secret,
            scope=_scope(form),
            audience=list(dict.fromkeys(audience)),
        )
    )
    return _access_token_body(token.access_token, token.token_type, token.expires_in, token.scope)


GRANTS: Final[Mapping[str, Grant]] = MappingProxyType(
    {
        "authorization_code": authorization_code,
        "refresh_token": refresh_token,
        "client_credentials": client_credentials,
    }
)


def token_pair_body(pair: pb.TokenPair) -> dict[str, Any]:
    """RFC 6749 §5.1 members for an access token with its refresh token."""
    body = _access_token_body(pair.access_token, pair.token_type, pair.expires_in, pair.scope)
    if pair.refresh_token:
        body["refresh_token"] = pair.refresh_token
    return body


def _access_token_body(
    access_token: str, token_type: str, expires_in: int, scope: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "access_token": access_token,
        "token_type": token_type or "Bearer",
        "expires_in": expires_in,
    }
    if scope:
        body["scope"] = " ".join(scope)
    return body


def _grant_token(form: Params, name: str) -> str:
    """The code or refresh token a grant trades; one longer than any token is invalid_grant."""
    value = form.require(name)
    if beyond_any_token(value):
        raise InvalidGrant(f"the {name} is invalid")
    return value


def _require_grant(client: pb.Client, grant_type: str) -> None:
    if grant_type not in client.grant_types:
        raise UnauthorizedClient(f"this client may not use the {grant_type} grant")


def _scope(form: Params) -> list[str]:
    # Syntax only here; whether the client may have these scopes is authsvc's decision.
    return list(parse_scope(form.single("scope")))
