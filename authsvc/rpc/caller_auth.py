"""Who may call what on authsvc itself (DESIGN "Who may call what").

Each method's permissions come from its `authsvc.v1.required_scopes` option in the proto, read once
from the descriptors. `decide` is the pure verdict; `CallerAuthInterceptor` finds the caller (bearer
token or client certificate) and applies the verdict, before the servicer runs, so a refused call
changes nothing. A streaming answer (WatchRevocations) outlives the token it was opened with, so
the caller is found and judged again before each message: a stream ends with UNAUTHENTICATED once
its token expires or is revoked, or its client is disabled, and the caller reconnects with a fresh
token from where it was.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from authsvc_client.v1 import authsvc_pb2
from google.protobuf.descriptor import MethodDescriptor

from authsvc.errors import AuthError, InsufficientScope, Unauthenticated
from authsvc.rpc.handlers import Context, StreamBehaviour, UnaryBehaviour, wrap_handler
from authsvc.rpc.status import abort
from authsvc.tokens.access import AccessClaims

log = logging.getLogger(__name__)

ANONYMOUS_METHODS = frozenset(
    {"/authsvc.v1.TokenService/ClientCredentials", "/authsvc.v1.TokenService/PublishKeys"}
)
VERIFY_METHOD = "/authsvc.v1.TokenService/Verify"


@dataclass(frozen=True)
class MethodPolicy:
    """What a method asks of its caller."""

    required_scopes: tuple[str, ...]
    anonymous: bool = False


@dataclass(frozen=True)
class Caller:
    """An authenticated caller of authsvc."""

    client_id: str
    scopes: frozenset[str]
    via: str  # "bearer" or "mtls"
    claims: AccessClaims | None = None


def method_policies(*, allow_anonymous_verify: bool = False) -> dict[str, MethodPolicy]:
    """Every authsvc.v1 method's policy, from the `required_scopes` option in the proto."""
    policies = {}
    for service in authsvc_pb2.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            anonymous = path in ANONYMOUS_METHODS or (
                allow_anonymous_verify and path == VERIFY_METHOD
            )
            policies[path] = MethodPolicy(_required_scopes(method), anonymous)
    return policies


def _required_scopes(method: MethodDescriptor) -> tuple[str, ...]:
    options = method.GetOptions()
    return tuple(options.Extensions[authsvc_pb2.required_scopes])  # type: ignore[index]


def decide(policy: MethodPolicy | None, caller: Caller | None) -> AuthError | None:
    """None when the call may pass; otherwise the error to answer with.

    - methods outside authsvc.v1 (health, reflection) are public;
    - anonymous methods pass without a caller;
    - every other method needs an authenticated caller holding all its required scopes.
    """
    if policy is None or policy.anonymous:
        return None
    if caller is None:
        return Unauthenticated("missing bearer token or client certificate")
    missing = [scope for scope in policy.required_scopes if scope not in caller.scopes]
    if missing:
        return InsufficientScope(f"caller lacks permission: {' '.join(missing)}")
    return None


current_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "authsvc_caller", default=None
)


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The token of the call's one `authorization: Bearer …` header (RFC 6750 §2.1), or None.

    Two `authorization` headers are none: which one counted would depend on who read them (a
    proxy in front may check the first), so neither does, as the client library's interceptors
    refuse them too."""
    values = [value for key, value in metadata if key == "authorization"]
    if len(values) != 1 or not isinstance(value := values[0], str):
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


BearerAuthenticator = Callable[[str], Caller]
CertificateAuthenticator = Callable[[str], Awaitable[Caller | None]]


class CallerAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Authenticates each call and applies `decide` before the handler runs."""

    def __init__(
        self,
        policies: Mapping[str, MethodPolicy],
        authenticate_bearer: BearerAuthenticator,
        authenticate_certificate: CertificateAuthenticator | None = None,
        on_refusal: Callable[[str, AuthError], None] | None = None,
    ) -> None:
        self._policies = policies
        self._bearer = authenticate_bearer
        self._certificate = authenticate_certificate
        self._on_refusal = on_refusal

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        policy = self._policies.get(handler_call_details.method)
        if handler is None or policy is None:
            return handler
        token = bearer_token(handler_call_details.invocation_metadata or ())
        if token is None and self._certificate is not None:
            # The client certificate is only in the servicer context: decide inside the handler.
            return self._deciding_in_handler(handler, policy)
        refusal = self._admit(policy, self._bearer_caller(policy, token))
        if refusal is None:
            if handler.response_streaming and not policy.anonymous:
                return self._judged_per_message(handler, policy, token)
            # Most calls end here: the handler runs as registered, with no wrapper around it.
            return handler
        if self._on_refusal is not None:
            self._on_refusal(handler_call_details.method, refusal)
        return _refusing(handler, refusal)

    def _bearer_caller(self, policy: MethodPolicy, token: str | None) -> Caller | AuthError | None:
        """The caller a bearer token proves, None without one, or the error a bad one earns."""
        if token is None:
            return None
        try:
            return self._bearer(token)
        except AuthError as exc:
            # An anonymous method ignores a stale credential, so a caller can always fetch a
            # fresh token; any other method refuses it.
            if policy.anonymous:
                return None
            return Unauthenticated(f"caller credential rejected: {exc.description}")

    def _admit(self, policy: MethodPolicy, found: Caller | AuthError | None) -> AuthError | None:
        """Apply `decide`; on success the caller is set for the servicer (same task)."""
        if isinstance(found, AuthError):
            return found
        refusal = decide(policy, found)
        if refusal is None:
            current_caller.set(found)
        return refusal

    def _deciding_in_handler(
        self, handler: grpc.RpcMethodHandler[Any, Any], policy: MethodPolicy
    ) -> grpc.RpcMethodHandler[Any, Any]:
        admit = self._admit_in_handler

        def unary(behaviour: UnaryBehaviour) -> UnaryBehaviour:
            async def admitted(request: Any, context: Context) -> Any:
                if await admit(policy, context):
                    return await behaviour(request, context)
                return None

            return admitted

        def stream(behaviour: StreamBehaviour) -> StreamBehaviour:
            async def admitted(request: Any, context: Context) -> AsyncIterator[Any]:
                if await admit(policy, context):
                    async for item in behaviour(request, context):
                        if not await admit(policy, context):
                            return
                        yield item

            return admitted

        return wrap_handler(handler, unary, stream)

    def _judged_per_message(
        self, handler: grpc.RpcMethodHandler[Any, Any], policy: MethodPolicy, token: str | None
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """A streaming handler whose bearer caller is judged again before each message."""
        admit = self._admit

        def stream(behaviour: StreamBehaviour) -> StreamBehaviour:
            async def judged(request: Any, context: Context) -> AsyncIterator[Any]:
                async for item in behaviour(request, context):
                    refusal = admit(policy, self._bearer_caller(policy, token))
                    if refusal is not None:
                        await abort(context, refusal)
                    yield item

            return judged

        return wrap_handler(handler, _not_judged_per_message, stream)

    async def _admit_in_handler(self, policy: MethodPolicy, context: Context) -> bool:
        try:
            found: Caller | AuthError | None = await self._certificate_caller(context)
        except AuthError as exc:
            found = (
                None
                if policy.anonymous
                else Unauthenticated(f"caller credential rejected: {exc.description}")
            )
        refusal = self._admit(policy, found)
        if refusal is not None:
            await abort(context, refusal)
            return False
        return True

    async def _certificate_caller(self, context: Context) -> Caller | None:
        assert self._certificate is not None
        names = list(context.auth_context().get("x509_common_name") or ())
        if not names:
            return None
        return await self._certificate(names[0].decode())


def _not_judged_per_message(_behaviour: UnaryBehaviour) -> UnaryBehaviour:
    # Raised from the interceptor, this fails the call rather than let it stream unjudged.
    raise TypeError("a stream that sends with context.write() cannot be judged per message")


def _refusing(
    handler: grpc.RpcMethodHandler[Any, Any], refusal: AuthError
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape that answers `refusal` and runs nothing else."""

    def unary(_behaviour: UnaryBehaviour) -> UnaryBehaviour:
        async def refuse(_request: Any, context: Context) -> Any:
            await abort(context, refusal)

        return refuse

    def stream(_behaviour: StreamBehaviour) -> StreamBehaviour:
        async def refuse(_request: Any, context: Context) -> AsyncIterator[Any]:
            await abort(context, refusal)
            yield  # unreachable: abort raises; the yield makes this an async generator

        return refuse

    return wrap_handler(handler, unary, stream)
