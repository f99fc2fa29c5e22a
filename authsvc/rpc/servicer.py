"""The authsvc.v1 servicers: translate messages to domain calls and back, nothing else.

Errors leave through `_edge` only: a domain `AuthError` becomes its status from `authsvc.rpc.status`,
anything unexpected is logged with its traceback and answered as server_error without detail.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_client.v1 import authsvc_pb2_grpc as pb_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from authsvc.authority import Authority
from authsvc.errors import AuthError, InvalidRequest, ServerError
from authsvc.events import CursorNotInStream, SubscriberTooSlow
from authsvc.introspection import Introspection
from authsvc.issuance import IssuedAccessToken, IssuedTokenPair
from authsvc.metrics import Metrics
from authsvc.rpc.status import abort, status_for
from authsvc.storage.records import ClientRecord, FamilyRecord, RevocationEventRecord
from authsvc.tokens.access import AccessClaims
from authsvc.users import Authentication

log = logging.getLogger(__name__)

Request = TypeVar("Request")
Response = TypeVar("Response")
Context = grpc.aio.ServicerContext[Any, Any]
MAX_FIELD = 8192


def _edge(
    method: Callable[[Any, Request, Context], Awaitable[Response]],
) -> Callable[[Any, Request, Context], Awaitable[Response]]:
    name = method.__name__

    @functools.wraps(method)
    async def handle(self: Any, request: Request, context: Context) -> Response:
        started = time.perf_counter()
        code = "OK"
        try:
            return await method(self, request, context)
        except AuthError as exc:
            code = status_for(exc).name
            await abort(context, exc)
        except asyncio.CancelledError:
            # The caller's deadline passed or the caller went away: not an OK, for the alerts
            # that count errors.
            remaining = context.time_remaining()
            late = remaining is not None and remaining <= 0
            code = "DEADLINE_EXCEEDED" if late else "CANCELLED"
            raise
        except Exception:
            code = "INTERNAL"
            log.exception("unexpected failure in %s", name)
            await abort(context, ServerError())
        finally:
            if self.metrics is not None:
                self.metrics.observe(name, code, time.perf_counter() - started)
        raise AssertionError("unreachable: abort raises")

    return handle


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def authentication_message(authentication: Authentication) -> pb.AuthenticateUserResponse:
    return pb.AuthenticateUserResponse(
        subject=authentication.subject,
        authenticated_at=_timestamp(authentication.authenticated_at),
    )


def authenticated_at(request: pb.CreateAuthorizationCodeRequest) -> float | None:
    """When the code's user signed in, or None from a gateway that does not say."""
    if not request.HasField("authenticated_at"):
        return None
    try:
        nanoseconds = request.authenticated_at.ToNanoseconds()
    except ValueError:  # outside years 1-9999, or nanos outside 0..999,999,999: not a time
        raise InvalidRequest(
            "authenticated_at is not a valid time; send AuthenticateUser's authenticated_at "
            "back unchanged"
        ) from None
    return nanoseconds / 1e9


def _bounded(*values: str) -> None:
    if any(len(value) > MAX_FIELD for value in values):
        raise InvalidRequest("a field exceeds 8 KiB")


def token_pair_message(pair: IssuedTokenPair) -> pb.TokenPair:
    return pb.TokenPair(
        access_token=pair.access.token,
        token_type="Bearer",  # noqa: S106
        expires_in=pair.access.expires_in,
        refresh_token=pair.refresh_token,
        refresh_expires_in=pair.refresh_expires_in,
        scope=pair.access.claims.scope,
        family_id=pair.family.family_id,
    )


def access_token_message(issued: IssuedAccessToken) -> pb.AccessToken:
    return pb.AccessToken(
        access_token=issued.token,
        token_type="Bearer",  # noqa: S106
        expires_in=issued.expires_in,
        scope=issued.claims.scope,
    )


def claims_message(claims: AccessClaims) -> pb.Claims:
    return pb.Claims(
        iss=claims.iss,
        sub=claims.sub,
        aud=claims.aud,
        exp=claims.exp,
        iat=claims.iat,
        nbf=claims.nbf,
        jti=claims.jti,
        client_id=claims.client_id,
        scope=claims.scope,
        sid=claims.sid,
    )


def introspection_message(result: Introspection) -> pb.IntrospectResponse:
    if not result.active:
        return pb.IntrospectResponse(active=False)
    return pb.IntrospectResponse(
        active=True,
        scope=result.scope,
        client_id=result.client_id,
        token_type=result.token_type,
        exp=result.exp,
        iat=result.iat,
        nbf=result.nbf,
        sub=result.sub,
        aud=result.aud,
        iss=result.iss,
        jti=result.jti,
        sid=result.sid,
    )


def session_message(family: FamilyRecord) -> pb.Session:
    return pb.Session(
        family_id=family.family_id,
        client_id=family.client_id,
        device_id=family.device_id,
        scope=family.scope,
        created_at=_timestamp(family.created_at),
        last_used_at=_timestamp(family.last_used_at),
        expires_at=_timestamp(family.expires_at),
        idle_expires_at=_timestamp(family.idle_expires_at),
    )


def client_message(client: ClientRecord) -> pb.Client:
    return pb.Client(
        client_id=client.client_id,
        name=client.name,
        public=client.public,
        first_party=client.first_party,
        grant_types=client.grant_types,
        redirect_uris=client.redirect_uris,
        scopes=client.scopes,
        audiences=client.audiences,
    )


def event_message(event: RevocationEventRecord, stream_id: str) -> pb.RevocationEvent:
    message = pb.RevocationEvent(
        cursor=event.cursor,
        occurred_at=_timestamp(event.occurred_at),
        expires_at=_timestamp(event.expires_at),
        stream_id=stream_id,
    )
    if event.kind == "family":
        message.family_revoked = event.value
    elif event.kind == "jti":
        message.jti_revoked = event.value
    elif event.kind == "subject":
        message.subject_revoked.CopyFrom(
            pb.SubjectRevoked(subject=event.value, not_before=int(event.not_before or 0))
        )
    elif event.kind == "client":
        message.client_revoked.CopyFrom(
            pb.ClientRevoked(client_id=event.value, not_before=int(event.not_before or 0))
        )
    elif event.kind == "key":
        message.key_changed.CopyFrom(pb.KeyChanged(kid=event.value, state=event.state or ""))
    return message


def publish_keys_message(authority: Authority) -> pb.PublishKeysResponse:
    ring = authority.publish_keys()
    keys = []
    for record in ring.records:
        jwk = json.loads(record.public_jwk)
        keys.append(
            pb.PublicKey(
                kid=record.kid,
                kty=jwk["kty"],
                crv=jwk.get("crv", ""),
                x=jwk.get("x", ""),
                y=jwk.get("y", ""),
                alg=record.alg,
                use="sig",
                state=record.state,
            )
        )
    return pb.PublishKeysResponse(keys=keys, jwks_json=ring.jwks_json, max_age_seconds=ring.max_age)


class VerifyResponses:
    """The Verify reply of each token seen recently, built once: the same claims always make
    the same reply, and building the message (ten fields, two repeated) cost about as much as
    verifying a cached token (docs/performance.md). Bounded; dropped whole when full."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._replies: dict[AccessClaims, pb.VerifyResponse] = {}

    def reply(self, claims: AccessClaims) -> pb.VerifyResponse:
        reply = self._replies.get(claims)
        if reply is None:
            if len(self._replies) >= self._capacity:
                self._replies.clear()
            reply = self._replies[claims] = pb.VerifyResponse(claims=claims_message(claims))
        return reply


class TokenService(pb_grpc.TokenServiceServicer):
    """authsvc.v1.TokenService over the domain."""

    def __init__(self, authority: Authority, metrics: Metrics | None = None) -> None:
        self._authority = authority
        self.metrics = metrics
        self._verify_responses = VerifyResponses()

    @_edge
    async def IssueTokenPair(
        self, request: pb.IssueTokenPairRequest, context: Context
    ) -> pb.TokenPair:
        pair = await self._authority.issue_token_pair(
            subject=request.subject,
            client_id=request.client_id,
            scope=request.scope,
            audience=request.audience,
            device_id=request.device_id,
        )
        return token_pair_message(pair)

    @_edge
    async def Rotate(self, request: pb.RotateRequest, context: Context) -> pb.TokenPair:
        _bounded(request.refresh_token)
        pair = await self._authority.rotate(
            request.refresh_token, client_id=request.client_id, scope=request.scope
        )
        return token_pair_message(pair)

    @_edge
    async def Verify(self, request: pb.VerifyRequest, context: Context) -> pb.VerifyResponse:
        if not request.audience:
            raise InvalidRequest("audience is required: the audience this caller accepts")
        claims = self._authority.verify(
            request.token, audience=request.audience, required_scopes=request.required_scopes
        )
        return self._verify_responses.reply(claims)

    @_edge
    async def Introspect(
        self, request: pb.IntrospectRequest, context: Context
    ) -> pb.IntrospectResponse:
        _bounded(request.token)
        result = await self._authority.introspect(request.token, client_id=request.client_id)
        return introspection_message(result)

    @_edge
    async def RevokeFamily(
        self, request: pb.RevokeFamilyRequest, context: Context
    ) -> pb.RevokeFamilyResponse:
        revoked = await self._authority.revoke_family(request.family_id, reason=request.reason)
        return pb.RevokeFamilyResponse(revoked=revoked)

    @_edge
    async def PublishKeys(
        self, request: pb.PublishKeysRequest, context: Context
    ) -> pb.PublishKeysResponse:
        return publish_keys_message(self._authority)

    @_edge
    async def ClientCredentials(
        self, request: pb.ClientCredentialsRequest, context: Context
    ) -> pb.AccessToken:
        _bounded(request.client_id, request.client_secret)
        issued = await self._authority.client_credentials(
            client_id=request.client_id,
            client_secret=request.client_secret,
            scope=request.scope,
            audience=request.audience,
        )
        return access_token_message(issued)

    @_edge
    async def Revoke(self, request: pb.RevokeRequest, context: Context) -> pb.RevokeResponse:
        _bounded(request.token)
        await self._authority.revoke(
            request.token, client_id=request.client_id, token_type_hint=request.token_type_hint
        )
        return pb.RevokeResponse()

    @_edge
    async def RevokeSubject(
        self, request: pb.RevokeSubjectRequest, context: Context
    ) -> pb.RevokeSubjectResponse:
        count = await self._authority.revoke_subject(request.subject, reason=request.reason)
        return pb.RevokeSubjectResponse(families_revoked=count)

    @_edge
    async def RevokeClient(
        self, request: pb.RevokeClientRequest, context: Context
    ) -> pb.RevokeClientResponse:
        count = await self._authority.revoke_client(
            request.client_id, reason=request.reason, disable=request.disable
        )
        return pb.RevokeClientResponse(families_revoked=count)

    @_edge
    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: Context
    ) -> pb.ListSessionsResponse:
        families = await self._authority.list_sessions(request.subject)
        return pb.ListSessionsResponse(sessions=[session_message(f) for f in families])

    async def WatchRevocations(
        self, request: pb.WatchRevocationsRequest, context: Context
    ) -> AsyncIterator[pb.RevocationEvent]:
        last = request.cursor
        subscription = self._authority.subscribe(request.cursor, stream_id=request.stream_id)
        try:
            async with subscription as opened:
                async for event in opened.events:
                    if event is None:
                        yield pb.RevocationEvent(
                            cursor=last, heartbeat=pb.Heartbeat(), stream_id=opened.stream_id
                        )
                        continue
                    last = event.cursor
                    message = event_message(event, opened.stream_id)
                    if message.WhichOneof("event") is not None:  # not this service's own events
                        yield message
        except CursorNotInStream as exc:
            # Not an OAuth error: the stream's own "start over" (see the proto).
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, str(exc))
        except SubscriberTooSlow:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "fell behind; resume from cursor"
            )
        except AuthError as exc:
            await abort(context, exc)

    @_edge
    async def RotateKeys(
        self, request: pb.RotateKeysRequest, context: Context
    ) -> pb.RotateKeysResponse:
        result = await self._authority.rotate_keys(
            immediate=request.immediate, compromised=request.compromised
        )
        return pb.RotateKeysResponse(
            published_kid=result.published_kid, active_kid=result.active_kid
        )


class AuthorizationService(pb_grpc.AuthorizationServiceServicer):
    """authsvc.v1.AuthorizationService: what the gateway needs for OAuth 2.1 flows."""

    def __init__(self, authority: Authority, metrics: Metrics | None = None) -> None:
        self._authority = authority
        self.metrics = metrics

    @_edge
    async def AuthenticateClient(
        self, request: pb.AuthenticateClientRequest, context: Context
    ) -> pb.Client:
        _bounded(request.client_id, request.client_secret)
        client = await self._authority.authenticate_client(request.client_id, request.client_secret)
        return client_message(client)

    @_edge
    async def GetClient(self, request: pb.GetClientRequest, context: Context) -> pb.Client:
        _bounded(request.client_id)
        return client_message(await self._authority.get_client(request.client_id))

    @_edge
    async def AuthenticateUser(
        self, request: pb.AuthenticateUserRequest, context: Context
    ) -> pb.AuthenticateUserResponse:
        authentication = await self._authority.authenticate_user(
            request.username, request.password, client_ip=request.client_ip
        )
        return authentication_message(authentication)

    @_edge
    async def CreateAuthorizationCode(
        self, request: pb.CreateAuthorizationCodeRequest, context: Context
    ) -> pb.AuthorizationCode:
        _bounded(request.redirect_uri, request.code_challenge)
        issued = await self._authority.create_authorization_code(
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
        return pb.AuthorizationCode(code=issued.code, expires_in=issued.expires_in)

    @_edge
    async def DenyAuthorization(
        self, request: pb.DenyAuthorizationRequest, context: Context
    ) -> pb.DenyAuthorizationResponse:
        _bounded(request.code_challenge)
        await self._authority.deny_authorization(
            client_id=request.client_id,
            subject=request.subject,
            code_challenge=request.code_challenge,
        )
        return pb.DenyAuthorizationResponse()

    @_edge
    async def ExchangeAuthorizationCode(
        self, request: pb.ExchangeAuthorizationCodeRequest, context: Context
    ) -> pb.TokenPair:
        _bounded(request.code, request.redirect_uri, request.code_verifier)
        pair = await self._authority.exchange_authorization_code(
            client_id=request.client_id,
            code=request.code,
            redirect_uri=request.redirect_uri,
            code_verifier=request.code_verifier,
            audience=request.audience,
        )
        return token_pair_message(pair)
