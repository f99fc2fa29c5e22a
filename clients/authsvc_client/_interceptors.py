"""Server interceptors that protect a gRPC service with authsvc tokens: `AsyncAuthInterceptor`
for `grpc.aio` servers and `AuthInterceptor` for sync `grpc.server`.

Per call they ask the `LocalVerifier` for a verdict and apply it: an allowed call runs with its
claims in `current_claims()`, a refused one is answered by a prebuilt handler that aborts with
the gRPC status of the error and, in trailing metadata, `oauth-error`, `oauth-error-description`
and an RFC 6750 §3 `www-authenticate` challenge. The request of a refused call is never
deserialized.

A call that streams its responses is checked again before each message it sends (`_StreamGuard`):
its token may expire, or be revoked, or the revocation state go stale while the stream lasts, and
the stream then ends with the refusal a new call would get.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import grpc
from google.protobuf.descriptor_pool import DescriptorPool

from ._cache import VerificationCache
from ._channels import plaintext_channel, require_plaintext_allowed
from ._clock import Clock, SystemClock
from ._context import CURRENT_CLAIMS
from ._credentials import ServiceCredentials
from ._errors import InsufficientScope, InvalidToken, TemporarilyUnavailable, UnknownSigningKey
from ._feed import AsyncAuthorityFeed, ThreadedAuthorityFeed
from ._jwks import KeyCache
from ._policy import Allow, Deny, Verdict, WhenStale
from ._revocations import RevocationSet
from ._scopes import MethodScopes
from ._verification import Claims
from ._verifier import LocalVerifier

__all__ = ["AsyncAuthInterceptor", "AuthInterceptor", "rejection_metadata"]

_Metadata = tuple[tuple[str, str], ...]
# grpc-stubs makes these generic; grpcio's classes are not subscriptable.
if TYPE_CHECKING:
    _Handler = grpc.RpcMethodHandler[Any, Any]
    _ServerInterceptor = grpc.ServerInterceptor[Any, Any]
    _AsyncServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Handler = grpc.RpcMethodHandler
    _ServerInterceptor = grpc.ServerInterceptor
    _AsyncServerInterceptor = grpc.aio.ServerInterceptor


def rejection_metadata(verdict: Deny, realm: str) -> _Metadata:
    """The trailing metadata of a refused call: the OAuth error, its description, and for
    token errors the `www-authenticate` challenge of RFC 6750 §3 (no error attributes when no
    token was sent at all, §3.1)."""
    error = verdict.error
    metadata: list[tuple[str, str]] = [
        ("oauth-error", error.error),
        ("oauth-error-description", error.description),
    ]
    if isinstance(error, InvalidToken | InsufficientScope):
        challenge = f'Bearer realm="{realm}"'
        if verdict.token_presented:
            challenge += f', error="{error.error}", error_description="{error.description}"'
        if isinstance(error, InsufficientScope) and verdict.required_scopes:
            challenge += f', scope="{" ".join(sorted(verdict.required_scopes))}"'
        metadata.append(("www-authenticate", challenge))
    return tuple(metadata)


def _local_verifier(
    *,
    issuer: str,
    audience: str,
    required_scopes: Mapping[str, Iterable[str]] | None,
    public_methods: Iterable[str],
    read_proto_options: bool,
    descriptor_pool: DescriptorPool | None,
    staleness_bound: float,
    when_stale: WhenStale,
    leeway: float,
    min_key_refresh_interval: float,
    cache_size: int,
    clock: Clock | None,
) -> LocalVerifier:
    """The verifier both interceptors are built around, from their shared arguments."""
    _check_bounds(
        leeway=leeway,
        staleness_bound=staleness_bound,
        min_key_refresh_interval=min_key_refresh_interval,
    )
    clock = clock or SystemClock()
    return LocalVerifier(
        issuer=issuer,
        audience=audience,
        scopes=MethodScopes(
            required_scopes,
            public=public_methods,
            read_proto_options=read_proto_options,
            pool=descriptor_pool,
        ),
        keys=KeyCache(clock, min_refresh_interval=min_key_refresh_interval),
        revocations=RevocationSet(clock, leeway=leeway),
        cache=VerificationCache(cache_size),
        clock=clock,
        leeway=leeway,
        staleness_bound=staleness_bound,
        when_stale=when_stale,
    )


#: The most clock skew a verifier may allow, as authsvc itself (AUTHSVC_LEEWAY).
MAX_LEEWAY = 300.0


def _check_bounds(
    *, leeway: float, staleness_bound: float, min_key_refresh_interval: float
) -> None:
    """Refuse, at construction, settings that would switch a check off: a leeway that is not a
    finite number of seconds within 0..MAX_LEEWAY (NaN compares false, so `exp` would never
    pass; infinity accepts any expired token), or a staleness bound or key refresh interval
    that is not finite and positive (a NaN bound never goes stale, failing open)."""
    if not (math.isfinite(leeway) and 0 <= leeway <= MAX_LEEWAY):
        raise ValueError(f"leeway is seconds of clock skew within 0..{MAX_LEEWAY:.0f}")
    if not (math.isfinite(staleness_bound) and staleness_bound > 0):
        raise ValueError("staleness_bound is a positive, finite number of seconds")
    if not (math.isfinite(min_key_refresh_interval) and min_key_refresh_interval >= 0):
        raise ValueError("min_key_refresh_interval is a finite, non-negative number of seconds")


class AsyncAuthInterceptor(_AsyncServerInterceptor):
    """Protects a `grpc.aio` server: local token verification, per-method scopes, revocations
    pushed by authsvc.

        auth = AsyncAuthInterceptor(
            "127.0.0.1:50051", issuer=ISSUER, audience="notes", credentials=creds,
            required_scopes={"/notes.v1.Notes/Read": ["notes:read"]},
        )
        server = grpc.aio.server(interceptors=[auth])
        async with auth:
            ...

    `authority` is a `grpc.aio.Channel` to authsvc, or its address for a plaintext channel: an
    address on this machine, or any with `plaintext=True` (as for `ServiceCredentials`).
    `credentials` authenticate the revocation stream (authsvc requires an authenticated caller).
    `required_scopes` maps `/package.Service/Method` (or `/package.Service/*`) to scopes; the
    `authsvc.v1.required_scopes` option in the service's proto adds to it. `public_methods` need
    no token, on top of health and reflection. When the revocation stream has been silent longer
    than `staleness_bound` seconds, `when_stale` decides (see `WhenStale`; default REJECT).
    """

    def __init__(
        self,
        authority: str | grpc.aio.Channel,
        *,
        issuer: str,
        audience: str,
        credentials: ServiceCredentials | None = None,
        required_scopes: Mapping[str, Iterable[str]] | None = None,
        public_methods: Iterable[str] = (),
        read_proto_options: bool = True,
        descriptor_pool: DescriptorPool | None = None,
        staleness_bound: float = 60.0,
        when_stale: WhenStale = WhenStale.REJECT,
        leeway: float = 30.0,
        min_key_refresh_interval: float = 10.0,
        cache_size: int = 10_000,
        clock: Clock | None = None,
        plaintext: bool = False,
    ) -> None:
        self.verifier = _local_verifier(
            issuer=issuer,
            audience=audience,
            required_scopes=required_scopes,
            public_methods=public_methods,
            read_proto_options=read_proto_options,
            descriptor_pool=descriptor_pool,
            staleness_bound=staleness_bound,
            when_stale=when_stale,
            leeway=leeway,
            min_key_refresh_interval=min_key_refresh_interval,
            cache_size=cache_size,
            clock=clock,
        )
        if isinstance(authority, str):
            require_plaintext_allowed(authority, plaintext)  # now, not when start() opens it
        self._authority = authority
        self._credentials = credentials
        self._channel: grpc.aio.Channel | None = None
        self._feed: AsyncAuthorityFeed | None = None
        self._start_lock = asyncio.Lock()
        self._starting: asyncio.Future[None] | None = None  # see `start`
        self._closed = False  # see `_start`
        self._started = False  # set once a start has waited for the keys and the replay
        self._handler_kinds = _HandlerKinds()

    async def start(self, ready_timeout: float = 5.0) -> None:
        """Load the keys and open the revocation stream, and wait (at most `ready_timeout`) for
        its replay of the revocations authsvc holds to end. Opens it again after `close()`."""
        self._closed = False
        await self._start(ready_timeout)

    async def _start(self, ready_timeout: float = 5.0) -> None:
        """`start`, which a call does lazily; _Closed once `close()` has run (a call then gets
        UNAVAILABLE, not an interceptor opened again behind the closing service's back)."""
        async with self._start_lock:
            if self._closed:
                raise _Closed("the interceptor is closed")
            if self._started:
                return
            if self._starting is None:
                if isinstance(self._authority, str):
                    self._channel = grpc.aio.insecure_channel(self._authority)
                    channel = self._channel
                else:
                    channel = self._authority
                self._feed = AsyncAuthorityFeed(
                    channel, self.verifier, credentials=self._credentials
                )
                # A task of the interceptor's own: started lazily, the start runs on behalf of
                # the first call, and a caller who hangs up must not cancel it half-way (the
                # keys never loaded, while every later call took the start for done).
                self._starting = asyncio.ensure_future(self._feed.start(ready_timeout))
            starting = self._starting
            await asyncio.wait([starting])  # a cancelled waiter leaves the start alone
            if self._closed or starting.cancelled():
                raise _Closed("the interceptor was closed while it started")
            self._started = True
            starting.result()  # its failure, if any, to this caller

    async def close(self) -> None:
        """Stop the background work and close the channel this interceptor opened. Calls from
        then on are refused with UNAVAILABLE, until `start()` opens it again."""
        self._closed = True
        self._started = False
        starting, feed, channel = self._starting, self._feed, self._channel
        self._starting = self._feed = self._channel = None
        if starting is not None:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
        if feed is not None:
            await feed.close()
        if channel is not None:
            await channel.close(None)

    async def __aenter__(self) -> AsyncAuthInterceptor:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: gRPC answers UNIMPLEMENTED
            return handler
        if not self._started:
            # Started lazily, by the first call: calls arriving meanwhile wait for the same
            # start (at most its ready_timeout), instead of being judged without keys.
            try:
                await self._start()
            except _Closed:
                return _async_rejection(handler, _CLOSING, self.verifier.audience)
        feed = self._feed
        if feed is None:  # close() ran since
            return _async_rejection(handler, _CLOSING, self.verifier.audience)
        method = handler_call_details.method
        metadata = handler_call_details.invocation_metadata or ()
        verdict = self.verifier.check(method, metadata)
        if _unknown_key(verdict) and await feed.refresh_for_unknown_kid():
            verdict = self.verifier.check(method, metadata)
        if isinstance(verdict, Deny):
            return _async_rejection(handler, verdict, self.verifier.audience)
        guard = _StreamGuard.of(self.verifier, handler, verdict, method, metadata)
        if self._handler_kinds.runs_in_this_task(handler):
            # grpc.aio runs the interceptors and an async handler in one task per call, so the
            # claims set here are that handler's and no other call's (grpc's own example of
            # passing context from interceptor to handler). A wrapping handler built per call
            # cost about a fifth of the interceptor's time (docs/performance.md), so only
            # streaming responses get one.
            CURRENT_CLAIMS.set(verdict.claims)
            return handler if guard is None else _async_guarded(handler, guard)
        # grpc.aio runs a sync handler in its thread pool: wrapped as a sync handler, it stays one.
        return _sync_with_claims(handler, verdict.claims, guard)


class AuthInterceptor(_ServerInterceptor):
    """Protects a sync `grpc.server`; the twin of `AsyncAuthInterceptor`, with the same
    arguments, running its background work on two daemon threads.

        auth = AuthInterceptor("127.0.0.1:50051", issuer=ISSUER, audience="notes",
                               credentials=creds)
        server = grpc.server(ThreadPoolExecutor(), interceptors=[auth])
        with auth:
            ...
    """

    def __init__(
        self,
        authority: str | grpc.Channel,
        *,
        issuer: str,
        audience: str,
        credentials: ServiceCredentials | None = None,
        required_scopes: Mapping[str, Iterable[str]] | None = None,
        public_methods: Iterable[str] = (),
        read_proto_options: bool = True,
        descriptor_pool: DescriptorPool | None = None,
        staleness_bound: float = 60.0,
        when_stale: WhenStale = WhenStale.REJECT,
        leeway: float = 30.0,
        min_key_refresh_interval: float = 10.0,
        cache_size: int = 10_000,
        clock: Clock | None = None,
        plaintext: bool = False,
    ) -> None:
        self.verifier = _local_verifier(
            issuer=issuer,
            audience=audience,
            required_scopes=required_scopes,
            public_methods=public_methods,
            read_proto_options=read_proto_options,
            descriptor_pool=descriptor_pool,
            staleness_bound=staleness_bound,
            when_stale=when_stale,
            leeway=leeway,
            min_key_refresh_interval=min_key_refresh_interval,
            cache_size=cache_size,
            clock=clock,
        )
        if isinstance(authority, str):
            self._channel: grpc.Channel | None = plaintext_channel(authority, plaintext)
            channel = self._channel
        else:
            self._channel = None
            channel = authority
        self._feed = ThreadedAuthorityFeed(channel, self.verifier, credentials=credentials)
        self._start_lock = threading.Lock()
        self._started = False

    def start(self, ready_timeout: float = 5.0) -> None:
        """Load the keys and open the revocation stream, and wait (at most `ready_timeout`) for
        its replay of the revocations authsvc holds to end."""
        with self._start_lock:
            if self._started:
                return
            try:
                self._feed.start(ready_timeout)
            finally:
                self._started = True

    def close(self) -> None:
        """Stop the background threads and close the channel this interceptor opened."""
        self._feed.close()
        if self._channel is not None:
            self._channel.close()

    def __enter__(self) -> AuthInterceptor:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], _Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        if not self._started:
            self.start()  # started lazily: calls arriving meanwhile wait for the same start
        method = handler_call_details.method
        metadata = handler_call_details.invocation_metadata or ()
        verdict = self.verifier.check(method, metadata)
        if _unknown_key(verdict) and self._feed.refresh_for_unknown_kid():
            verdict = self.verifier.check(method, metadata)
        if isinstance(verdict, Deny):
            return _sync_rejection(handler, verdict, self.verifier.audience)
        guard = _StreamGuard.of(self.verifier, handler, verdict, method, metadata)
        return _sync_with_claims(handler, verdict.claims, guard)


class _Closed(Exception):
    """`AsyncAuthInterceptor.close()` has run: the start a call waited for, or would begin."""


_CLOSING = Deny(TemporarilyUnavailable("the service is shutting down"))


class _StreamGuard:
    """A streaming call's verdict, asked again before each response message it sends."""

    __slots__ = ("_metadata", "_method", "_verifier")

    def __init__(self, verifier: LocalVerifier, method: str, metadata: Any) -> None:
        self._verifier = verifier
        self._method = method
        self._metadata = metadata

    @classmethod
    def of(
        cls,
        verifier: LocalVerifier,
        handler: _Handler,
        verdict: Allow,
        method: str,
        metadata: Any,
    ) -> _StreamGuard | None:
        """A guard for a call that streams its responses with a token; None otherwise (a public
        call has no token that could lapse)."""
        if not handler.response_streaming or verdict.claims is None:
            return None
        return cls(verifier, method, metadata)

    def refusal(self) -> _Refusal | None:
        """What to end the stream with, or None to go on."""
        verdict = self._verifier.check(self._method, self._metadata)
        if not isinstance(verdict, Deny):
            return None
        return _Refusal.of(verdict, self._verifier.audience)


class _GuardedContext:
    """An async handler's context whose `write` asks the guard first (handlers that send their
    responses with `context.write` rather than by yielding them)."""

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any], guard: _StreamGuard) -> None:
        self._context = context
        self._guard = guard

    async def write(self, message: Any) -> None:
        await _abort_if_refused(self._context, self._guard)
        await self._context.write(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


async def _abort_if_refused(
    context: grpc.aio.ServicerContext[Any, Any], guard: _StreamGuard
) -> None:
    refusal = guard.refusal()
    if refusal is not None:
        await refusal.abort_async(context)


def _async_guarded(handler: _Handler, guard: _StreamGuard) -> _Handler:
    """`handler` (async, streaming its responses) with `guard` asked before each message."""
    kind = _kind(handler)
    behavior = getattr(handler, kind)
    wrapped: Callable[..., Any]
    if inspect.isasyncgenfunction(behavior):

        async def yielding(request: Any, context: Any) -> Any:
            async for response in behavior(request, context):
                await _abort_if_refused(context, guard)
                yield response

        wrapped = yielding
    else:

        async def writing(request: Any, context: Any) -> Any:
            return await behavior(request, _GuardedContext(context, guard))

        wrapped = writing
    return _FACTORIES[kind](
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _unknown_key(verdict: Verdict) -> bool:
    return isinstance(verdict, Deny) and isinstance(verdict.error, UnknownSigningKey)


class _HandlerKinds:
    """Whether grpc.aio awaits a handler in the task that ran the interceptors, remembered per
    handler function. Sync handlers run in its thread pool, where contextvars set here do not
    reach (grpc issue 37881). Asked on every call; a server registers its handlers once, so this
    stays as small as its method table (bounded all the same, for handlers built per call)."""

    MAX_ENTRIES = 4096

    def __init__(self) -> None:
        self._known: dict[Callable[..., Any], bool] = {}

    def runs_in_this_task(self, handler: _Handler) -> bool:
        behavior = getattr(handler, _kind(handler))
        known = self._known.get(behavior)
        if known is None:
            known = inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)
            if len(self._known) >= self.MAX_ENTRIES:
                self._known.clear()
            self._known[behavior] = known
        return known


def _kind(handler: _Handler) -> str:
    if handler.request_streaming:
        return "stream_stream" if handler.response_streaming else "stream_unary"
    return "unary_stream" if handler.response_streaming else "unary_unary"


_FACTORIES: dict[str, Callable[..., _Handler]] = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


class _Refusal(NamedTuple):
    """How a refused call ends: its status, description and trailing metadata."""

    status: grpc.StatusCode
    description: str
    trailers: _Metadata

    @classmethod
    def of(cls, verdict: Deny, realm: str) -> _Refusal:
        return cls(
            verdict.error.status, verdict.error.description, rejection_metadata(verdict, realm)
        )

    async def abort_async(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(self.status, self.description, trailing_metadata=self.trailers)

    def abort_sync(self, context: grpc.ServicerContext) -> None:
        context.set_trailing_metadata(self.trailers)
        context.abort(self.status, self.description)


def _async_rejection(handler: _Handler, verdict: Deny, realm: str) -> _Handler:
    refusal = _Refusal.of(verdict, realm)

    async def abort(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await refusal.abort_async(context)

    # No request deserializer: a refused caller's bytes are never parsed.
    return _FACTORIES[_kind(handler)](abort)


def _sync_rejection(handler: _Handler, verdict: Deny, realm: str) -> _Handler:
    refusal = _Refusal.of(verdict, realm)

    def abort(request: Any, context: grpc.ServicerContext) -> None:
        refusal.abort_sync(context)

    return _FACTORIES[_kind(handler)](abort)


def _sync_with_claims(
    handler: _Handler, claims: Claims | None, guard: _StreamGuard | None = None
) -> _Handler:
    kind = _kind(handler)
    behavior = getattr(handler, kind)

    if handler.response_streaming:

        def streaming(request: Any, context: Any) -> Iterator[Any]:
            # Each step of a generator runs in whichever thread iterates it (grpc.aio steps sync
            # generators in its thread pool, one step here, the next there), so the claims are
            # set around every step, the first call included (a plain function returning an
            # iterator runs its body then), and cleared after it (the thread may differ).
            CURRENT_CLAIMS.set(claims)
            try:
                responses = iter(behavior(request, context))
            finally:
                CURRENT_CLAIMS.set(None)
            while True:
                CURRENT_CLAIMS.set(claims)
                try:
                    response = next(responses)
                except StopIteration:
                    return
                finally:
                    CURRENT_CLAIMS.set(None)
                refusal = guard.refusal() if guard is not None else None
                if refusal is not None:
                    refusal.abort_sync(context)
                yield response

        wrapped: Callable[..., Any] = streaming
    else:

        def single(request: Any, context: Any) -> Any:
            token = CURRENT_CLAIMS.set(claims)
            try:
                return behavior(request, context)
            finally:
                CURRENT_CLAIMS.reset(token)

        wrapped = single
    return _FACTORIES[kind](
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
