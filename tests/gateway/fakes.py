"""An in-memory AuthorityBackend for unit tests of the HTTP edge (never for end-to-end tests)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_gateway.errors import InvalidClient, InvalidGrant, InvalidRequest, OAuthError
from google.protobuf.message import Message

JWKS_JSON = '{"keys":[]}'


@dataclass
class FakeBackend:
    """Clients and users in dicts; every call recorded; `failure` makes every call raise;
    `serving` is what authsvc's health would say."""

    clients: dict[str, tuple[pb.Client, str]] = field(default_factory=dict)
    users: dict[str, tuple[str, str]] = field(default_factory=dict)
    calls: list[tuple[str, Message]] = field(default_factory=list)
    failure: OAuthError | None = None
    max_age_seconds: int = 300
    serving: bool = True  # what `ready()` answers

    def add_client(self, client_id: str, secret: str = "", **fields: object) -> pb.Client:
        client = pb.Client(client_id=client_id, public=not secret, **fields)  # type: ignore[arg-type]
        self.clients[client_id] = (client, secret)
        return client

    def _called(self, name: str, request: Message) -> None:
        self.calls.append((name, request))
        if self.failure is not None:
            raise self.failure

    def called(self, name: str) -> list[Message]:
        return [request for called, request in self.calls if called == name]

    async def authenticate_client(self, request: pb.AuthenticateClientRequest, /) -> pb.Client:
        self._called("authenticate_client", request)
        client, secret = self.clients.get(request.client_id, (None, ""))
        if client is None or not hmac.compare_digest(secret, request.client_secret):
            raise InvalidClient("client authentication failed")
        return client

    async def get_client(self, request: pb.GetClientRequest, /) -> pb.Client:
        self._called("get_client", request)
        if request.client_id not in self.clients:
            raise InvalidRequest("not found")
        return self.clients[request.client_id][0]

    async def authenticate_user(
        self, request: pb.AuthenticateUserRequest, /
    ) -> pb.AuthenticateUserResponse:
        self._called("authenticate_user", request)
        password, subject = self.users.get(request.username, ("", ""))
        if not subject or password != request.password:
            raise InvalidGrant("invalid credentials")
        return pb.AuthenticateUserResponse(subject=subject)

    async def create_authorization_code(
        self, request: pb.CreateAuthorizationCodeRequest, /
    ) -> pb.AuthorizationCode:
        self._called("create_authorization_code", request)
        return pb.AuthorizationCode(code="asac_fake", expires_in=60)

    async def deny_authorization(
        self, request: pb.DenyAuthorizationRequest, /
    ) -> pb.DenyAuthorizationResponse:
        self._called("deny_authorization", request)
        return pb.DenyAuthorizationResponse()

    async def exchange_authorization_code(
        self, request: pb.ExchangeAuthorizationCodeRequest, /
    ) -> pb.TokenPair:
        self._called("exchange_authorization_code", request)
        return _pair()

    async def client_credentials(self, request: pb.ClientCredentialsRequest, /) -> pb.AccessToken:
        self._called("client_credentials", request)
        await self.authenticate_client(
            pb.AuthenticateClientRequest(
                client_id=request.client_id, client_secret=request.client_secret
            )
        )
        return pb.AccessToken(
            access_token="at", token_type="Bearer", expires_in=600, scope=list(request.scope)
        )

    async def rotate(self, request: pb.RotateRequest, /) -> pb.TokenPair:
        self._called("rotate", request)
        return _pair()

    async def revoke(self, request: pb.RevokeRequest, /) -> pb.RevokeResponse:
        self._called("revoke", request)
        return pb.RevokeResponse()

    async def introspect(self, request: pb.IntrospectRequest, /) -> pb.IntrospectResponse:
        self._called("introspect", request)
        return pb.IntrospectResponse(active=False)

    async def publish_keys(self, request: pb.PublishKeysRequest, /) -> pb.PublishKeysResponse:
        self._called("publish_keys", request)
        return pb.PublishKeysResponse(jwks_json=JWKS_JSON, max_age_seconds=self.max_age_seconds)

    async def ready(self) -> bool:
        return self.serving


def _pair() -> pb.TokenPair:
    return pb.TokenPair(
        access_token="at",
        token_type="Bearer",
        expires_in=600,
        refresh_token="asrt_fake",
        scope=["read"],
    )
