"""POST /oauth/introspect (RFC 7662): the state of an access or refresh token, for authenticated
confidential clients only. An inactive token answers `{"active": false}` and nothing more."""

from __future__ import annotations

from typing import Any, Final

from authsvc_client.v1 import authsvc_pb2 as pb
from starlette.requests import Request
from starlette.responses import Response

from authsvc_gateway.backend import AuthorityBackend
from authsvc_gateway.client_auth import ClientCredentials
from authsvc_gateway.forms import Params
from authsvc_gateway.routes.client_request import (
    answer_client_request,
    beyond_any_token,
    client_and_token,
    json_reply,
)
from authsvc_gateway.routes.revoke import token_type_hint

#: A client registered with this scope may introspect any client's tokens (a resource server);
#: any other client sees only its own.
INTROSPECT_ANY_SCOPE: Final = "authsvc:introspect"


class IntrospectionEndpoint:
    """Asks authsvc about a token on behalf of an authenticated client."""

    def __init__(self, backend: AuthorityBackend) -> None:
        self._backend = backend

    async def handle(self, request: Request) -> Response:
        """Answer RFC 7662 §2.2 JSON, or an RFC 6749 §5.2 error."""
        return await answer_client_request(request, self._respond)

    async def _respond(self, form: Params, credentials: ClientCredentials) -> Response:
        client, token = await client_and_token(self._backend, form, credentials, allow_public=False)
        if beyond_any_token(token):
            return json_reply({"active": False})
        reply = await self._backend.introspect(
            pb.IntrospectRequest(
                token=token,
                token_type_hint=token_type_hint(form),
                client_id="" if INTROSPECT_ANY_SCOPE in client.scopes else client.client_id,
            )
        )
        return json_reply(introspection_body(reply))


def introspection_body(reply: pb.IntrospectResponse) -> dict[str, Any]:
    """RFC 7662 §2.2 members. `token_type` is the RFC 6749 §5.1 type (Bearer, access tokens
    only); `token_use` says which kind of token it is, `sid` its family."""
    if not reply.active:
        return {"active": False}
    body: dict[str, Any] = {"active": True}
    if reply.scope:
        body["scope"] = " ".join(reply.scope)
    for name in ("client_id", "sub", "iss", "jti", "sid"):
        value = getattr(reply, name)
        if value:
            body[name] = value
    for name in ("exp", "iat", "nbf"):
        value = getattr(reply, name)
        if value:
            body[name] = value
    if reply.aud:
        body["aud"] = list(reply.aud)
    if reply.token_type == "access_token":  # noqa: S105 (a token kind, not a secret)
        body["token_type"] = "Bearer"  # noqa: S105
    if reply.token_type:
        body["token_use"] = reply.token_type
    return body
