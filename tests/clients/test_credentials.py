"""ServiceCredentials: the decision each call makes (use the cache, renew in the background,
fetch, wait); against the real authsvc, single-flight fetching, renewal before expiry, and one
retry with a fresh token on UNAUTHENTICATED, on aio and sync channels; against the in-test
authority, renewals that hold no call, and the back-off between failed renewals."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import notes_pb2
import notes_pb2_grpc
import pytest
from authsvc_client import (
    CredentialsClosed,
    InvalidClient,
    ServiceCredentials,
    TemporarilyUnavailable,
)
from authsvc_client._credentials import CachedToken, Step, next_step

from authsvc.rpc.server import stop_server

from .conftest import FakeAuthority, ManualClock
from .deployments import Deployment, deployment, rejected_within


class CountingInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Counts the ClientCredentials requests that leave for authsvc."""

    def __init__(self) -> None:
        self.fetches = 0
        self._lock = threading.Lock()

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        if details.method.endswith("/ClientCredentials"):
            with self._lock:
                self.fetches += 1
        return continuation(details, request)


@pytest.fixture
async def deployed(tmp_path: Path) -> AsyncIterator[Deployment]:
    async with deployment(tmp_path) as deployed:
        yield deployed


@pytest.fixture
def counter() -> CountingInterceptor:
    return CountingInterceptor()


@pytest.fixture
def credentials(deployed: Deployment, counter: CountingInterceptor) -> Any:
    channel = grpc.intercept_channel(grpc.insecure_channel(deployed.authority.address), counter)
    creds = ServiceCredentials(
        channel,
        client_id=deployed.caller.client_id,
        client_secret=deployed.caller.client_secret,
        scope=["notes:read"],
        audience=["notes"],
        clock=deployed.authority.clock,
    )
    yield creds
    channel.close()


BOUND = 10.0  # seconds for a renewal in the background to end before a test gives up


async def renewed(creds: ServiceCredentials) -> None:
    """Until the renewal a call started in the background has ended."""
    assert await asyncio.to_thread(creds.wait_for_renewal, BOUND)


async def who_am_i(channel: grpc.aio.Channel) -> Any:
    return await notes_pb2_grpc.NotesStub(channel).WhoAmI(notes_pb2.WhoAmIRequest(), timeout=10)


async def test_one_hundred_concurrent_calls_make_one_token_request(
    deployed: Deployment, credentials: ServiceCredentials, counter: CountingInterceptor
) -> None:
    local = grpc.local_channel_credentials()
    async with credentials.aio_secure_channel(deployed.notes_address, local) as channel:
        answers = await asyncio.gather(*(who_am_i(channel) for _ in range(100)))
    assert {a.client_id for a in answers} == {deployed.caller.client_id}
    assert counter.fetches == 1


async def test_concurrent_threads_share_one_fetch(
    deployed: Deployment, credentials: ServiceCredentials, counter: CountingInterceptor
) -> None:
    # Threads, because the token fetch blocks; authsvc runs on this test's event loop.
    def hundred_at_once() -> set[str]:
        with ThreadPoolExecutor(max_workers=32) as pool:
            return set(pool.map(lambda _: credentials.token(), range(100)))

    tokens = await asyncio.to_thread(hundred_at_once)
    assert len(tokens) == 1
    assert counter.fetches == 1


async def test_a_token_is_renewed_after_most_of_its_lifetime(
    deployed: Deployment, credentials: ServiceCredentials, counter: CountingInterceptor
) -> None:
    ttl = deployed.authority.settings.access_token_ttl
    first = await credentials.token_async()
    deployed.authority.clock.advance(ttl * 0.8 - 5)
    assert await credentials.token_async() == first
    assert counter.fetches == 1
    deployed.authority.clock.advance(6)
    assert await credentials.token_async() == first  # renewing in the background meanwhile
    await renewed(credentials)
    assert await credentials.token_async() != first
    assert counter.fetches == 2


async def test_unauthenticated_is_retried_once_with_a_fresh_token_on_aio(
    deployed: Deployment, credentials: ServiceCredentials, counter: CountingInterceptor
) -> None:
    local = grpc.local_channel_credentials()
    async with credentials.aio_secure_channel(deployed.notes_address, local) as channel:
        await who_am_i(channel)
        stale = await credentials.token_async()
        await revoke_client_tokens(deployed, stale)
        answer = await who_am_i(channel)
    assert answer.client_id == deployed.caller.client_id
    assert counter.fetches == 2


async def test_unauthenticated_is_retried_once_with_a_fresh_token_on_sync(
    deployed: Deployment, credentials: ServiceCredentials, counter: CountingInterceptor
) -> None:
    local = grpc.local_channel_credentials()
    channel = credentials.secure_channel(deployed.notes_address, local)
    call = notes_pb2_grpc.NotesStub(channel).WhoAmI
    try:
        await asyncio.to_thread(call, notes_pb2.WhoAmIRequest(), timeout=10)
        await revoke_client_tokens(deployed, credentials.token())
        answer = await asyncio.to_thread(call, notes_pb2.WhoAmIRequest(), timeout=10)
    finally:
        channel.close()
    assert answer.client_id == deployed.caller.client_id
    assert counter.fetches == 2


class Refusing(grpc.GenericRpcHandler):
    """A server that answers every call UNAUTHENTICATED with the given `oauth-error`."""

    def __init__(self, error: str) -> None:
        self.error = error
        self.calls = 0

    def service(self, _details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        async def refuse(_request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            self.calls += 1
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "refused", (("oauth-error", self.error),)
            )
            raise AssertionError("abort raises")

        return grpc.unary_unary_rpc_method_handler(refuse)


@pytest.mark.parametrize("flavour", ["aio", "sync"])
@pytest.mark.parametrize(
    ("error", "retried"),
    [
        pytest.param("invalid_token", True, id="our-token-refused"),
        pytest.param("invalid_client", False, id="a-secret-in-the-request-refused"),
    ],
)
async def test_only_a_refusal_of_our_token_is_retried(
    credentials: ServiceCredentials, counter: CountingInterceptor, flavour: str, error: str,
    retried: bool,
) -> None:  # fmt: skip
    refusing = Refusing(error)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([refusing])
    port = server.add_secure_port("127.0.0.1:0", grpc.local_server_credentials())
    await server.start()
    local, target = grpc.local_channel_credentials(), f"127.0.0.1:{port}"
    try:
        await credentials.token_async()
        if flavour == "aio":
            async with credentials.aio_secure_channel(target, local) as channel:
                with pytest.raises(grpc.aio.AioRpcError):
                    await channel.unary_unary("/test.Refusing/Call")(b"", timeout=10)
        else:
            channel = credentials.secure_channel(target, local)
            try:
                call = channel.unary_unary("/test.Refusing/Call")
                with pytest.raises(grpc.RpcError):
                    await asyncio.to_thread(call, b"", timeout=10)
            finally:
                channel.close()
    finally:
        await server.stop(None)
    assert refusing.calls == (2 if retried else 1)
    # A retry goes with a fresh token; a wrong secret in the request says nothing about ours.
    assert counter.fetches == (2 if retried else 1)


async def revoke_client_tokens(deployed: Deployment, token: str) -> None:
    """Revoke every token of the caller so far, wait until notes refuses `token`, then move past
    the revocation's second (tokens of that second count as revoked too)."""
    await deployed.admin.revoke_client(deployed.caller.client_id, reason="rotate credentials")
    await rejected_within(deployed, token)
    deployed.authority.clock.advance(1)


async def test_a_failed_fetch_raises_the_oauth_error(deployed: Deployment) -> None:
    creds = ServiceCredentials(
        deployed.authority.address,
        client_id=deployed.caller.client_id,
        client_secret="asc_wrong",
        clock=deployed.authority.clock,
    )
    try:
        with pytest.raises(InvalidClient):
            await creds.token_async()
        local = grpc.local_channel_credentials()
        async with creds.aio_secure_channel(deployed.notes_address, local) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await who_am_i(channel)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "asc_wrong" not in repr(creds)
        assert "asc_wrong" not in (caught.value.details() or "")
    finally:
        creds.close()


async def test_a_failed_renewal_keeps_using_the_token_until_it_expires(
    deployed: Deployment, credentials: ServiceCredentials, counter: CountingInterceptor
) -> None:
    ttl = deployed.authority.settings.access_token_ttl
    first = await credentials.token_async()
    await stop_server(deployed.authority.server, grace=0)
    deployed.authority.clock.advance(ttl * 0.9)  # due for renewal, 60 s of life left
    assert await credentials.token_async() == first
    await renewed(credentials)
    assert counter.fetches == 2  # the renewal was tried
    assert await credentials.token_async() == first
    deployed.authority.clock.advance(ttl * 0.1)  # now expired: nothing to fall back on
    with pytest.raises(TemporarilyUnavailable):
        await credentials.token_async()


# The decision: use the cache, renew in the background, fetch, or wait. A token fetched at 0 for 600 s: renewed from 480,
# valid until 595 (5 s short of exp).

TOKEN = CachedToken(value="t", renew_at=480.0, expires_at=600.0, generation=1)
NO_BACKOFF = float("-inf")


@pytest.mark.parametrize(
    ("now", "cached", "in_flight", "retry_at", "step"),
    [
        pytest.param(0, None, False, NO_BACKOFF, Step.FETCH, id="no-token-fetches"),
        pytest.param(0, None, True, NO_BACKOFF, Step.WAIT, id="no-token-waits-for-the-flight"),
        pytest.param(0, None, False, 10.0, Step.FETCH, id="no-token-fetches-despite-backoff"),
        pytest.param(100, TOKEN, False, NO_BACKOFF, Step.USE_CACHED, id="fresh-token-is-used"),
        pytest.param(480, TOKEN, False, NO_BACKOFF, Step.RENEW, id="due-token-is-renewed"),
        pytest.param(500, TOKEN, True, NO_BACKOFF, Step.USE_CACHED, id="renewal-in-flight"),
        pytest.param(500, TOKEN, False, 502.0, Step.USE_CACHED, id="renewal-backing-off"),
        pytest.param(502, TOKEN, False, 502.0, Step.RENEW, id="backoff-over-renews"),
        pytest.param(595, TOKEN, False, 700.0, Step.FETCH, id="invalid-token-fetches-in-backoff"),
        pytest.param(595, TOKEN, True, NO_BACKOFF, Step.WAIT, id="invalid-token-waits-for-flight"),
        pytest.param(700, TOKEN, False, 800.0, Step.FETCH, id="expired-token-fetches"),
    ],
)
def test_the_next_step_for_a_call_that_needs_a_token(
    now: float, cached: CachedToken | None, in_flight: bool, retry_at: float, step: Step
) -> None:
    assert next_step(now, cached, in_flight, retry_at) is step


@pytest.mark.parametrize(
    ("now", "cached", "in_flight", "step"),
    [
        pytest.param(0, None, False, Step.FAIL, id="no-token-fails-fast-after-a-failed-fetch"),
        pytest.param(1, None, False, Step.FETCH, id="no-token-fetches-once-it-is-over"),
        pytest.param(0, None, True, Step.WAIT, id="a-flight-is-waited-for-all-the-same"),
        pytest.param(700, TOKEN, False, Step.FAIL, id="expired-token-fails-fast"),
        pytest.param(100, TOKEN, False, Step.USE_CACHED, id="a-valid-token-is-used-all-the-same"),
        pytest.param(480, TOKEN, False, Step.RENEW, id="a-due-renewal-is-not-held-back"),
    ],
)
def test_right_after_a_failed_fetch_a_call_without_a_valid_token_fails_fast(
    now: float, cached: CachedToken | None, in_flight: bool, step: Step
) -> None:
    fail_until = 1.0 if cached is None else 701.0
    assert next_step(now, cached, in_flight, NO_BACKOFF, fail_until) is step


@pytest.mark.parametrize(
    ("now", "cached", "in_flight", "fail_until", "step"),
    [
        pytest.param(0, None, False, NO_BACKOFF, Step.CLOSED, id="no-token-is-not-fetched"),
        pytest.param(700, TOKEN, False, NO_BACKOFF, Step.CLOSED, id="expired-is-not-fetched"),
        pytest.param(480, TOKEN, False, NO_BACKOFF, Step.USE_CACHED, id="due-is-not-renewed"),
        pytest.param(100, TOKEN, False, NO_BACKOFF, Step.USE_CACHED, id="valid-is-used"),
        pytest.param(0, None, True, NO_BACKOFF, Step.WAIT, id="a-flight-is-waited-for"),
        pytest.param(0, None, False, 1.0, Step.FAIL, id="a-failed-fetch-still-fails-fast"),
    ],
)
def test_after_close_no_token_is_fetched(
    now: float, cached: CachedToken | None, in_flight: bool, fail_until: float, step: Step
) -> None:
    assert next_step(now, cached, in_flight, NO_BACKOFF, fail_until, closed=True) is step


def test_a_token_renewed_at_expiry_is_not_sent_within_the_margin() -> None:
    late = CachedToken(value="t", renew_at=600.0, expires_at=600.0, generation=1)  # renew_after=1
    assert next_step(594.9, late, False, NO_BACKOFF) is Step.USE_CACHED
    assert next_step(595.0, late, False, NO_BACKOFF) is Step.FETCH


# The back-off between failed renewals, against the in-test authority (it fails a fetch at once;
# in the reported case each fetch waited out the 10 s timeout, so each one counted is a wait).


class LongestJitter(random.Random):
    """Jitter that always draws the ceiling, so the back-off is 10, 20, 40 s (the fetch timeout,
    doubling) exactly."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.fixture(params=["sync", "async"])
def token_of(request: pytest.FixtureRequest) -> Callable[[ServiceCredentials], Any]:
    """`token()` (on a thread: the authority runs on this test's loop) or `token_async()`, and
    then the end of the renewal it may have started, so the tests below count every try."""

    async def token_of(creds: ServiceCredentials) -> str:
        if request.param == "sync":
            token = await asyncio.to_thread(creds.token)
        else:
            token = await creds.token_async()
        await renewed(creds)
        return token

    return token_of


@pytest.fixture
def backing_off(fake_authority: tuple[FakeAuthority, str], clock: ManualClock) -> Any:
    creds = ServiceCredentials(
        fake_authority[1], client_id="svc", client_secret="asc_x", clock=clock, rng=LongestJitter()
    )
    yield creds
    creds.close()


async def test_after_a_failed_renewal_calls_use_the_cached_token_until_the_backoff_ends(
    fake_authority: tuple[FakeAuthority, str],
    clock: ManualClock,
    backing_off: ServiceCredentials,
    token_of: Callable[[ServiceCredentials], Any],
) -> None:
    authority = fake_authority[0]
    assert await token_of(backing_off) == "token-1"
    authority.available = False
    clock.advance(500)  # past renew_at (480 s), 100 s of life left
    for _ in range(5):  # one caller, calls one after another, as a sync service makes them
        assert await token_of(backing_off) == "token-1"
        clock.advance(0.25)
    assert authority.token_requests == 2  # one renewal tried, not one per call
    clock.advance(8.75)  # 10 s after the failure
    assert await token_of(backing_off) == "token-1"
    assert authority.token_requests == 3
    clock.advance(19.75)  # the back-off has doubled to 20 s
    assert await token_of(backing_off) == "token-1"
    assert authority.token_requests == 3
    clock.advance(0.25)
    assert await token_of(backing_off) == "token-1"
    assert authority.token_requests == 4


async def test_the_backoff_never_outlasts_the_cached_token(
    fake_authority: tuple[FakeAuthority, str],
    clock: ManualClock,
    backing_off: ServiceCredentials,
    token_of: Callable[[ServiceCredentials], Any],
) -> None:
    authority = fake_authority[0]
    await token_of(backing_off)
    authority.available = False
    clock.advance(590)  # renewal due, 5 s of valid life left
    assert await token_of(backing_off) == "token-1"  # renewal failed; retry in 10 s
    clock.advance(1)  # within the back-off, but 1 s short of the expiry margin
    assert await token_of(backing_off) == "token-1"
    clock.advance(4)  # within the expiry margin: the token is not sent, the call fetches
    with pytest.raises(TemporarilyUnavailable):
        await token_of(backing_off)
    assert authority.token_requests == 3


async def test_a_successful_renewal_resets_the_backoff(
    fake_authority: tuple[FakeAuthority, str],
    clock: ManualClock,
    backing_off: ServiceCredentials,
    token_of: Callable[[ServiceCredentials], Any],
) -> None:
    authority = fake_authority[0]
    await token_of(backing_off)
    authority.available = False
    for wait in (480, 10, 20):  # renewals fail 480, 490 and 510 s in: the next try waits 40 s
        clock.advance(wait)
        assert await token_of(backing_off) == "token-1"
    authority.available = True
    clock.advance(40)
    assert await token_of(backing_off) == "token-1"  # the renewal it started succeeded
    assert await token_of(backing_off) == "token-5"
    authority.available = False
    clock.advance(480)  # the new token is due
    assert await token_of(backing_off) == "token-5"
    clock.advance(10)  # back to the shortest delay
    assert await token_of(backing_off) == "token-5"
    assert authority.token_requests == 7


async def _renewal_held(
    authority: FakeAuthority, clock: ManualClock, creds: ServiceCredentials
) -> asyncio.Event:
    """token-1 fetched, then due and its renewal started, which authsvc holds until the event
    returned is set."""
    assert await creds.token_async() == "token-1"
    authority.hold = asyncio.Event()  # authsvc takes the request and does not answer yet
    clock.advance(500)  # past renew_at (480 s), 100 s of life left
    assert await creds.token_async() == "token-1"  # at once: the renewal is not awaited
    await authority.requested.wait()
    assert not creds.wait_for_renewal(0)  # still in flight
    return authority.hold


async def test_a_renewal_holds_no_call_while_authsvc_is_slow_to_answer(
    fake_authority: tuple[FakeAuthority, str],
    clock: ManualClock,
    backing_off: ServiceCredentials,
) -> None:
    authority = fake_authority[0]
    hold = await _renewal_held(authority, clock, backing_off)
    assert await backing_off.token_async() == "token-1"
    assert await asyncio.to_thread(backing_off.token) == "token-1"  # nor a sync caller
    hold.set()
    await renewed(backing_off)
    assert await backing_off.token_async() == "token-2"
    assert authority.token_requests == 2  # one renewal for every call that noticed it was due


async def test_close_lets_the_renewal_in_flight_finish_before_closing_the_channel(
    fake_authority: tuple[FakeAuthority, str],
    clock: ManualClock,
    backing_off: ServiceCredentials,
) -> None:
    authority = fake_authority[0]
    hold = await _renewal_held(authority, clock, backing_off)
    closing = asyncio.ensure_future(asyncio.to_thread(backing_off.close))
    done, _ = await asyncio.wait([closing], timeout=0.5)
    assert not done  # close() waits while authsvc holds the renewal's answer
    hold.set()
    await closing
    assert await backing_off.token_async() == "token-2"  # the renewal ended with its answer
    clock.advance(500)  # token-2 is due for renewal: none starts after close
    assert await backing_off.token_async() == "token-2"
    assert authority.token_requests == 2
    clock.advance(200)  # and expired: a call that needs a new token is told why it has none
    with pytest.raises(CredentialsClosed, match="closed"):
        await backing_off.token_async()
    assert authority.token_requests == 2


async def test_a_call_without_a_valid_token_waits_for_the_renewal_in_flight(
    fake_authority: tuple[FakeAuthority, str],
    clock: ManualClock,
    backing_off: ServiceCredentials,
) -> None:
    authority = fake_authority[0]
    hold = await _renewal_held(authority, clock, backing_off)
    clock.advance(100)  # the old token has expired while the renewal is held
    waiting = asyncio.create_task(backing_off.token_async())
    assert not waiting.done()
    hold.set()
    assert await asyncio.wait_for(waiting, BOUND) == "token-2"
    assert authority.token_requests == 2


async def test_without_a_token_a_down_authsvc_is_asked_once_per_back_off_not_once_per_call(
    fake_authority: tuple[FakeAuthority, str],
    clock: ManualClock,
    backing_off: ServiceCredentials,
    token_of: Callable[[ServiceCredentials], Any],
) -> None:
    authority = fake_authority[0]
    authority.available = False
    for _ in range(50):  # a service making its calls: each fails, one request reaches authsvc
        with pytest.raises(TemporarilyUnavailable):
            await token_of(backing_off)
    assert authority.token_requests == 1
    clock.advance(1)  # LongestJitter: the first window is 1 s
    with pytest.raises(TemporarilyUnavailable):
        await token_of(backing_off)
    assert authority.token_requests == 2
    clock.advance(1)  # the second window is 2 s: still failing fast
    with pytest.raises(TemporarilyUnavailable):
        await token_of(backing_off)
    assert authority.token_requests == 2
    authority.available = True
    clock.advance(1)
    assert await token_of(backing_off) == "token-3"
    authority.available = False
    clock.advance(600)  # expired; the success reset the back-off to its first window
    with pytest.raises(TemporarilyUnavailable):
        await token_of(backing_off)
    clock.advance(1)
    with pytest.raises(TemporarilyUnavailable):
        await token_of(backing_off)
    assert authority.token_requests == 5


async def test_a_fetch_claimed_by_a_call_cancelled_before_it_ran_still_runs(
    fake_authority: tuple[FakeAuthority, str], clock: ManualClock
) -> None:
    """`token_async` hands the fetch it claimed to the loop's executor. Cancelled (a deadline)
    while that job still waited for a worker, the job was cancelled with it: the fetch never ran,
    nothing released its flight, and every later caller waited for that flight for ever."""
    authority, address = fake_authority
    creds = ServiceCredentials(address, client_id="svc", client_secret="s3cret", clock=clock)
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(executor)  # this test's own loop
    busy = threading.Event()
    other_work = loop.run_in_executor(None, busy.wait)  # holds the only worker
    try:
        caller = asyncio.create_task(creds.token_async())
        await asyncio.sleep(0)  # it claims the fetch and queues it behind the other work
        assert not creds.wait_for_renewal(timeout=0)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        busy.set()
        await other_work
        assert await asyncio.to_thread(creds.wait_for_renewal, 5)
        assert await creds.token_async() == "token-1"
        assert authority.token_requests == 1
    finally:
        busy.set()
        creds.close(timeout=0)
        executor.shutdown(wait=False)


async def test_a_slow_answer_does_not_stretch_the_tokens_lifetime(
    fake_authority: tuple[FakeAuthority, str], clock: ManualClock
) -> None:
    """authsvc counts `expires_in` from when it issued the token, no later than the request: an
    answer that took 8 s, counted from its arrival, had the token sent 3 s past its `exp`."""
    authority, address = fake_authority
    creds = ServiceCredentials(address, client_id="svc", client_secret="s3cret", clock=clock)
    requested_at = clock.now()
    authority.hold = asyncio.Event()
    try:
        fetch = asyncio.create_task(asyncio.to_thread(creds.token))
        await authority.requested.wait()
        clock.advance(8)  # authsvc, or the network, is slow to answer
        authority.hold.set()
        first = await fetch
        authority.hold = None
        clock.advance(requested_at + authority.token_lifetime + 1 - clock.now())  # past its exp
        assert await asyncio.to_thread(creds.token) != first
    finally:
        await asyncio.to_thread(creds.close, 5)
