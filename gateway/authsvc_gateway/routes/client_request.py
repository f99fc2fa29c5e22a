"""The envelope shared by the endpoints where a client authenticates (token, revoke, introspect):
a strict form, the client's credentials by exactly one method, and every failure answered as an
RFC 6749 §5.2 JSON error."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from authsvc_client import MAX_TOKEN_BYTES
from authsvc_client.v1 import authsvc_pb2 as pb
from starlette.requests import Request
from starlette.responses import Response

from authsvc_gateway.backend import AuthorityBackend
from authsvc_gateway.client_auth import (
    ClientCredentials,
    authenticate,
    challenge_for,
    client_credentials_from,
)
from authsvc_gateway.errors import InvalidRequest, OAuthError, error_response
from authsvc_gateway.forms import NO_PARAMS, Params, header, read_form
from authsvc_gateway.replies import NoStoreReply

Respond = Callable[[Params, ClientCredentials], Awaitable[Response]]


async def answer_client_request(request: Request, respond: Respond) -> Response:
    """Parse the form and the client credentials, then `respond`; errors become JSON replies.

    Parameters come in the body only. A query string is refused rather than ignored: what it
    would carry here is a client secret, a code or a token, which RFC 6749 §2.3.1 forbids in
    the request URI (it ends up in proxies' and servers' logs), and the client must learn it.
    """
    authorization = None
    form = NO_PARAMS
    try:
        authorization = header(request, b"authorization")
        if request.scope.get("query_string"):
            raise InvalidRequest("send the parameters in the form body, not in the URL")
        form = await read_form(request)
        return await respond(form, client_credentials_from(authorization, form))
    except OAuthError as error:
        challenge = challenge_for(authorization, form) if error.error == "invalid_client" else None
        return error_response(error, www_authenticate=challenge)


async def client_and_token(
    backend: AuthorityBackend,
    form: Params,
    credentials: ClientCredentials,
    *,
    allow_public: bool = True,
) -> tuple[pb.Client, str]:
    """The authenticated client, then the request's `token` (revocation, introspection). The
    client first (RFC 7009 §2.1): a caller who cannot authenticate learns nothing about its
    request, not even that it lacks a token."""
    client = await authenticate(backend, credentials, allow_public=allow_public)
    return client, form.require("token")


def json_reply(body: dict[str, Any]) -> Response:
    """A 200 JSON reply that no cache keeps (RFC 6749 §5.1)."""
    return NoStoreReply(json.dumps(body).encode())


def beyond_any_token(value: str) -> bool:
    """Whether `value` is longer than any token authsvc issues or accepts (MAX_TOKEN_BYTES), so
    unknown without asking it. authsvc's gRPC API refuses such a field as a malformed request;
    OAuth answers it as the unknown token it is: inactive (RFC 7662 §2.2), nothing to revoke
    (RFC 7009 §2.2), an invalid grant (RFC 6749 §5.2), whichever backend the gateway uses."""
    return len(value) > MAX_TOKEN_BYTES
