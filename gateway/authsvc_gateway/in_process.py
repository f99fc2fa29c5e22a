"""An `AuthorityBackend` that calls an `Authority` in the same process: no gRPC hop.

`authsvc serve` embeds the gateway this way (`AUTHSVC_GATEWAY_EMBEDDED`, on in dev): the gateway
still speaks only in authsvc.v1 messages and OAuth error codes, so it holds no token logic, but
each request saves a loopback round trip and its serialisation (about 1 ms of CPU per call,
measured in the gateway's notes). A standalone gateway uses `GrpcBackend` instead.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from authsvc_client.v1 import authsvc_pb2 as pb

from authsvc.authority import Authority
from authsvc.errors import AuthError
from authsvc.rpc.servicer import (
    access_token_message,
    authenticated_at,
    authentication_message,
    client_message,
    introspection_message,
    publish_keys_message,
    token_pair_message,
)
from authsvc.storage.records import ClientRecord
from authsvc_gateway.errors import error_from_code

Result = TypeVar("Result")
MAX_CLIENT_MESSAGES = 10_000


async def _translated(call: Awaitable[Result]) -> Result:
    """The domain's error, as the gateway's error with the same OAuth code."""
    try:
        return await call
    except AuthError as exc:
        raise error_from_code(exc.code, exc.description, retry_after=exc.retry_after) from exc


class InProcessBackend:
    """The gateway's seam, implemented by direct calls on the domain."""

    def __init__(self, authority: Authority) -> None:
        self._authority = authority
        # The message of each client's current record: authsvc hands back the same record object
        # while it remembers the client's authentication, so the message is built once per record.
        self._client_messages: dict[str, tuple[ClientRecord, pb.Client]] = {}

    async def authenticate_client(self, request: pb.AuthenticateClientRequest, /) -> pb.Client:
        client = await _translated(
            self._authority.authenticate_client(request.client_id, request.client_secret)
        )
        known = self._client_messages.get(client.client_id)
        if known is not None and known[0] is client:
            return known[1]
        if len(self._client_messages) >= MAX_CLIENT_MESSAGES:
            self._client_messages.clear()
        message = client_message(client)
        self._client_messages[client.client_id] = (client, message)
        return message

    async def get_client(self, request: pb.GetClientRequest, /) -> pb.Client:
        return client_message(await _translated(self._authority.get_client(request.client_id)))

    async def authenticate_user(
        self, request: pb.AuthenticateUserRequest, /
    ) -> pb.AuthenticateUserResponse:
        authentication = await _translated(
            self._authority.authenticate_user(
                request.username, request.password, client_ip=request.client_ip
            )
        )
        return authentication_message(authentication)

    async def create_authorization_code(
        self, request: pb.CreateAuthorizationCodeRequest, /
    ) -> pb.AuthorizationCode:
        issued = await _translated(
            self._authority.create_authorization_code(
                client_id=request.client_id,
                redirect_uri=request.redirect_uri,
                subject=request.subject,
                scope=request.scope,
                audience=request.audience,
                code_challenge=request.code_challenge,
                code_challenge_method=request.code_challenge_method,
                device_id=request.device_id,
                redirect_uri_omitted=request.redirect_uri_omitted,
                authenticated_at=authenticated_at(request),
            )
        )
        return pb.AuthorizationCode(code=issued.code, expires_in=issued.expires_in)

    async def deny_authorization(
        self, request: pb.DenyAuthorizationRequest, /
    ) -> pb.DenyAuthorizationResponse:
        await _translated(
            self._authority.deny_authorization(
                client_id=request.client_id,
                subject=request.subject,
                code_challenge=request.code_challenge,
            )
        )
        return pb.DenyAuthorizationResponse()

    async def exchange_authorization_code(
        self, request: pb.ExchangeAuthorizationCodeRequest, /
    ) -> pb.TokenPair:
        pair = await _translated(
            self._authority.exchange_authorization_code(
                client_id=request.client_id,
                code=request.code,
                redirect_uri=request.redirect_uri,
                code_verifier=request.code_verifier,
                audience=request.audience,
            )
        )
        return token_pair_message(pair)

    async def client_credentials(self, request: pb.ClientCredentialsRequest, /) -> pb.AccessToken:
        issued = await _translated(
            self._authority.client_credentials(
                client_id=request.client_id,
                client_secret=request.client_secret,
                scope=request.scope,
                audience=request.audience,
            )
        )
        return access_token_message(issued)

    async def rotate(self, request: pb.RotateRequest, /) -> pb.TokenPair:
        pair = await _translated(
            self._authority.rotate(
                request.refresh_token, client_id=request.client_id, scope=request.scope
            )
        )
        return token_pair_message(pair)

    async def revoke(self, request: pb.RevokeRequest, /) -> pb.RevokeResponse:
        await _translated(
            self._authority.revoke(
                request.token, client_id=request.client_id, token_type_hint=request.token_type_hint
            )
        )
        return pb.RevokeResponse()

    async def introspect(self, request: pb.IntrospectRequest, /) -> pb.IntrospectResponse:
        result = await _translated(
            self._authority.introspect(request.token, client_id=request.client_id)
        )
        return introspection_message(result)

    async def publish_keys(self, request: pb.PublishKeysRequest, /) -> pb.PublishKeysResponse:
        return publish_keys_message(self._authority)

    async def ready(self) -> bool:
        return self._authority.health.verdict.serving
