"""The gateway's only way to authsvc: a small async interface, and its gRPC implementation.

`AuthorityBackend` is the seam. Its methods take and return the `authsvc.v1` messages and raise
`OAuthError`; the gRPC implementation translates `grpc.aio.AioRpcError` into those errors in one
place (`error_from_rpc`). An in-process implementation can sit behind the same seam.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Protocol, TypeVar

import grpc
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_client.v1 import authsvc_pb2_grpc as pb_grpc
from google.protobuf.message import Message

from authsvc_gateway.config import GATEWAY_SCOPES, GatewayConfig
from authsvc_gateway.errors import (
    OAuthError,
    ServerError,
    TemporarilyUnavailable,
    error_from_code,
)

log = logging.getLogger(__name__)

Reply = TypeVar("Reply", bound=Message)


class AuthorityBackend(Protocol):
    """What the gateway asks of authsvc. Every method raises `OAuthError` on failure."""

    async def authenticate_client(self, request: pb.AuthenticateClientRequest, /) -> pb.Client:
        """AuthorizationService.AuthenticateClient."""
        ...

    async def get_client(self, request: pb.GetClientRequest, /) -> pb.Client:
        """AuthorizationService.GetClient."""
        ...

    async def authenticate_user(
        self, request: pb.AuthenticateUserRequest, /
    ) -> pb.AuthenticateUserResponse:
        """AuthorizationService.AuthenticateUser."""
        ...

    async def create_authorization_code(
        self, request: pb.CreateAuthorizationCodeRequest, /
    ) -> pb.AuthorizationCode:
        """AuthorizationService.CreateAuthorizationCode."""
        ...

    async def exchange_authorization_code(
        self, request: pb.ExchangeAuthorizationCodeRequest, /
    ) -> pb.TokenPair:
        """AuthorizationService.ExchangeAuthorizationCode."""
        ...

    async def client_credentials(self, request: pb.ClientCredentialsRequest, /) -> pb.AccessToken:
        """TokenService.ClientCredentials."""
        ...

    async def rotate(self, request: pb.RotateRequest, /) -> pb.TokenPair:
        """TokenService.Rotate."""
        ...

    async def revoke(self, request: pb.RevokeRequest, /) -> pb.RevokeResponse:
        """TokenService.Revoke."""
        ...

    async def introspect(self, request: pb.IntrospectRequest, /) -> pb.IntrospectResponse:
        """TokenService.Introspect."""
        ...

    async def publish_keys(self, request: pb.PublishKeysRequest, /) -> pb.PublishKeysResponse:
        """TokenService.PublishKeys."""
        ...


#: When authsvc answers without an `oauth-error` (it always sends one; a proxy or the gRPC
#: runtime may not), the status alone decides.
_ERROR_FOR_STATUS: Final[Mapping[grpc.StatusCode, type[OAuthError]]] = MappingProxyType(
    {
        grpc.StatusCode.UNAVAILABLE: TemporarilyUnavailable,
        grpc.StatusCode.DEADLINE_EXCEEDED: TemporarilyUnavailable,
        grpc.StatusCode.RESOURCE_EXHAUSTED: TemporarilyUnavailable,
        grpc.StatusCode.CANCELLED: TemporarilyUnavailable,
    }
)


def error_from_rpc(exc: grpc.aio.AioRpcError) -> OAuthError:
    """The OAuth error a failed authsvc call stands for (trailing metadata `oauth-error`)."""
    trailers = _metadata(exc.trailing_metadata())
    code = trailers.get("oauth-error")
    if code:
        return error_from_code(code, trailers.get("oauth-error-description", ""))
    return _ERROR_FOR_STATUS.get(exc.code(), ServerError)("authsvc could not answer")


def refuses_our_credentials(exc: grpc.aio.AioRpcError) -> bool:
    """Did authsvc refuse the gateway's own bearer token (rather than what it was asked about)?

    The proto keeps these apart: only the caller's own credential answers UNAUTHENTICATED with
    invalid_token, and only a caller's missing permission answers insufficient_scope.
    """
    code = _metadata(exc.trailing_metadata()).get("oauth-error")
    return (exc.code() is grpc.StatusCode.UNAUTHENTICATED and code == "invalid_token") or (
        code == "insufficient_scope"
    )


@dataclass
class ServiceToken:
    """The gateway's own client-credentials token, fetched when needed and renewed early.

    It is renewed once 80 % of its lifetime has passed, so a call never leaves with a token
    about to expire; `discard` drops it when authsvc refuses it (a key rotation, a revocation).
    """

    fetch: Callable[[], Awaitable[pb.AccessToken]]
    clock: Callable[[], float] = time.monotonic
    _value: str = field(default="", repr=False)
    _renew_at: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def bearer(self) -> str:
        """A valid access token for the gateway itself."""
        if self._value and self.clock() < self._renew_at:
            return self._value
        async with self._lock:
            if not self._value or self.clock() >= self._renew_at:
                started = self.clock()
                token = await self.fetch()
                self._value = token.access_token
                self._renew_at = started + 0.8 * max(token.expires_in, 0)
        return self._value

    def discard(self, refused: str) -> None:
        """Forget `refused` so that the next call fetches a new token."""
        if self._value == refused:
            self._value = ""


class GrpcBackend:
    """`AuthorityBackend` over a gRPC channel, authenticated with the gateway's own token."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        config: GatewayConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # The generated stubs are untyped; `_call` checks the type of each reply instead.
        self._tokens = pb_grpc.TokenServiceStub(channel)
        self._authorization = pb_grpc.AuthorizationServiceStub(channel)
        self._timeout = config.upstream_timeout
        own = pb.ClientCredentialsRequest(
            client_id=config.client_id,
            client_secret=config.client_secret,
            scope=list(GATEWAY_SCOPES),
            audience=[config.audience],
        )
        self._token = ServiceToken(lambda: self._own_token(own), clock)

    @classmethod
    @asynccontextmanager
    async def connect(cls, config: GatewayConfig) -> AsyncIterator[GrpcBackend]:
        """A backend on a fresh channel to `config.upstream` (TLS when a CA is configured),
        closed on exit."""
        credentials = channel_credentials(config)
        channel = (
            grpc.aio.secure_channel(config.upstream, credentials)
            if credentials is not None
            else grpc.aio.insecure_channel(config.upstream)
        )
        async with channel:
            yield cls(channel, config)

    async def authenticate_client(self, request: pb.AuthenticateClientRequest, /) -> pb.Client:
        return await self._call(self._authorization.AuthenticateClient, request, pb.Client)

    async def get_client(self, request: pb.GetClientRequest, /) -> pb.Client:
        return await self._call(self._authorization.GetClient, request, pb.Client)

    async def authenticate_user(
        self, request: pb.AuthenticateUserRequest, /
    ) -> pb.AuthenticateUserResponse:
        return await self._call(
            self._authorization.AuthenticateUser, request, pb.AuthenticateUserResponse
        )

    async def create_authorization_code(
        self, request: pb.CreateAuthorizationCodeRequest, /
    ) -> pb.AuthorizationCode:
        return await self._call(
            self._authorization.CreateAuthorizationCode, request, pb.AuthorizationCode
        )

    async def exchange_authorization_code(
        self, request: pb.ExchangeAuthorizationCodeRequest, /
    ) -> pb.TokenPair:
        return await self._call(
            self._authorization.ExchangeAuthorizationCode, request, pb.TokenPair
        )

    async def client_credentials(self, request: pb.ClientCredentialsRequest, /) -> pb.AccessToken:
        # Anonymous: the client's own secret is the credential (RFC 6749 §4.4).
        return await self._call(
            self._tokens.ClientCredentials, request, pb.AccessToken, anonymous=True
        )

    async def rotate(self, request: pb.RotateRequest, /) -> pb.TokenPair:
        return await self._call(self._tokens.Rotate, request, pb.TokenPair)

    async def revoke(self, request: pb.RevokeRequest, /) -> pb.RevokeResponse:
        return await self._call(self._tokens.Revoke, request, pb.RevokeResponse)

    async def introspect(self, request: pb.IntrospectRequest, /) -> pb.IntrospectResponse:
        return await self._call(self._tokens.Introspect, request, pb.IntrospectResponse)

    async def publish_keys(self, request: pb.PublishKeysRequest, /) -> pb.PublishKeysResponse:
        return await self._call(
            self._tokens.PublishKeys, request, pb.PublishKeysResponse, anonymous=True
        )

    async def _own_token(self, request: pb.ClientCredentialsRequest) -> pb.AccessToken:
        try:
            reply: pb.AccessToken = await self._tokens.ClientCredentials(
                request, timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            error = error_from_rpc(exc)
            if isinstance(error, TemporarilyUnavailable):
                raise error from exc
            log.error("authsvc refused the gateway's own client credentials: %s", error.error)
            raise ServerError("the gateway cannot authenticate to authsvc") from exc
        return reply

    async def _call(
        self, method: Any, request: Message, reply_type: type[Reply], *, anonymous: bool = False
    ) -> Reply:
        # One retry when authsvc refuses our own token: it may have been revoked or signed by a
        # key that has since gone; a second refusal is a misconfiguration, not the caller's fault.
        for attempt in range(2):
            bearer = "" if anonymous else await self._token.bearer()
            metadata = () if anonymous else (("authorization", f"Bearer {bearer}"),)
            try:
                reply = await method(request, metadata=metadata, timeout=self._timeout)
            except grpc.aio.AioRpcError as exc:
                if anonymous or not refuses_our_credentials(exc):
                    raise error_from_rpc(exc) from exc
                self._token.discard(bearer)
                if attempt == 1:
                    log.error("authsvc refused the gateway's own token: %s", exc.details())
                    raise ServerError("the gateway is not allowed to call authsvc") from exc
                continue
            if not isinstance(reply, reply_type):
                raise ServerError("authsvc answered with an unexpected message")
            return reply
        raise AssertionError("unreachable")


def channel_credentials(config: GatewayConfig) -> grpc.ChannelCredentials | None:
    """TLS credentials for the channel to authsvc, or None for plaintext (loopback, dev)."""
    if config.upstream_ca_file is None:
        return None
    certificate = key = None
    if config.upstream_cert_file is not None and config.upstream_key_file is not None:
        certificate = config.upstream_cert_file.read_bytes()
        key = config.upstream_key_file.read_bytes()
    return grpc.ssl_channel_credentials(
        root_certificates=config.upstream_ca_file.read_bytes(),
        private_key=key,
        certificate_chain=certificate,
    )


def _metadata(items: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in items or ():
        if isinstance(value, str):
            found[key] = value
    return found
