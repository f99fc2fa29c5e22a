"""Typed clients for every authsvc RPC: `AuthClient` (blocking) and `AsyncAuthClient` (asyncio).

The two are twins: same method names, same keyword arguments, same return types (the generated
protobuf messages of `authsvc_client.v1.authsvc_pb2`). A failed call raises an `AuthError`
subclass carrying the OAuth code the server sent; the mapping lives in `_errors.from_rpc_error`.

A caller authenticates with a `ServiceCredentials` (client-credentials tokens, fetched and renewed
for it) or a fixed `access_token`; `ClientCredentials` and `PublishKeys` need neither. When
authsvc refuses a `ServiceCredentials` token (revoked, its signing key purged), the call raises
`InvalidToken` and the token is dropped, so the next call fetches a fresh one. The call is not
retried here: whoever makes it decides that (the gateway's backend retries once and treats a
second refusal as its own misconfiguration), and `RetryOnUnauthenticated` does it for channels.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from ._channels import aio_plaintext_channel, plaintext_channel
from ._errors import AuthError, from_rpc_error, refuses_bearer
from .v1 import authsvc_pb2 as pb
from .v1 import authsvc_pb2_grpc

if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp

    from ._credentials import ServiceCredentials

__all__ = ["AsyncAuthClient", "AuthClient"]

_R = TypeVar("_R")
_Metadata = tuple[tuple[str, str], ...]


def _generation(credentials: ServiceCredentials | None) -> int:
    """The generation of the token just put in a call's metadata (read after it: at worst a
    newer one, so a refusal drops a token too many, never one too few)."""
    return credentials.generation if credentials is not None else 0


def _call_error(
    credentials: ServiceCredentials | None, exc: grpc.RpcError, generation: int
) -> AuthError:
    """The AuthError a failed call raises. When it refused the caller's own token, that token
    is dropped (if it is still the cached one), so the next call fetches a fresh one; a wrong
    client secret in the request (`invalid_client`) says nothing about it."""
    error = from_rpc_error(exc)
    if credentials is not None and refuses_bearer(error):
        credentials.invalidate(generation)
    return error


def _stubs(channel: grpc.Channel | grpc.aio.Channel) -> tuple[Any, Any]:
    """The generated stubs (untyped: grpcio-tools writes no stubs for them); each client method
    names the reply type it returns."""
    tokens = authsvc_pb2_grpc.TokenServiceStub(channel)
    authorization = authsvc_pb2_grpc.AuthorizationServiceStub(channel)
    return tokens, authorization


class AuthClient:
    """Blocking client for authsvc's TokenService and AuthorizationService.

    with AuthClient.connect("127.0.0.1:50051", credentials=creds) as auth:
        auth.revoke_family(family_id, reason="user logged out")
    """

    def __init__(
        self,
        channel: grpc.Channel,
        *,
        credentials: ServiceCredentials | None = None,
        access_token: str | None = None,
        timeout: float | None = 10.0,
    ) -> None:
        self._channel = channel
        self._owns_channel = False
        self._credentials = credentials
        self._access_token = access_token
        self._timeout = timeout
        self._tokens, self._authorization = _stubs(channel)

    @classmethod
    def connect(cls, target: str, *, plaintext: bool = False, **options: Any) -> AuthClient:
        """A client on its own plaintext channel to `target`, closed by `close()`: a target on
        this machine, or any with `plaintext=True` (`authsvc_client._channels`). For TLS, build
        the channel with `grpc.secure_channel` and pass it to the constructor."""
        client = cls(plaintext_channel(target, plaintext), **options)
        client._owns_channel = True
        return client

    def close(self) -> None:
        """Close the channel if this client opened it."""
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> AuthClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # TokenService

    def issue_token_pair(
        self,
        subject: str,
        client_id: str,
        *,
        scope: Sequence[str] = (),
        audience: Sequence[str] = (),
        device_id: str = "",
    ) -> pb.TokenPair:
        """Mint a user token pair in a new family for one device (needs `authsvc:issue`)."""
        request = pb.IssueTokenPairRequest(
            subject=subject,
            client_id=client_id,
            scope=scope,
            audience=audience,
            device_id=device_id,
        )
        return self._unary(self._tokens.IssueTokenPair, request, pb.TokenPair)

    def rotate(
        self, refresh_token: str, *, client_id: str = "", scope: Sequence[str] = ()
    ) -> pb.TokenPair:
        """Trade a refresh token for the next pair in its family (RFC 6749 §6; needs
        `authsvc:issue`, and `client_id` binds it to the client it was issued to)."""
        request = pb.RotateRequest(refresh_token=refresh_token, client_id=client_id, scope=scope)
        return self._unary(self._tokens.Rotate, request, pb.TokenPair)

    def verify(
        self, token: str, audience: str, *, required_scopes: Sequence[str] = ()
    ) -> pb.VerifyResponse:
        """Have authsvc verify an access token, revocation state included."""
        request = pb.VerifyRequest(token=token, audience=audience, required_scopes=required_scopes)
        return self._unary(self._tokens.Verify, request, pb.VerifyResponse)

    def introspect(
        self, token: str, *, token_type_hint: str = "", client_id: str = ""
    ) -> pb.IntrospectResponse:
        """RFC 7662 introspection of an access or refresh token (needs `authsvc:introspect`)."""
        request = pb.IntrospectRequest(
            token=token, token_type_hint=token_type_hint, client_id=client_id
        )
        return self._unary(self._tokens.Introspect, request, pb.IntrospectResponse)

    def revoke_family(self, family_id: str, *, reason: str = "") -> pb.RevokeFamilyResponse:
        """Revoke one login session (needs `authsvc:revoke`)."""
        request = pb.RevokeFamilyRequest(family_id=family_id, reason=reason)
        return self._unary(self._tokens.RevokeFamily, request, pb.RevokeFamilyResponse)

    def publish_keys(self) -> pb.PublishKeysResponse:
        """The public keys as a JWK Set (RFC 7517), with how long they may be cached."""
        return self._unary(
            self._tokens.PublishKeys, pb.PublishKeysRequest(), pb.PublishKeysResponse
        )

    def client_credentials(
        self,
        client_id: str,
        client_secret: str,
        *,
        scope: Sequence[str] = (),
        audience: Sequence[str] = (),
    ) -> pb.AccessToken:
        """The client-credentials grant (RFC 6749 §4.4): an access token for a service."""
        request = pb.ClientCredentialsRequest(
            client_id=client_id, client_secret=client_secret, scope=scope, audience=audience
        )
        return self._unary(self._tokens.ClientCredentials, request, pb.AccessToken)

    def revoke(
        self, token: str, *, token_type_hint: str = "", client_id: str = ""
    ) -> pb.RevokeResponse:
        """Revoke one token, RFC 7009 semantics (needs `authsvc:revoke`)."""
        request = pb.RevokeRequest(
            token=token, token_type_hint=token_type_hint, client_id=client_id
        )
        return self._unary(self._tokens.Revoke, request, pb.RevokeResponse)

    def revoke_subject(self, subject: str, *, reason: str = "") -> pb.RevokeSubjectResponse:
        """Log a subject out everywhere (needs `authsvc:revoke`)."""
        request = pb.RevokeSubjectRequest(subject=subject, reason=reason)
        return self._unary(self._tokens.RevokeSubject, request, pb.RevokeSubjectResponse)

    def revoke_client(
        self, client_id: str, *, reason: str = "", disable: bool = False
    ) -> pb.RevokeClientResponse:
        """Revoke every token of a client, optionally disabling it (needs `authsvc:admin`)."""
        request = pb.RevokeClientRequest(client_id=client_id, reason=reason, disable=disable)
        return self._unary(self._tokens.RevokeClient, request, pb.RevokeClientResponse)

    def list_sessions(self, subject: str) -> pb.ListSessionsResponse:
        """A subject's live sessions, one per device (needs `authsvc:sessions`)."""
        return self._unary(
            self._tokens.ListSessions,
            pb.ListSessionsRequest(subject=subject),
            pb.ListSessionsResponse,
        )

    def watch_revocations(
        self, cursor: int = 0, *, stream_id: str = ""
    ) -> Iterator[pb.RevocationEvent]:
        """Revocations and key changes in order from `cursor` (0 replays those in force).

        Resume with the `cursor` and `stream_id` of the last event seen. An `AuthError` with
        status OUT_OF_RANGE means authsvc's database no longer has that cursor (reset, replaced,
        restored): start again from 0 without a stream id, keeping what you know.
        """
        request = pb.WatchRevocationsRequest(cursor=cursor, stream_id=stream_id)
        metadata, generation = self._metadata(), _generation(self._credentials)
        call = self._tokens.WatchRevocations(request, metadata=metadata)
        try:
            yield from call
        except grpc.RpcError as exc:
            raise _call_error(self._credentials, exc, generation) from exc
        finally:
            call.cancel()

    def rotate_keys(self, *, immediate: bool = False) -> pb.RotateKeysResponse:
        """Start a key rotation now (needs `authsvc:admin`); `immediate` activates the next key
        without waiting one JWKS cache lifetime (for a compromised key)."""
        request = pb.RotateKeysRequest(immediate=immediate)
        return self._unary(self._tokens.RotateKeys, request, pb.RotateKeysResponse)

    # AuthorizationService

    def authenticate_client(self, client_id: str, client_secret: str = "") -> pb.Client:
        """Check an OAuth client's credentials (needs `authsvc:gateway`)."""
        request = pb.AuthenticateClientRequest(client_id=client_id, client_secret=client_secret)
        return self._unary(self._authorization.AuthenticateClient, request, pb.Client)

    def get_client(self, client_id: str) -> pb.Client:
        """A client's public registration (needs `authsvc:gateway`)."""
        request = pb.GetClientRequest(client_id=client_id)
        return self._unary(self._authorization.GetClient, request, pb.Client)

    def authenticate_user(
        self, username: str, password: str, *, client_ip: str = ""
    ) -> pb.AuthenticateUserResponse:
        """Check a user's password (needs `authsvc:gateway`), counting a failure against the
        account and `client_ip`; `TooManyAttempts` over the limit."""
        request = pb.AuthenticateUserRequest(
            username=username, password=password, client_ip=client_ip
        )
        return self._unary(
            self._authorization.AuthenticateUser, request, pb.AuthenticateUserResponse
        )

    def create_authorization_code(
        self,
        client_id: str,
        redirect_uri: str,
        subject: str,
        code_challenge: str,
        *,
        scope: Sequence[str] = (),
        audience: Sequence[str] = (),
        code_challenge_method: str = "S256",
        device_id: str = "",
        redirect_uri_omitted: bool = False,
        authenticated_at: Timestamp | None = None,
    ) -> pb.AuthorizationCode:
        """Store a single-use authorization code (RFC 6749 §4.1.2, RFC 7636 §4.4).
        `redirect_uri_omitted`: the authorization request named no redirect URI, and
        `redirect_uri` is the client's only one (OAuth 2.1 §4.1.1). `authenticated_at`: the
        user's `authenticate_user` reply's; a revocation since then answers `AccessDenied`."""
        request = pb.CreateAuthorizationCodeRequest(
            client_id=client_id,
            redirect_uri=redirect_uri,
            subject=subject,
            scope=scope,
            audience=audience,
            code_challenge=code_challenge,
            code_challenge_method=code_challenge_method,
            device_id=device_id,
            redirect_uri_omitted=redirect_uri_omitted,
            authenticated_at=authenticated_at,
        )
        return self._unary(
            self._authorization.CreateAuthorizationCode, request, pb.AuthorizationCode
        )

    def deny_authorization(
        self, client_id: str, subject: str, code_challenge: str
    ) -> pb.DenyAuthorizationResponse:
        """Record the user's Deny of the authorization request `code_challenge` names (RFC 6749
        §4.1.2.1): no code is created for it afterwards, and an unused one is voided."""
        request = pb.DenyAuthorizationRequest(
            client_id=client_id, subject=subject, code_challenge=code_challenge
        )
        return self._unary(
            self._authorization.DenyAuthorization, request, pb.DenyAuthorizationResponse
        )

    def exchange_authorization_code(
        self,
        client_id: str,
        code: str,
        redirect_uri: str,
        code_verifier: str,
        *,
        audience: Sequence[str] = (),
    ) -> pb.TokenPair:
        """Redeem a code with its PKCE verifier (RFC 6749 §4.1.3, RFC 7636 §4.6). `audience`:
        the access token's, among the code's (RFC 8707 §2.2); another raises `InvalidTarget`."""
        request = pb.ExchangeAuthorizationCodeRequest(
            client_id=client_id,
            code=code,
            redirect_uri=redirect_uri,
            code_verifier=code_verifier,
            audience=audience,
        )
        return self._unary(self._authorization.ExchangeAuthorizationCode, request, pb.TokenPair)

    def _unary(self, method: Any, request: object, reply: type[_R]) -> _R:
        metadata, generation = self._metadata(), _generation(self._credentials)
        try:
            answer: _R = method(request, metadata=metadata, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise _call_error(self._credentials, exc, generation) from exc
        return answer

    def _metadata(self) -> _Metadata:
        if self._credentials is not None:
            return (("authorization", f"Bearer {self._credentials.token()}"),)
        if self._access_token:
            return (("authorization", f"Bearer {self._access_token}"),)
        return ()


class AsyncAuthClient:
    """Asyncio client for authsvc's TokenService and AuthorizationService.

    async with AsyncAuthClient.connect("127.0.0.1:50051", credentials=creds) as auth:
        await auth.revoke_family(family_id, reason="user logged out")
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        credentials: ServiceCredentials | None = None,
        access_token: str | None = None,
        timeout: float | None = 10.0,
    ) -> None:
        self._channel = channel
        self._owns_channel = False
        self._credentials = credentials
        self._access_token = access_token
        self._timeout = timeout
        self._tokens, self._authorization = _stubs(channel)

    @classmethod
    def connect(cls, target: str, *, plaintext: bool = False, **options: Any) -> AsyncAuthClient:
        """A client on its own plaintext channel to `target`, closed by `close()`: a target on
        this machine, or any with `plaintext=True` (`authsvc_client._channels`). For TLS, build
        the channel with `grpc.aio.secure_channel` and pass it to the constructor."""
        client = cls(aio_plaintext_channel(target, plaintext), **options)
        client._owns_channel = True
        return client

    async def close(self) -> None:
        """Close the channel if this client opened it."""
        if self._owns_channel:
            await self._channel.close(None)

    async def __aenter__(self) -> AsyncAuthClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # TokenService

    async def issue_token_pair(
        self,
        subject: str,
        client_id: str,
        *,
        scope: Sequence[str] = (),
        audience: Sequence[str] = (),
        device_id: str = "",
    ) -> pb.TokenPair:
        """Mint a user token pair in a new family for one device (needs `authsvc:issue`)."""
        request = pb.IssueTokenPairRequest(
            subject=subject,
            client_id=client_id,
            scope=scope,
            audience=audience,
            device_id=device_id,
        )
        return await self._unary(self._tokens.IssueTokenPair, request, pb.TokenPair)

    async def rotate(
        self, refresh_token: str, *, client_id: str = "", scope: Sequence[str] = ()
    ) -> pb.TokenPair:
        """Trade a refresh token for the next pair in its family (RFC 6749 §6; needs
        `authsvc:issue`, and `client_id` binds it to the client it was issued to)."""
        request = pb.RotateRequest(refresh_token=refresh_token, client_id=client_id, scope=scope)
        return await self._unary(self._tokens.Rotate, request, pb.TokenPair)

    async def verify(
        self, token: str, audience: str, *, required_scopes: Sequence[str] = ()
    ) -> pb.VerifyResponse:
        """Have authsvc verify an access token, revocation state included."""
        request = pb.VerifyRequest(token=token, audience=audience, required_scopes=required_scopes)
        return await self._unary(self._tokens.Verify, request, pb.VerifyResponse)

    async def introspect(
        self, token: str, *, token_type_hint: str = "", client_id: str = ""
    ) -> pb.IntrospectResponse:
        """RFC 7662 introspection of an access or refresh token (needs `authsvc:introspect`)."""
        request = pb.IntrospectRequest(
            token=token, token_type_hint=token_type_hint, client_id=client_id
        )
        return await self._unary(self._tokens.Introspect, request, pb.IntrospectResponse)

    async def revoke_family(self, family_id: str, *, reason: str = "") -> pb.RevokeFamilyResponse:
        """Revoke one login session (needs `authsvc:revoke`)."""
        request = pb.RevokeFamilyRequest(family_id=family_id, reason=reason)
        return await self._unary(self._tokens.RevokeFamily, request, pb.RevokeFamilyResponse)

    async def publish_keys(self) -> pb.PublishKeysResponse:
        """The public keys as a JWK Set (RFC 7517), with how long they may be cached."""
        return await self._unary(
            self._tokens.PublishKeys, pb.PublishKeysRequest(), pb.PublishKeysResponse
        )

    async def client_credentials(
        self,
        client_id: str,
        client_secret: str,
        *,
        scope: Sequence[str] = (),
        audience: Sequence[str] = (),
    ) -> pb.AccessToken:
        """The client-credentials grant (RFC 6749 §4.4): an access token for a service."""
        request = pb.ClientCredentialsRequest(
            client_id=client_id, client_secret=client_secret, scope=scope, audience=audience
        )
        return await self._unary(self._tokens.ClientCredentials, request, pb.AccessToken)

    async def revoke(
        self, token: str, *, token_type_hint: str = "", client_id: str = ""
    ) -> pb.RevokeResponse:
        """Revoke one token, RFC 7009 semantics (needs `authsvc:revoke`)."""
        request = pb.RevokeRequest(
            token=token, token_type_hint=token_type_hint, client_id=client_id
        )
        return await self._unary(self._tokens.Revoke, request, pb.RevokeResponse)

    async def revoke_subject(self, subject: str, *, reason: str = "") -> pb.RevokeSubjectResponse:
        """Log a subject out everywhere (needs `authsvc:revoke`)."""
        request = pb.RevokeSubjectRequest(subject=subject, reason=reason)
        return await self._unary(self._tokens.RevokeSubject, request, pb.RevokeSubjectResponse)

    async def revoke_client(
        self, client_id: str, *, reason: str = "", disable: bool = False
    ) -> pb.RevokeClientResponse:
        """Revoke every token of a client, optionally disabling it (needs `authsvc:admin`)."""
        request = pb.RevokeClientRequest(client_id=client_id, reason=reason, disable=disable)
        return await self._unary(self._tokens.RevokeClient, request, pb.RevokeClientResponse)

    async def list_sessions(self, subject: str) -> pb.ListSessionsResponse:
        """A subject's live sessions, one per device (needs `authsvc:sessions`)."""
        request = pb.ListSessionsRequest(subject=subject)
        return await self._unary(self._tokens.ListSessions, request, pb.ListSessionsResponse)

    async def watch_revocations(
        self, cursor: int = 0, *, stream_id: str = ""
    ) -> AsyncIterator[pb.RevocationEvent]:
        """Revocations and key changes in order from `cursor` (0 replays those in force).

        Resume with the `cursor` and `stream_id` of the last event seen. An `AuthError` with
        status OUT_OF_RANGE means authsvc's database no longer has that cursor (reset, replaced,
        restored): start again from 0 without a stream id, keeping what you know.
        """
        request = pb.WatchRevocationsRequest(cursor=cursor, stream_id=stream_id)
        metadata, generation = await self._metadata(), _generation(self._credentials)
        call = self._tokens.WatchRevocations(request, metadata=metadata)
        try:
            async for event in call:
                yield event
        except grpc.RpcError as exc:
            raise _call_error(self._credentials, exc, generation) from exc
        finally:
            call.cancel()

    async def rotate_keys(self, *, immediate: bool = False) -> pb.RotateKeysResponse:
        """Start a key rotation now (needs `authsvc:admin`); `immediate` activates the next key
        without waiting one JWKS cache lifetime (for a compromised key)."""
        request = pb.RotateKeysRequest(immediate=immediate)
        return await self._unary(self._tokens.RotateKeys, request, pb.RotateKeysResponse)

    # AuthorizationService

    async def authenticate_client(self, client_id: str, client_secret: str = "") -> pb.Client:
        """Check an OAuth client's credentials (needs `authsvc:gateway`)."""
        request = pb.AuthenticateClientRequest(client_id=client_id, client_secret=client_secret)
        return await self._unary(self._authorization.AuthenticateClient, request, pb.Client)

    async def get_client(self, client_id: str) -> pb.Client:
        """A client's public registration (needs `authsvc:gateway`)."""
        request = pb.GetClientRequest(client_id=client_id)
        return await self._unary(self._authorization.GetClient, request, pb.Client)

    async def authenticate_user(
        self, username: str, password: str, *, client_ip: str = ""
    ) -> pb.AuthenticateUserResponse:
        """Check a user's password (needs `authsvc:gateway`), counting a failure against the
        account and `client_ip`; `TooManyAttempts` over the limit."""
        request = pb.AuthenticateUserRequest(
            username=username, password=password, client_ip=client_ip
        )
        return await self._unary(
            self._authorization.AuthenticateUser, request, pb.AuthenticateUserResponse
        )

    async def create_authorization_code(
        self,
        client_id: str,
        redirect_uri: str,
        subject: str,
        code_challenge: str,
        *,
        scope: Sequence[str] = (),
        audience: Sequence[str] = (),
        code_challenge_method: str = "S256",
        device_id: str = "",
        redirect_uri_omitted: bool = False,
        authenticated_at: Timestamp | None = None,
    ) -> pb.AuthorizationCode:
        """Store a single-use authorization code (RFC 6749 §4.1.2, RFC 7636 §4.4).
        `redirect_uri_omitted`: the authorization request named no redirect URI, and
        `redirect_uri` is the client's only one (OAuth 2.1 §4.1.1). `authenticated_at`: the
        user's `authenticate_user` reply's; a revocation since then answers `AccessDenied`."""
        request = pb.CreateAuthorizationCodeRequest(
            client_id=client_id,
            redirect_uri=redirect_uri,
            subject=subject,
            scope=scope,
            audience=audience,
            code_challenge=code_challenge,
            code_challenge_method=code_challenge_method,
            device_id=device_id,
            redirect_uri_omitted=redirect_uri_omitted,
            authenticated_at=authenticated_at,
        )
        return await self._unary(
            self._authorization.CreateAuthorizationCode, request, pb.AuthorizationCode
        )

    async def deny_authorization(
        self, client_id: str, subject: str, code_challenge: str
    ) -> pb.DenyAuthorizationResponse:
        """Record the user's Deny of the authorization request `code_challenge` names (RFC 6749
        §4.1.2.1): no code is created for it afterwards, and an unused one is voided."""
        request = pb.DenyAuthorizationRequest(
            client_id=client_id, subject=subject, code_challenge=code_challenge
        )
        return await self._unary(
            self._authorization.DenyAuthorization, request, pb.DenyAuthorizationResponse
        )

    async def exchange_authorization_code(
        self,
        client_id: str,
        code: str,
        redirect_uri: str,
        code_verifier: str,
        *,
        audience: Sequence[str] = (),
    ) -> pb.TokenPair:
        """Redeem a code with its PKCE verifier (RFC 6749 §4.1.3, RFC 7636 §4.6). `audience`:
        the access token's, among the code's (RFC 8707 §2.2); another raises `InvalidTarget`."""
        request = pb.ExchangeAuthorizationCodeRequest(
            client_id=client_id,
            code=code,
            redirect_uri=redirect_uri,
            code_verifier=code_verifier,
            audience=audience,
        )
        return await self._unary(
            self._authorization.ExchangeAuthorizationCode, request, pb.TokenPair
        )

    async def _unary(self, method: Any, request: object, reply: type[_R]) -> _R:
        metadata, generation = await self._metadata(), _generation(self._credentials)
        try:
            answer: _R = await method(request, metadata=metadata, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise _call_error(self._credentials, exc, generation) from exc
        return answer

    async def _metadata(self) -> _Metadata:
        if self._credentials is not None:
            return (("authorization", f"Bearer {await self._credentials.token_async()}"),)
        if self._access_token:
            return (("authorization", f"Bearer {self._access_token}"),)
        return ()
