"""POST /oauth/revoke (RFC 7009): a refresh token takes its family with it; unknown tokens are
answered 200 like revoked ones (§2.2), so the endpoint reveals nothing about them."""

from __future__ import annotations

from typing import Final

from authsvc_client.v1 import authsvc_pb2 as pb
from starlette.requests import Request
from starlette.responses import Response

from authsvc_gateway.backend import AuthorityBackend
from authsvc_gateway.client_auth import ClientCredentials
from authsvc_gateway.forms import Params
from authsvc_gateway.replies import NoStoreReply
from authsvc_gateway.routes.client_request import (
    answer_client_request,
    beyond_any_token,
    client_and_token,
)

#: RFC 7009 §2.1 hints; any other hint is ignored, as the server searches every kind anyway.
TOKEN_TYPE_HINTS: Final = frozenset({"access_token", "refresh_token"})


def token_type_hint(form: Params) -> str:
    """The `token_type_hint` if it is one authsvc knows, else "" (RFC 7009 §2.1, RFC 7662 §2.1)."""
    hint = form.single("token_type_hint") or ""
    return hint if hint in TOKEN_TYPE_HINTS else ""


class RevocationEndpoint:
    """Revokes a token the authenticated client holds; other clients' tokens are left alone."""

    def __init__(self, backend: AuthorityBackend) -> None:
        self._backend = backend

    async def handle(self, request: Request) -> Response:
        """Answer 200 with an empty body, or an RFC 6749 §5.2 error (RFC 7009 §2.2.1)."""
        return await answer_client_request(request, self._respond)

    async def _respond(self, form: Params, credentials: ClientCredentials) -> Response:
        client, token = await client_and_token(self._backend, form, credentials)
        if beyond_any_token(token):
            return NoStoreReply(json=False)
        await self._backend.revoke(
            pb.RevokeRequest(
                token=token, token_type_hint=token_type_hint(form), client_id=client.client_id
            )
        )
        return NoStoreReply(json=False)
