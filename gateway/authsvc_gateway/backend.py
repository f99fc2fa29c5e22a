"""The gateway's only way to authsvc: a small async interface, and its gRPC implementation.

`AuthorityBackend` is the seam. Its methods take and return the `authsvc.v1` messages and raise
`OAuthError`. The gRPC implementation rides on authsvc_client (the typed client and the service
credentials every other caller of authsvc uses) and turns its errors into the gateway's in one
place (`gateway_error`). An in-process implementation can sit behind the same seam.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol, TypeVar

import grpc
from authsvc_client import AsyncAuthClient, ServiceCredentials, is_local_target, refuses_bearer
from authsvc_client import AuthError as ClientAuthError
from authsvc_client.v1 import authsvc_pb2 as pb
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authsvc_gateway.config import GATEWAY_SCOPES, ConfigError, GatewayConfig
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

    async def deny_authorization(
        self, request: pb.DenyAuthorizationRequest, /
    ) -> pb.DenyAuthorizationResponse:
        """AuthorizationService.DenyAuthorization."""
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

    async def ready(self) -> bool:
        """Whether authsvc reports SERVING (grpc.health.v1): it and its database answer, and it
        is not shutting down. Never raises: an unreachable authsvc is simply not ready."""
        ...


def gateway_error(exc: ClientAuthError) -> OAuthError:
    """The gateway's error for what authsvc answered, by its OAuth code.

    The description travels only when authsvc wrote it: for an unreachable or failing authsvc
    the gRPC runtime's text (addresses, internals) stays in the logs.
    """
    if exc.error == "temporarily_unavailable":
        return TemporarilyUnavailable("authsvc is unavailable; try again shortly")
    if exc.error == "server_error":
        return ServerError("authsvc could not answer")
    return error_from_code(exc.error, exc.description, retry_after=exc.retry_after)


def refuses_our_credentials(exc: ClientAuthError) -> bool:
    """Did authsvc refuse the gateway's own bearer token (rather than what it was asked about)?

    The proto keeps these apart: only the caller's own credential answers UNAUTHENTICATED with
    invalid_token, and only a caller's missing permission answers insufficient_scope.
    """
    return refuses_bearer(exc) or exc.error == "insufficient_scope"


class GrpcBackend:
    """`AuthorityBackend` over authsvc_client's `AsyncAuthClient`, authenticated as the gateway.

    `ServiceCredentials` fetches the gateway's own client-credentials token, shares one fetch
    among concurrent calls and renews it at 80 % of its life. When authsvc refuses that token
    (revoked, or signed by a key since purged) the call is retried once with a fresh one.
    """

    def __init__(
        self,
        authenticated: AsyncAuthClient,
        anonymous: AsyncAuthClient,
        credentials: ServiceCredentials,
        health: health_pb2_grpc.HealthStub,
        timeout: float,
    ) -> None:
        self._client = authenticated
        self._anonymous = anonymous
        self._credentials = credentials
        self._health = health
        self._timeout = timeout

    @classmethod
    @asynccontextmanager
    async def connect(cls, config: GatewayConfig) -> AsyncIterator[GrpcBackend]:
        """A backend on fresh channels to `config.upstream` (TLS when a CA is configured),
        closed on exit. ServiceCredentials fetches on a thread, so it gets a sync channel."""
        transport = channel_credentials(config)
        if transport is None:
            token_channel = grpc.insecure_channel(config.upstream)
            channel = grpc.aio.insecure_channel(config.upstream)
        else:
            token_channel = grpc.secure_channel(config.upstream, transport)
            channel = grpc.aio.secure_channel(config.upstream, transport)
        credentials = ServiceCredentials(
            token_channel,
            client_id=config.client_id,
            client_secret=config.client_secret,
            scope=GATEWAY_SCOPES,
            audience=[config.audience],
            timeout=config.upstream_timeout,
        )
        try:
            async with channel:
                yield cls(
                    AsyncAuthClient(
                        channel, credentials=credentials, timeout=config.upstream_timeout
                    ),
                    AsyncAuthClient(channel, timeout=config.upstream_timeout),
                    credentials,
                    health_pb2_grpc.HealthStub(channel),
                    config.upstream_timeout,
                )
        finally:
            token_channel.close()

    async def authenticate_client(self, request: pb.AuthenticateClientRequest, /) -> pb.Client:
        return await self._call(
            lambda auth: auth.authenticate_client(request.client_id, request.client_secret)
        )

    async def get_client(self, request: pb.GetClientRequest, /) -> pb.Client:
        return await self._call(lambda auth: auth.get_client(request.client_id))

    async def authenticate_user(
        self, request: pb.AuthenticateUserRequest, /
    ) -> pb.AuthenticateUserResponse:
        return await self._call(
            lambda auth: auth.authenticate_user(
                request.username, request.password, client_ip=request.client_ip
            )
        )

    async def create_authorization_code(
        self, request: pb.CreateAuthorizationCodeRequest, /
    ) -> pb.AuthorizationCode:
        return await self._call(
            lambda auth: auth.create_authorization_code(
                client_id=request.client_id,
                redirect_uri=request.redirect_uri,
                subject=request.subject,
                code_challenge=request.code_challenge,
                scope=request.scope,
                audience=request.audience,
                code_challenge_method=request.code_challenge_method,
                device_id=request.device_id,
                redirect_uri_omitted=request.redirect_uri_omitted,
                authenticated_at=(
                    request.authenticated_at if request.HasField("authenticated_at") else None
                ),
            )
        )

    async def deny_authorization(
        self, request: pb.DenyAuthorizationRequest, /
    ) -> pb.DenyAuthorizationResponse:
        return await self._call(
            lambda auth: auth.deny_authorization(
                request.client_id, request.subject, request.code_challenge
            )
        )

    async def exchange_authorization_code(
        self, request: pb.ExchangeAuthorizationCodeRequest, /
    ) -> pb.TokenPair:
        return await self._call(
            lambda auth: auth.exchange_authorization_code(
                client_id=request.client_id,
                code=request.code,
                redirect_uri=request.redirect_uri,
                code_verifier=request.code_verifier,
                audience=request.audience,
            )
        )

    async def client_credentials(self, request: pb.ClientCredentialsRequest, /) -> pb.AccessToken:
        # Anonymous: the client's own secret is the credential (RFC 6749 §4.4).
        return await self._call(
            lambda auth: auth.client_credentials(
                request.client_id,
                request.client_secret,
                scope=request.scope,
                audience=request.audience,
            ),
            anonymous=True,
        )

    async def rotate(self, request: pb.RotateRequest, /) -> pb.TokenPair:
        return await self._call(
            lambda auth: auth.rotate(
                request.refresh_token, client_id=request.client_id, scope=request.scope
            )
        )

    async def revoke(self, request: pb.RevokeRequest, /) -> pb.RevokeResponse:
        return await self._call(
            lambda auth: auth.revoke(
                request.token,
                token_type_hint=request.token_type_hint,
                client_id=request.client_id,
            )
        )

    async def introspect(self, request: pb.IntrospectRequest, /) -> pb.IntrospectResponse:
        return await self._call(
            lambda auth: auth.introspect(
                request.token,
                token_type_hint=request.token_type_hint,
                client_id=request.client_id,
            )
        )

    async def publish_keys(self, request: pb.PublishKeysRequest, /) -> pb.PublishKeysResponse:
        return await self._call(lambda auth: auth.publish_keys(), anonymous=True)

    async def ready(self) -> bool:
        # The overall service (""): authsvc sets it with its own services.
        try:
            answer = await self._health.Check(
                health_pb2.HealthCheckRequest(), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            log.info("authsvc's health check failed: %s", exc.code().name)
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    async def _call(
        self, call: Callable[[AsyncAuthClient], Awaitable[Reply]], *, anonymous: bool = False
    ) -> Reply:
        if anonymous:
            try:
                return await call(self._anonymous)
            except ClientAuthError as exc:
                raise gateway_error(exc) from exc
        # One retry when authsvc refuses our own token; a second refusal is a misconfiguration,
        # not the caller's fault.
        for attempt in range(2):
            generation = await self._own_token()
            try:
                return await call(self._client)
            except ClientAuthError as exc:
                if not refuses_our_credentials(exc):
                    raise gateway_error(exc) from exc
                self._credentials.invalidate(generation)
                if attempt == 1:
                    log.error("authsvc refused the gateway's own token: %s", exc.error)
                    raise ServerError("the gateway is not allowed to call authsvc") from exc
        raise AssertionError("unreachable")

    async def _own_token(self) -> int:
        """Make sure a token is cached (so a failure to get one is never mistaken for the
        caller's), and answer its generation."""
        try:
            await self._credentials.token_async()
        except ClientAuthError as exc:
            if exc.error == "temporarily_unavailable":
                raise gateway_error(exc) from exc
            log.error("authsvc refused the gateway's own client credentials: %s", exc.error)
            raise ServerError("the gateway cannot authenticate to authsvc") from exc
        return self._credentials.generation


def channel_credentials(config: GatewayConfig) -> grpc.ChannelCredentials | None:
    """TLS credentials for the channel to authsvc, or None for plaintext: to an upstream on this
    machine, or to any with `upstream_plaintext` (a service mesh), since clients' secrets and
    users' passwords cross this channel."""
    if config.upstream_ca_file is None:
        if not (config.upstream_plaintext or is_local_target(config.upstream)):
            raise ConfigError(
                f"AUTHSVC_GATEWAY_UPSTREAM {config.upstream!r} is not on this machine: set "
                "AUTHSVC_GATEWAY_UPSTREAM_CA_FILE for TLS to authsvc, or "
                "AUTHSVC_GATEWAY_UPSTREAM_PLAINTEXT=true where a service mesh encrypts the hop"
            )
        return None
    certificate = key = None
    if config.upstream_cert_file is not None and config.upstream_key_file is not None:
        certificate = _read("AUTHSVC_GATEWAY_UPSTREAM_CERT_FILE", config.upstream_cert_file)
        key = _read("AUTHSVC_GATEWAY_UPSTREAM_KEY_FILE", config.upstream_key_file)
    return grpc.ssl_channel_credentials(
        root_certificates=_read("AUTHSVC_GATEWAY_UPSTREAM_CA_FILE", config.upstream_ca_file),
        private_key=key,
        certificate_chain=certificate,
    )


def _read(variable: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable}={path}: cannot read it ({exc.strerror or exc})") from exc
