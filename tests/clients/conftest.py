"""Shared pieces for the authsvc_client tests: a token signer with keys of our own, a manual
clock, and a small in-test authority (a real gRPC server with a fake TokenService) for the parts
that run before or without the real authsvc."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import uuid
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from authsvc_client import PublishedKey, parse_jwks
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_client.v1 import authsvc_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OKPKey

from authsvc.events import Resumption, classify_cursor
from authsvc.storage.records import EventStreamRecord

EXAMPLES = Path(__file__).resolve().parents[2] / "clients" / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))

ISSUER = "https://auth.test"
AUDIENCE = "notes"
NOW = 1_800_000_000


class ManualClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = NOW) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


class Signer:
    """A signing key of our own and a way to mint access tokens with it."""

    def __init__(self, alg: str = "EdDSA") -> None:
        self.alg = alg
        if alg == "ES256":
            self.key: OKPKey | ECKey = ECKey.generate_key("P-256", auto_kid=True)
        else:
            self.key = OKPKey.generate_key("Ed25519", auto_kid=True)
        self.kid = self.key.kid or ""

    def jwk(self) -> dict[str, Any]:
        return {**self.key.as_dict(private=False), "alg": self.alg, "use": "sig"}

    def published(self) -> dict[str, PublishedKey]:
        return parse_jwks({"keys": [self.jwk()]})

    def public_key(self, state: str = "active") -> pb.PublicKey:
        jwk = self.jwk()
        return pb.PublicKey(
            kid=self.kid,
            kty=jwk["kty"],
            crv=jwk["crv"],
            x=jwk["x"],
            y=jwk.get("y", ""),
            alg=self.alg,
            use="sig",
            state=state,
        )

    def claims(self, **overrides: Any) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": "alice",
            "aud": [AUDIENCE],
            "exp": NOW + 600,
            "iat": NOW,
            "nbf": NOW,
            "jti": uuid.uuid4().hex,
            "client_id": "web",
            "scope": "notes:read notes:write",
            "sid": "family-1",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def forge(self, header: dict[str, Any], claims: dict[str, Any]) -> str:
        """A JWS signed by this (Ed25519) key with any header at all, bypassing joserfc's
        checks, to test headers a library would refuse to produce."""
        return self.sign_segments(b64(header), b64(claims))

    def sign_segments(self, header: str, payload: str) -> str:
        """A JWS of exactly these two segments, however malformed, with a valid Ed25519
        signature over them: what fails is then the segment, never the signature."""
        signature = self.key.private_key.sign(f"{header}.{payload}".encode())  # type: ignore[union-attr]
        encoded = base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
        return f"{header}.{payload}.{encoded}"

    def mint(self, header: dict[str, Any] | None = None, **overrides: Any) -> str:
        head = {"alg": self.alg, "typ": "at+jwt", "kid": self.kid, **(header or {})}
        head = {k: v for k, v in head.items() if v is not None}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "EdDSA is deprecated", SecurityWarning)
            claims = self.claims(**overrides)
            return jwt.encode(head, claims, self.key, algorithms=[head["alg"]], default_type=None)


def b64(data: Any) -> str:
    raw = json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture
def signer() -> Signer:
    return Signer()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def timestamp(seconds: float) -> Timestamp:
    return Timestamp(seconds=int(seconds), nanos=int((seconds % 1) * 1e9))


class FakeAuthority(authsvc_pb2_grpc.TokenServiceServicer):
    """PublishKeys, WatchRevocations and ClientCredentials backed by in-memory state, counting
    every call. ClientCredentials answers `token-<n>` for the n-th request.

    With `stream_id` empty it plays a server older than stream ids (names no stream, resumes any
    cursor); once set, it names its stream and refuses a cursor from another stream, or past its
    newest event, with OUT_OF_RANGE, as authsvc decides (`classify_cursor`)."""

    def __init__(self, signer: Signer) -> None:
        self.signers = [signer]
        self.publish_calls = 0
        self.watch_calls = 0
        self.watch_metadata: list[dict[str, str]] = []
        self.events: list[pb.RevocationEvent] = []
        self.changed = asyncio.Condition()
        self.max_age = 300
        self.available = True
        self.refuse_watch = False  # set: the stream is refused, PublishKeys still answers
        self.requested_cursors: list[int] = []
        self.requested_streams: list[str] = []
        self.stream_id = ""
        self.generation = 0  # bumping it ends every open stream
        self.token_requests = 0
        self.token_lifetime = 600
        self.hold: asyncio.Event | None = None  # set: token requests wait for it to be set
        self.requested = asyncio.Event()  # set by each token request as it arrives
        # Set: a stream's replay stops after its first event until this is set.
        self.hold_replay: asyncio.Event | None = None
        # Set: PublishKeys reads the keys, then answers only once this is set.
        self.hold_keys: asyncio.Event | None = None
        self.keys_requested = asyncio.Event()  # set by each PublishKeys as it arrives

    async def ClientCredentials(self, request: Any, context: Any) -> pb.AccessToken:
        self.token_requests += 1
        self.requested.set()
        if self.hold is not None:
            await self.hold.wait()
        if not self.available:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        return pb.AccessToken(
            access_token=f"token-{self.token_requests}",
            token_type="Bearer",
            expires_in=self.token_lifetime,
        )

    async def PublishKeys(self, request: Any, context: Any) -> pb.PublishKeysResponse:
        self.publish_calls += 1
        if not self.available:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        keys = [s.public_key() for s in self.signers]
        self.keys_requested.set()
        if self.hold_keys is not None:
            await self.hold_keys.wait()
        return pb.PublishKeysResponse(keys=keys, max_age_seconds=self.max_age)

    async def WatchRevocations(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self.watch_calls += 1
        self.watch_metadata.append(dict(context.invocation_metadata()))
        self.requested_cursors.append(request.cursor)
        self.requested_streams.append(request.stream_id)
        if not self.available:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        if self.refuse_watch:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "caller credential rejected")
        if self._not_in_stream(request):
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, "database replaced; start over")
        sent, generation = request.cursor, self.generation
        # As authsvc does (`RevocationFeed._deliver`): the events after the cursor, then a
        # heartbeat that says the subscriber has caught up, then events as they come.
        for event in [e for e in self.events if e.cursor > sent]:
            yield event
            sent = event.cursor
            if self.hold_replay is not None:
                await self.hold_replay.wait()
        yield pb.RevocationEvent(cursor=sent, heartbeat=pb.Heartbeat(), stream_id=self.stream_id)
        while generation == self.generation:
            async with self.changed:
                await self.changed.wait_for(
                    lambda after=sent: (
                        self._has_events_after(after) or generation != self.generation
                    )
                )
            for event in [e for e in self.events if e.cursor > sent]:
                yield event
                sent = event.cursor

    def _not_in_stream(self, request: pb.WatchRevocationsRequest) -> bool:
        if not self.stream_id:
            return False
        stream = EventStreamRecord(self.stream_id, len(self.events))
        resumption = classify_cursor(request.cursor, request.stream_id, stream)
        return resumption not in (Resumption.FRESH_START, Resumption.RESUME)

    async def replace_database(self, stream_id: str) -> None:
        """authsvc now runs on another database: another stream, no events yet. Open streams
        end, as they do when authsvc restarts."""
        async with self.changed:
            self.stream_id = stream_id
            self.events = []
            self.generation += 1
            self.changed.notify_all()

    async def restore(self, events: int) -> None:
        """authsvc now runs on a backup of its database taken after `events` events: the same
        stream, the later events gone. Open streams end."""
        async with self.changed:
            self.events = self.events[:events]
            self.generation += 1
            self.changed.notify_all()

    async def end_streams(self) -> None:
        async with self.changed:
            self.generation += 1
            self.changed.notify_all()

    def _has_events_after(self, cursor: int) -> bool:
        return any(e.cursor > cursor for e in self.events)

    async def publish(self, **event: Any) -> pb.RevocationEvent:
        cursor = len(self.events) + 1
        message = pb.RevocationEvent(cursor=cursor, stream_id=self.stream_id, **event)
        async with self.changed:
            self.events.append(message)
            self.changed.notify_all()
        return message


@pytest.fixture
async def fake_authority(signer: Signer) -> AsyncIterator[tuple[FakeAuthority, str]]:
    authority = FakeAuthority(signer)
    server = grpc.aio.server()
    authsvc_pb2_grpc.add_TokenServiceServicer_to_server(authority, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield authority, f"127.0.0.1:{port}"
    finally:
        # No grace: the revocation streams never end on their own.
        await server.stop(None)


async def wait_for(condition: Any, within: float = 5.0, interval: float = 0.002) -> float:
    """Poll `condition` until true, at most `within` seconds; returns the seconds it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not condition():
        if loop.time() - started > within:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)
    return loop.time() - started
