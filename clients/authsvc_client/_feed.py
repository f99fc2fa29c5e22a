"""Keeping a verifier's keys and revocations current: the only I/O the interceptors do.

A feed runs two loops next to the protected service: one refreshes the key cache on schedule
(and on demand: an unknown `kid`, a `key_changed` event), one holds a `WatchRevocations` stream
open and applies its events, reconnecting with jittered exponential backoff and resuming from the
last cursor. `AsyncAuthorityFeed` runs them as asyncio tasks, `ThreadedAuthorityFeed` on daemon
threads for sync gRPC servers. Both refresh keys single-flight.

When authsvc's database was reset, replaced or restored, authsvc answers the resume with
OUT_OF_RANGE: the feed then starts over from cursor 0, keeping every revocation it holds, and
fetches the keys again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from ._credentials import ServiceCredentials
from ._errors import AuthError, from_rpc_error, refuses_bearer
from ._jwks import keys_from_response
from ._revocations import Backoff
from ._verifier import LocalVerifier
from .v1 import authsvc_pb2 as pb
from .v1 import authsvc_pb2_grpc

__all__ = ["AsyncAuthorityFeed", "ThreadedAuthorityFeed"]

log = logging.getLogger("authsvc_client")

# How often the key loop looks at the (injectable) clock to see whether a refresh is due.
_SCHEDULE_TICK = 1.0
_CALL_TIMEOUT = 10.0
#: How long a call whose token names an unknown `kid` waits for the key refresh it started, in a
#: sync server: grpc.server runs every call's interceptors on its one polling thread, so while
#: that call waits, no other call is let in. The refresh goes on in the background past this.
UNKNOWN_KID_WAIT = 1.0


class _FeedBase:
    """What both feeds do with what the authority sends."""

    def __init__(
        self,
        verifier: LocalVerifier,
        credentials: ServiceCredentials | None,
        backoff_factory: Callable[[], Backoff],
    ) -> None:
        self.verifier = verifier
        self._credentials = credentials
        self._backoff_factory = backoff_factory
        self._fetches_started = 0
        self._installed_fetch = 0  # the number of the newest fetch whose keys were installed

    def _served_since(self, arrival: int) -> bool:
        """Whether a key fetch that started after a caller arrived (`arrival`, the number of
        fetches started then) has installed its keys. Only such a fetch read the key ring after
        whatever made the caller ask (a key_changed event, an unknown kid); one already in
        flight when it asked may have read the ring before, and does not serve it."""
        return self._installed_fetch > arrival

    def _fetch_starting(self) -> int:
        self._fetches_started += 1
        return self._fetches_started

    def _install(self, answer: pb.PublishKeysResponse) -> None:
        self.verifier.keys.install(keys_from_response(answer), answer.max_age_seconds)

    def _key_change_needs_refresh(self, event: pb.RevocationEvent) -> bool:
        """Apply a key change; True when the key set must be fetched again."""
        change = event.key_changed
        if change.state == "purged":
            self.verifier.forget_key(change.kid)
            return False
        known = self.verifier.keys.keys.get(change.kid)
        return known is None or known.state != change.state

    def _scheduled_refresh_allowed(self) -> bool:
        """The cached set is past its max age, and no fetch was tried within the minimum
        interval (a failing authsvc is retried at that pace, not once a tick)."""
        return self.verifier.keys.refresh_due() and self.verifier.keys.claim_refresh()

    def _stream_opened(self) -> None:
        self.verifier.revocations.stream_opened()

    def _on_event(self, event: pb.RevocationEvent) -> None:
        revocations = self.verifier.revocations
        revocations.apply(event)
        if revocations.caught_up:  # ready once the replay has ended, not at its first event
            self._mark_ready()
        if event.WhichOneof("event") == "key_changed" and self._key_change_needs_refresh(event):
            self._wake_key_refresh()

    def _watch_request(self) -> pb.WatchRevocationsRequest:
        revocations = self.verifier.revocations
        return pb.WatchRevocationsRequest(
            cursor=revocations.cursor, stream_id=revocations.stream_id
        )

    def _started_over(self, exc: grpc.RpcError | AuthError) -> bool:
        """Start over if authsvc said our cursor is not in its database's event stream
        (OUT_OF_RANGE): resume from cursor 0 next, keep the revocations held, fetch the keys
        again. False for any other failure, and for OUT_OF_RANGE to a fresh start (nothing to
        start over from: an ordinary failure, retried with backoff)."""
        revocations = self.verifier.revocations
        if _status(exc) != grpc.StatusCode.OUT_OF_RANGE or revocations.cursor == 0:
            return False
        cursor, stream_id = revocations.cursor, revocations.stream_id or "unnamed"
        held = revocations.start_over()
        self._wake_key_refresh()
        log.warning(
            "authsvc revocation stream: cursor %d of stream %s is not in authsvc's events (%s); "
            "starting over from cursor 0, keeping the %d revocations already known until they "
            "expire, and fetching the keys again. Expected once after authsvc's database was "
            "reset or restored from a backup.",
            cursor,
            stream_id,
            _details(exc),
            held,
        )
        return True

    def _drop_refused_token(self, exc: grpc.RpcError | AuthError) -> bool:
        """authsvc refused our own token (UNAUTHENTICATED), say because it expired or the keys
        that signed it went with a replaced database: fetch a fresh one next time instead of
        presenting this one until it expires. True if it did."""
        error = from_rpc_error(exc) if isinstance(exc, grpc.RpcError) else None
        if error is None or not refuses_bearer(error) or self._credentials is None:
            return False
        self._credentials.invalidate()
        return True

    def _stream_failed(self, exc: grpc.RpcError | AuthError, *, delivered: bool) -> None:
        """Drop a refused token, and log why the stream failed: info where a stream that was
        delivering had its token refused (authsvc ends a stream once the token it was opened
        with expires, routinely), a warning otherwise."""
        refused = self._drop_refused_token(exc)
        level = logging.INFO if refused and delivered else logging.WARNING
        log.log(level, "authsvc revocation stream failed: %s", _describe(exc))

    def _wake_key_refresh(self) -> None:
        raise NotImplementedError

    def _mark_ready(self) -> None:
        raise NotImplementedError


def _unexpected_refresh_failure() -> None:
    """Log a key refresh that failed otherwise than by authsvc's answer: credentials closed
    under a running interceptor, a closed channel, a bug. It must not escape: it ended the key
    loop for good (nothing refreshed the keys again), and reached the caller whose unknown `kid`
    had asked for the refresh as UNKNOWN."""
    log.exception("authsvc key refresh failed unexpectedly; keeping the keys held, retrying")


def _refresher() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(1, "authsvc-keys-unknown-kid")


class AsyncAuthorityFeed(_FeedBase):
    """The feed as asyncio tasks, for `grpc.aio` servers."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        verifier: LocalVerifier,
        *,
        credentials: ServiceCredentials | None = None,
        backoff_factory: Callable[[], Backoff] = Backoff,
    ) -> None:
        super().__init__(verifier, credentials, backoff_factory)
        self._stub: Any = authsvc_pb2_grpc.TokenServiceStub(channel)
        self._refresh_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._wake_keys = asyncio.Event()
        self._ready = asyncio.Event()
        self._refreshes: set[asyncio.Task[bool]] = set()  # see `refresh_for_unknown_kid`

    async def start(self, ready_timeout: float = 5.0) -> None:
        """Fetch keys, open the revocation stream, and wait (at most `ready_timeout`) until the
        keys have loaded and the stream has replayed every revocation authsvc holds (the
        heartbeat after its replay). Past the timeout the loops keep trying in the background."""
        self._tasks = [
            asyncio.create_task(self._key_loop(), name="authsvc-keys"),
            asyncio.create_task(self._watch_loop(), name="authsvc-revocations"),
        ]
        try:
            async with asyncio.timeout(ready_timeout):
                await self.refresh_keys()
                await self._ready.wait()
        except TimeoutError:
            log.warning("authsvc not ready after %.1fs; retrying in the background", ready_timeout)

    async def close(self) -> None:
        """Stop both loops, and any key refresh still in flight."""
        tasks = [*self._tasks, *self._refreshes]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def refresh_keys(self) -> bool:
        """Fetch the key set now, single-flight: callers arriving while a fetch is in flight
        wait for it, then share one fetch after it (`_served_since`), however many they are.
        True when keys were installed."""
        arrival = self._fetches_started
        async with self._refresh_lock:
            if self._served_since(arrival):
                return True
            fetch = self._fetch_starting()
            self.verifier.keys.note_attempt()
            try:
                answer = await self._stub.PublishKeys(
                    pb.PublishKeysRequest(), metadata=await self._metadata(), timeout=_CALL_TIMEOUT
                )
            except (grpc.RpcError, AuthError) as exc:
                self._drop_refused_token(exc)
                log.warning("authsvc key refresh failed: %s", _describe(exc))
                return False
            except Exception:
                _unexpected_refresh_failure()
                return False
            self._install(answer)
            self._installed_fetch = fetch
            return True

    async def refresh_for_unknown_kid(self) -> bool:
        """Refresh because a token named an unknown `kid`, unless one was tried within the
        minimum interval. True when a refresh ran and installed keys."""
        if not self.verifier.keys.claim_refresh():
            return False
        # The refresh runs in a task of the feed's own: run in the caller's task, it was
        # cancelled with the call when the caller hung up, while the claim still counted, and
        # anyone sending a made-up `kid` and hanging up once an interval kept new keys out.
        refresh = asyncio.create_task(self.refresh_keys(), name="authsvc-keys-unknown-kid")
        self._refreshes.add(refresh)
        refresh.add_done_callback(self._refreshes.discard)
        try:
            return await asyncio.shield(refresh)
        except asyncio.CancelledError:
            caller = asyncio.current_task()
            if refresh.cancelled() and not (caller is not None and caller.cancelling()):
                # close() ended the refresh, not the caller's own cancellation: the call is
                # judged on the keys held, as behind the sync twin (a CancelledError reaching
                # grpc.aio here would leave the call without a status until its deadline).
                return False
            raise

    async def _key_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_SCHEDULE_TICK):
                    await self._wake_keys.wait()
            woken = self._wake_keys.is_set()
            self._wake_keys.clear()
            if woken or self._scheduled_refresh_allowed():
                await self.refresh_keys()

    async def _watch_loop(self) -> None:
        backoff = self._backoff_factory()
        while True:
            delivered = False
            try:
                call = self._stub.WatchRevocations(
                    self._watch_request(), metadata=await self._metadata()
                )
                self._stream_opened()
                async for event in call:
                    self._on_event(event)
                    backoff.reset()
                    delivered = True
                log.info("authsvc revocation stream ended; reconnecting")
            except (grpc.RpcError, AuthError) as exc:
                if self._started_over(exc):
                    continue
                self._stream_failed(exc, delivered=delivered)
            except Exception:
                # A bug must not end the subscription for good; staleness would then reject
                # (or silently accept) every call from the bound on.
                log.exception("authsvc revocation stream: unexpected error; reconnecting")
            await asyncio.sleep(backoff.next_delay())

    def _wake_key_refresh(self) -> None:
        self._wake_keys.set()

    def _mark_ready(self) -> None:
        self._ready.set()

    async def _metadata(self) -> tuple[tuple[str, str], ...]:
        if self._credentials is None:
            return ()
        return (("authorization", f"Bearer {await self._credentials.token_async()}"),)


class ThreadedAuthorityFeed(_FeedBase):
    """The feed on two daemon threads, for sync `grpc.server` servers."""

    def __init__(
        self,
        channel: grpc.Channel,
        verifier: LocalVerifier,
        *,
        credentials: ServiceCredentials | None = None,
        backoff_factory: Callable[[], Backoff] = Backoff,
    ) -> None:
        super().__init__(verifier, credentials, backoff_factory)
        self._stub: Any = authsvc_pb2_grpc.TokenServiceStub(channel)
        self._refresh_lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake_keys = threading.Event()
        self._threads: list[threading.Thread] = []
        self._call_lock = threading.Lock()
        self._call: Any = None  # the open WatchRevocations call, cancelled by close()
        self._key_calls: set[Any] = set()  # PublishKeys calls in flight, cancelled by close()
        self._ready = threading.Event()
        self._keys_loaded = threading.Event()
        self._refresher = _refresher()  # see `refresh_for_unknown_kid`; one per start

    def start(self, ready_timeout: float = 5.0) -> None:
        """Fetch keys, open the revocation stream, and wait (at most `ready_timeout`) until the
        keys have loaded and the stream has replayed every revocation authsvc holds (the
        heartbeat after its replay). Past the timeout the loops keep trying in the background."""
        self._threads = [
            threading.Thread(target=self._key_loop, name="authsvc-keys", daemon=True),
            threading.Thread(target=self._watch_loop, name="authsvc-revocations", daemon=True),
        ]
        # The key thread fetches the keys at once, and this thread only waits for them: fetched
        # here, a PublishKeys that authsvc takes and does not answer held start() for the call's
        # own timeout (10 s), whatever `ready_timeout` said.
        deadline = time.monotonic() + ready_timeout
        self._refresher = _refresher()
        self._wake_keys.set()
        for thread in self._threads:
            thread.start()
        if not (
            self._keys_loaded.wait(ready_timeout)
            and self._ready.wait(max(0.0, deadline - time.monotonic()))
        ):
            log.warning("authsvc not ready after %.1fs; retrying in the background", ready_timeout)

    def close(self) -> None:
        """Stop both threads and wait for them."""
        self._stopping.set()
        self._wake_keys.set()
        with self._call_lock:
            for call in (self._call, *self._key_calls):
                if call is not None:
                    call.cancel()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        self._refresher.shutdown(wait=True, cancel_futures=True)

    def refresh_keys(self) -> bool:
        """Fetch the key set now, single-flight as `AsyncAuthorityFeed.refresh_keys`. True when
        keys were installed."""
        arrival = self._fetches_started
        with self._refresh_lock:
            if self._served_since(arrival):
                return True
            fetch = self._fetch_starting()
            self.verifier.keys.note_attempt()
            try:
                answer = self._publish_keys()
            except grpc.FutureCancelledError:
                return False  # close() cancelled it
            except (grpc.RpcError, AuthError) as exc:
                self._drop_refused_token(exc)
                log.warning("authsvc key refresh failed: %s", _describe(exc))
                return False
            except Exception:
                _unexpected_refresh_failure()
                return False
            self._install(answer)
            self._installed_fetch = fetch
            self._keys_loaded.set()
            return True

    def _publish_keys(self) -> pb.PublishKeysResponse:
        """PublishKeys as a call `close()` can cancel: a refresh in flight would otherwise keep
        its thread, and the process's exit, for the call's timeout."""
        call = self._stub.PublishKeys.future(
            pb.PublishKeysRequest(), metadata=self._metadata(), timeout=_CALL_TIMEOUT
        )
        with self._call_lock:
            self._key_calls.add(call)
        try:
            if self._stopping.is_set():
                call.cancel()
            answer: pb.PublishKeysResponse = call.result()
            return answer
        finally:
            with self._call_lock:
                self._key_calls.discard(call)

    def refresh_for_unknown_kid(self) -> bool:
        """Refresh because a token named an unknown `kid`, at most once per minimum interval,
        waiting for it at most `UNKNOWN_KID_WAIT` seconds. Waited for in full, an authsvc that
        took PublishKeys and did not answer held the whole server for the call's 10 s timeout,
        once an interval, for anyone sending a made-up `kid`."""
        if self._stopping.is_set() or not self.verifier.keys.claim_refresh():
            return False  # closed: the call is judged on the keys held
        try:
            refresh = self._refresher.submit(self.refresh_keys)
        except RuntimeError:  # close() shut the refresher down since the check above
            return False
        try:
            return refresh.result(timeout=UNKNOWN_KID_WAIT)
        except concurrent.futures.TimeoutError:
            log.warning(
                "authsvc key refresh for an unknown kid took over %.1fs; refusing the call and "
                "letting the refresh finish in the background",
                UNKNOWN_KID_WAIT,
            )
            return False

    def _key_loop(self) -> None:
        while not self._stopping.is_set():
            woken = self._wake_keys.wait(_SCHEDULE_TICK)
            self._wake_keys.clear()
            if self._stopping.is_set():
                return
            if woken or self._scheduled_refresh_allowed():
                self.refresh_keys()

    def _watch_loop(self) -> None:
        backoff = self._backoff_factory()
        while not self._stopping.is_set():
            delivered = False
            try:
                call = self._stub.WatchRevocations(self._watch_request(), metadata=self._metadata())
                with self._call_lock:
                    self._call = call
                if self._stopping.is_set():
                    call.cancel()
                self._stream_opened()
                for event in call:
                    self._on_event(event)
                    backoff.reset()
                    delivered = True
            except (grpc.RpcError, AuthError) as exc:
                if self._stopping.is_set():
                    return
                if self._started_over(exc):
                    continue
                self._stream_failed(exc, delivered=delivered)
            except Exception:
                log.exception("authsvc revocation stream: unexpected error; reconnecting")
            self._stopping.wait(backoff.next_delay())

    def _wake_key_refresh(self) -> None:
        self._wake_keys.set()

    def _mark_ready(self) -> None:
        self._ready.set()

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        if self._credentials is None:
            return ()
        return self._credentials.metadata()


#: How much of a server's error details a log line repeats.
MAX_LOGGED_DETAILS = 200


def _describe(exc: BaseException) -> str:
    """A failure as the feed's log lines say it: the OAuth error and its description, or the
    gRPC status and the server's details, which say what happened ("fell behind; resume from
    cursor"), cut to MAX_LOGGED_DETAILS. authsvc's details never carry a credential."""
    if isinstance(exc, AuthError):
        return f"{exc.error}: {exc.description}"
    status = getattr(_status(exc), "name", type(exc).__name__)
    details = _details(exc)[:MAX_LOGGED_DETAILS]
    return f"{status}: {details}" if details else status


def _status(exc: BaseException) -> grpc.StatusCode | None:
    if isinstance(exc, AuthError):
        return exc.status
    code = getattr(exc, "code", None)
    status = code() if callable(code) else None
    return status if isinstance(status, grpc.StatusCode) else None


def _details(exc: BaseException) -> str:
    if isinstance(exc, AuthError):
        return exc.description
    details = getattr(exc, "details", None)
    text = details() if callable(details) else None
    return text if isinstance(text, str) else ""
