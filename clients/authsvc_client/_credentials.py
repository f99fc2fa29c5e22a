"""Service-to-service credentials: client-credentials tokens (RFC 6749 §4.4), fetched from authsvc
over gRPC, cached, renewed before they expire, and attached to outgoing calls.

One `ServiceCredentials` serves sync and asyncio channels alike: gRPC runs a metadata plugin on
a thread of its own for both, so the plugin may block while a token is fetched. Fetching is
single-flight: however many calls need a token at once, one request goes to authsvc and the rest
wait for its answer. Past `renew_after` of its lifetime a token is renewed in the background,
started by the first call that notices, while every call, that one included, keeps using the
still-valid old one: no call waits for a renewal. A renewal that fails is tried again only after a
back-off. Once no valid token is left, a call fetches, or waits for the fetch in flight; right
after a fetch failed, for a short back-off of its own, calls fail at once with its error instead
(`next_step`): a wrong secret or an authsvc that is down costs one request per back-off, not one
per outgoing call.
"""

from __future__ import annotations

import asyncio
import copy
import enum
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from ._channels import plaintext_channel
from ._client import AuthClient
from ._clock import Clock, SystemClock
from ._errors import from_rpc_error, refuses_bearer
from ._revocations import Backoff

__all__ = ["ServiceCredentials"]


# grpc-stubs makes the interceptor bases generic; grpcio's classes are not subscriptable.
if TYPE_CHECKING:
    _UnaryClientInterceptor = grpc.UnaryUnaryClientInterceptor[Any, Any]
    _AsyncUnaryClientInterceptor = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
else:
    _UnaryClientInterceptor = grpc.UnaryUnaryClientInterceptor
    _AsyncUnaryClientInterceptor = grpc.aio.UnaryUnaryClientInterceptor

# A token this close to `exp` is not sent: it could expire on the way.
_EXPIRY_MARGIN = 5.0

# After a failed renewal the next try waits at least half a ceiling that starts at the fetch
# timeout (1 s at least) and doubles up to a minute; a fetch that succeeds brings it back down. A
# try can hold a call for the whole timeout (authsvc up but not answering): were tries closer
# together than that, a service making its calls one after another would spend most of its time
# waiting. By default a try follows the failed one by 5-10, 10-20, 20-40, then 30-60 s, which still
# fits four into the renewal window of the default token (the last fifth of 10 minutes) and
# notices a recovered authsvc within a minute. The jitter keeps a fleet that started together from
# retrying together.
RENEWAL_BACKOFF_MAXIMUM = 60.0
RENEWAL_BACKOFF_JITTER = 0.5

# With no valid token, after a failed fetch calls fail fast for 0.5-1 s, then 1-2 s, doubling to
# 15-30 s: short at first, so a service whose authsvc was a moment late gets its token within a
# second of it coming up; long in the end, so a wrong secret costs authsvc a request every half
# minute per process.
FAIL_FAST_BACKOFF_INITIAL = 1.0
FAIL_FAST_BACKOFF_MAXIMUM = 30.0


@dataclass(frozen=True)
class CachedToken:
    value: str = field(repr=False)
    renew_at: float
    expires_at: float
    generation: int

    def valid_at(self, now: float) -> bool:
        """Whether the token may still be sent: not within the expiry margin of `exp`."""
        return now < self.expires_at - _EXPIRY_MARGIN


class CredentialsClosed(RuntimeError):
    """A call needed a new token from `ServiceCredentials` after their `close()`."""


class Step(enum.Enum):
    """What a call that needs a token does."""

    USE_CACHED = "use the cached token"
    RENEW = "start renewing the cached token in the background, and use it meanwhile"
    FETCH = "fetch a token, the others waiting meanwhile"
    WAIT = "wait for the fetch in flight"
    FAIL = "raise the error of the fetch that just failed, without asking again"
    CLOSED = "raise CredentialsClosed: no token is fetched after close()"


def next_step(
    now: float,
    cached: CachedToken | None,
    in_flight: bool,
    retry_at: float,
    fail_until: float = float("-inf"),
    closed: bool = False,
) -> Step:
    """Use the cache, start a renewal, fetch, wait for the fetch in flight, or fail at once.

    A valid token is used until `renew_at`, then while a renewal is in flight or, after a failed
    renewal, until `retry_at`; the first call after that starts a renewal and still uses it. A
    token that is no longer valid is never handed out, back-off or not: the call fetches, or
    waits for the fetch in flight, or, until `fail_until` after a fetch failed, fails with that
    fetch's error. One fetch at a time either way. Once `closed`, nothing new is fetched: a valid
    token is used without renewing it, and a call that would fetch is told it is closed.
    """
    if cached is None or not cached.valid_at(now):
        if in_flight:
            return Step.WAIT
        if now < fail_until:
            return Step.FAIL
        return Step.CLOSED if closed else Step.FETCH
    if now < cached.renew_at or in_flight or now < retry_at or closed:
        return Step.USE_CACHED
    return Step.RENEW


class _Flight:
    """One token request in progress; whoever needs a token meanwhile waits on it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.token: CachedToken | None = None
        self.error: BaseException | None = None


class ServiceCredentials:
    """Client-credentials tokens for one OAuth client, for calls to other services.

        creds = ServiceCredentials("127.0.0.1:50051", client_id=..., client_secret=...,
                                   audience=["orders"], scope=["orders:read"])
        channel = creds.secure_channel("orders:443", grpc.ssl_channel_credentials())

    `authority` is a ready `grpc.Channel` to authsvc (for TLS), or its address, for a plaintext
    channel: an address on this machine, or any with `plaintext=True` (behind a service mesh that
    encrypts the hop; `authsvc_client._channels`). `renew_after` is the share of a token's
    lifetime after which it is renewed. `rng` draws the jitter of the back-off between failed
    renewals.
    """

    def __init__(
        self,
        authority: str | grpc.Channel,
        *,
        client_id: str,
        client_secret: str,
        scope: Sequence[str] = (),
        audience: Sequence[str] = (),
        clock: Clock | None = None,
        renew_after: float = 0.8,
        timeout: float = 10.0,
        rng: random.Random | None = None,
        plaintext: bool = False,
    ) -> None:
        if not 0 < renew_after <= 1:
            raise ValueError("renew_after is a share of the token lifetime, in (0, 1]")
        if isinstance(authority, str):
            self._channel: grpc.Channel = plaintext_channel(authority, plaintext)
            self._owns_channel = True
        else:
            self._channel = authority
            self._owns_channel = False
        self._client = AuthClient(self._channel, timeout=timeout)
        self._timeout = timeout
        self._closed = False
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = tuple(scope)
        self._audience = tuple(audience)
        self._clock = clock or SystemClock()
        self._renew_after = renew_after
        self._lock = threading.Lock()
        self._cached: CachedToken | None = None
        self._flight: _Flight | None = None
        self._generation = 0
        first = max(timeout, 1.0)
        self._backoff = Backoff(
            first, max(first, RENEWAL_BACKOFF_MAXIMUM), jitter=RENEWAL_BACKOFF_JITTER, rng=rng
        )
        self._retry_at = float("-inf")  # no renewal may start before this
        self._fail_fast = Backoff(
            FAIL_FAST_BACKOFF_INITIAL, FAIL_FAST_BACKOFF_MAXIMUM, jitter=0.5, rng=rng
        )
        self._fail_until = float("-inf")  # without a valid token, calls fail at once until this
        self._last_error: BaseException | None = None

    def __repr__(self) -> str:
        return f"ServiceCredentials(client_id={self._client_id!r}, audience={self._audience!r})"

    @property
    def generation(self) -> int:
        """Increases with every token fetched; `invalidate` uses it to drop only a token that
        was in use when a call failed, not one fetched since."""
        return self._generation

    def token(self) -> str:
        """A valid access token, from the cache or from authsvc. Blocks only when no valid token
        is cached: a due renewal runs in the background.

        Raises the `AuthError` authsvc answered (for example `InvalidClient`) when no usable
        token is cached and the fetch fails.
        """
        step, flight, cached = self._claim()
        if cached is not None:
            return cached.value
        if flight is None:
            raise self._failed_fast()
        return self._outcome(step, flight)

    async def token_async(self) -> str:
        """`token()` for asyncio code: answers at once from the cache, fetches on a thread."""
        step, flight, cached = self._claim()  # the lock is held only for the decision
        if cached is not None:
            return cached.value
        if flight is None:
            raise self._failed_fast()
        # Shielded: a fetch this call claimed must run even when the call is cancelled first (a
        # deadline). Queued behind other work in the executor and cancelled there, it would never
        # run, never release the flight, and every later caller would wait for it for ever.
        outcome = asyncio.ensure_future(asyncio.to_thread(self._outcome, step, flight))
        outcome.add_done_callback(_retrieve_exception)
        return await asyncio.shield(outcome)

    def wait_for_renewal(self, timeout: float | None = None) -> bool:
        """Wait until no fetch is in flight (a background renewal among them); False if one
        still is after `timeout`. Calls never need this: it is for tests and for a clean exit."""
        with self._lock:
            flight = self._flight
        return flight is None or flight.done.wait(timeout)

    def invalidate(self, generation: int | None = None) -> None:
        """Drop the cached token, so the next call fetches a fresh one. With `generation`, only
        if the cached token is still that one (a call that failed with it)."""
        with self._lock:
            cached = self._cached
            if cached is not None and (generation is None or cached.generation <= generation):
                self._cached = None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The `authorization` metadata for one call, for channels without call credentials."""
        return (("authorization", f"Bearer {self.token()}"),)

    def call_credentials(self) -> grpc.CallCredentials:
        """gRPC call credentials that attach the token to every call, on sync and aio channels.

        gRPC sends call credentials only over secure channels: TLS, or
        `grpc.local_channel_credentials()` on loopback."""
        return grpc.metadata_call_credentials(_TokenPlugin(self), name="authsvc")

    def channel_credentials(self, transport: grpc.ChannelCredentials) -> grpc.ChannelCredentials:
        """`transport` (TLS or local) with these call credentials composed in."""
        return grpc.composite_channel_credentials(transport, self.call_credentials())

    def secure_channel(
        self, target: str, transport: grpc.ChannelCredentials, **options: Any
    ) -> grpc.Channel:
        """A sync channel to `target` that sends a token with every call and, when the server
        refuses that token, retries a unary call once with a fresh one (`RetryOnUnauthenticated`)."""
        channel = grpc.secure_channel(target, self.channel_credentials(transport), **options)
        return grpc.intercept_channel(channel, RetryOnUnauthenticated(self))

    def aio_secure_channel(
        self, target: str, transport: grpc.ChannelCredentials, **options: Any
    ) -> grpc.aio.Channel:
        """The asyncio twin of `secure_channel`."""
        return grpc.aio.secure_channel(
            target,
            self.channel_credentials(transport),
            interceptors=[AsyncRetryOnUnauthenticated(self)],  # type: ignore[list-item]
            **options,
        )

    def close(self, timeout: float | None = None) -> None:
        """Stop fetching tokens, then close the channel to authsvc if these credentials opened
        it. A fetch in flight (a background renewal among them) is waited for first, up to
        `timeout` (by default the calls' own timeout), so that it ends with its answer instead of
        failing on a channel closed under it. A token still valid is served after `close`; a
        call that would need a new one raises `CredentialsClosed`."""
        with self._lock:
            self._closed = True
            flight = self._flight
        if flight is not None:
            flight.done.wait(self._timeout if timeout is None else timeout)
        if self._owns_channel:
            self._channel.close()

    def _claim(self) -> tuple[Step, _Flight | None, CachedToken | None]:
        """Decide under the lock what this caller does: the cached token to use (a renewal
        started in the background, if due), or the flight to fly or wait on."""
        with self._lock:
            step = self._next_step()
            if step is Step.CLOSED:
                raise CredentialsClosed(
                    "these ServiceCredentials were closed; create new ones to fetch a token"
                )
            if step is Step.USE_CACHED:
                return step, None, self._cached
            if step is Step.FAIL:
                return step, None, None
            if step is Step.WAIT:
                return step, self._flight, None
            self._flight = flight = _Flight()
            if step is Step.FETCH:
                return step, flight, None
            cached = self._cached
        threading.Thread(
            target=self._fetch, args=(flight,), name="authsvc-token-renewal", daemon=True
        ).start()
        return step, None, cached

    def _outcome(self, step: Step, flight: _Flight) -> str:
        """Fly the fetch (FETCH) or wait for it (WAIT); its token, or its error."""
        if step is Step.FETCH:
            self._fetch(flight)
        flight.done.wait()
        if flight.token is not None:
            return flight.token.value
        assert flight.error is not None
        still_valid = self._still_valid()
        if still_valid is not None:
            return still_valid.value  # a renewal failed; the old token has time left
        raise flight.error

    def _next_step(self) -> Step:
        """`next_step` on the current state; the caller holds the lock."""
        in_flight = self._flight is not None
        now = self._clock.now()
        return next_step(
            now, self._cached, in_flight, self._retry_at, self._fail_until, closed=self._closed
        )

    def _failed_fast(self) -> BaseException:
        """A copy of the last fetch's error, for a call that fails fast: raising the one object
        from many calls at once would pile every caller's frames onto its traceback."""
        error = self._last_error
        assert error is not None
        try:
            return copy.copy(error).with_traceback(None)
        except TypeError:  # an exception that cannot be rebuilt from its args
            return error

    def _still_valid(self) -> CachedToken | None:
        cached = self._cached
        if cached is not None and cached.valid_at(self._clock.now()):
            return cached
        return None

    def _fetch(self, flight: _Flight) -> None:
        # authsvc counts the token's lifetime from when it issued it, which is no later than
        # this: counted from the answer's arrival, a slow answer would stretch it, and the
        # token would be sent past its `exp`.
        requested_at = self._clock.now()
        try:
            answer = self._client.client_credentials(
                self._client_id, self._client_secret, scope=self._scope, audience=self._audience
            )
        except Exception as exc:  # whatever went wrong, the waiters must be released
            with self._lock:
                self._flight = None
                failed_at = self._clock.now()
                self._retry_at = failed_at + self._backoff.next_delay()
                self._fail_until = failed_at + self._fail_fast.next_delay()
                self._last_error = flight.error = exc
            flight.done.set()
            return
        with self._lock:
            self._backoff.reset()
            self._fail_fast.reset()
            self._retry_at = self._fail_until = float("-inf")
            self._last_error = None
            self._generation += 1
            flight.token = CachedToken(
                value=answer.access_token,
                renew_at=requested_at + answer.expires_in * self._renew_after,
                expires_at=requested_at + answer.expires_in,
                generation=self._generation,
            )
            self._cached = flight.token
            self._flight = None
        flight.done.set()


def _retrieve_exception(outcome: asyncio.Future[Any]) -> None:
    """Mark an outcome's exception retrieved: its caller may have gone (`token_async`), and
    the caller that is there gets it from the shield."""
    if not outcome.cancelled():
        outcome.exception()


class _TokenPlugin(grpc.AuthMetadataPlugin):
    """Attaches `authorization: Bearer …`; runs on a gRPC thread, so it may block."""

    def __init__(self, credentials: ServiceCredentials) -> None:
        self._credentials = credentials

    def __call__(
        self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback
    ) -> None:
        try:
            metadata = self._credentials.metadata()
        except Exception as exc:  # handed to gRPC, which fails the call with UNAVAILABLE
            callback((), exc)
            return
        callback(metadata, None)


class RetryOnUnauthenticated(_UnaryClientInterceptor):
    """Retries a unary call once with a fresh token when the server refuses the token
    (`refuses_bearer`: it expired or was revoked in flight), and not for an UNAUTHENTICATED
    about the request itself (a wrong client secret in it, `invalid_client`). Streaming calls
    are not retried: their requests may already be consumed."""

    def __init__(self, credentials: ServiceCredentials) -> None:
        self._credentials = credentials

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        outcome = continuation(client_call_details, request)
        error = outcome.exception()
        if isinstance(error, grpc.RpcError) and refuses_bearer(from_rpc_error(error)):
            # Read after the call: the token it carried, or a newer one (one dropped too many,
            # never one too few).
            self._credentials.invalidate(self._credentials.generation)
            return continuation(client_call_details, request)
        return outcome


class AsyncRetryOnUnauthenticated(_AsyncUnaryClientInterceptor):
    """The asyncio twin of `RetryOnUnauthenticated`."""

    def __init__(self, credentials: ServiceCredentials) -> None:
        self._credentials = credentials

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        call = await continuation(client_call_details, request)
        if await call.code() != grpc.StatusCode.UNAUTHENTICATED:  # the common case, at no cost
            return call
        try:
            await call  # raises the call's error, with its trailers
        except grpc.RpcError as error:
            if not refuses_bearer(from_rpc_error(error)):
                return call
        self._credentials.invalidate(self._credentials.generation)
        return await continuation(client_call_details, request)
