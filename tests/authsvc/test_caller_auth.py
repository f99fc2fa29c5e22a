"""Who may call what: the pure `decide`, the policies read from the proto, and every RPC of both
services refusing a caller without a token or without the method's permission, changing nothing."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_client.v1 import authsvc_pb2_grpc
from google.protobuf.message import Message

from authsvc import pkce
from authsvc.client_registry import ADMIN_SCOPES, RegisteredClient
from authsvc.errors import InsufficientScope, Unauthenticated
from authsvc.rpc.caller_auth import (
    Caller,
    CallerAuthInterceptor,
    MethodPolicy,
    bearer_token,
    decide,
    method_policies,
)
from authsvc.rpc.handlers import wrap_handler
from authsvc.testing import RunningAuthority, start_authority
from tests.authsvc.calls import (
    INSUFFICIENT_SCOPE,
    UNAUTHENTICATED,
    Metadata,
    bearer,
    database_rows,
    refused,
)
from tests.authsvc.conftest import APP_REDIRECT_URI

SERVICES = pb.DESCRIPTOR.services_by_name
METHODS = [
    (service.full_name, method) for service in SERVICES.values() for method in service.methods
]
PATHS = {f"/{service}/{method.name}" for service, method in METHODS}
ANONYMOUS = {"/authsvc.v1.TokenService/ClientCredentials", "/authsvc.v1.TokenService/PublishKeys"}


def required_scopes(method: Any) -> tuple[str, ...]:
    return tuple(method.GetOptions().Extensions[pb.required_scopes])


# decide, the pure verdict

ADMIN = Caller("admin", frozenset(ADMIN_SCOPES), "bearer")
NOBODY = Caller("nobody", frozenset(), "bearer")


@pytest.mark.parametrize(
    ("policy", "caller", "verdict"),
    [
        pytest.param(None, None, None, id="outside-authsvc-is-public"),
        pytest.param(MethodPolicy((), anonymous=True), None, None, id="anonymous-method"),
        pytest.param(MethodPolicy(()), NOBODY, None, id="authenticated-only"),
        pytest.param(MethodPolicy(("authsvc:revoke",)), ADMIN, None, id="has-scope"),
        pytest.param(MethodPolicy(()), None, Unauthenticated, id="no-caller"),
        pytest.param(
            MethodPolicy(("authsvc:revoke",)), None, Unauthenticated, id="no-caller-scoped"
        ),
        pytest.param(MethodPolicy(("authsvc:revoke",)), NOBODY, InsufficientScope, id="no-scope"),
        pytest.param(
            MethodPolicy(("authsvc:revoke", "authsvc:x")),
            ADMIN,
            InsufficientScope,
            id="needs-all-scopes",
        ),
    ],
)
def test_decide(policy: MethodPolicy | None, caller: Caller | None, verdict: type | None) -> None:
    result = decide(policy, caller)
    assert (type(result) if result is not None else None) is verdict


def test_decide_names_the_missing_permission() -> None:
    refusal = decide(MethodPolicy(("authsvc:revoke", "authsvc:issue")), NOBODY)
    assert refusal is not None
    assert refusal.description == "caller lacks permission: authsvc:revoke authsvc:issue"


@pytest.mark.parametrize(
    ("metadata", "token"),
    [
        pytest.param({"authorization": "Bearer abc.def"}, "abc.def", id="bearer"),
        pytest.param({"authorization": "bearer abc"}, "abc", id="scheme-case-insensitive"),
        pytest.param({"authorization": "Bearer  abc "}, "abc", id="surrounding-space"),
        pytest.param({"authorization": "Basic abc"}, None, id="basic"),
        pytest.param({"authorization": "Bearer "}, None, id="empty-token"),
        pytest.param({"authorization": "Bearer"}, None, id="no-token"),
        pytest.param({"authorization": "abc"}, None, id="no-scheme"),
        pytest.param({"authorization": b"Bearer abc"}, None, id="binary"),
        pytest.param({}, None, id="absent"),
    ],
)
def test_bearer_token(metadata: dict[str, Any], token: str | None) -> None:
    assert bearer_token(metadata.items()) == token


def test_two_authorization_headers_are_no_bearer_token() -> None:
    # The last had counted: a proxy in front that checked the first let the second through.
    twice = (("authorization", "Bearer first"), ("authorization", "Bearer second"))
    assert bearer_token(twice) is None
    assert bearer_token((("x-other", "1"), *twice[:1])) == "first"


def test_policies_cover_every_method_from_the_proto() -> None:
    policies = method_policies()
    assert set(policies) == PATHS
    assert {path for path, p in policies.items() if p.anonymous} == ANONYMOUS
    for service, method in METHODS:
        assert policies[f"/{service}/{method.name}"].required_scopes == required_scopes(method)


def test_anonymous_verify_is_opt_in() -> None:
    policies = method_policies(allow_anonymous_verify=True)
    assert {path for path, p in policies.items() if p.anonymous} == ANONYMOUS | {
        "/authsvc.v1.TokenService/Verify"
    }


# Every RPC over the wire


@dataclass
class World:
    """What the requests below refer to: an app, a user, a live family, an unredeemed code."""

    running: RunningAuthority
    app: RegisteredClient
    pair: Any
    code: str
    verifier: str


VERIFIER = "v" * 43

REQUESTS: dict[str, Callable[[World], Message]] = {
    "IssueTokenPair": lambda w: pb.IssueTokenPairRequest(
        subject="alice", client_id=w.app.client_id
    ),
    "Rotate": lambda w: pb.RotateRequest(refresh_token=w.pair.refresh_token),
    "Verify": lambda w: pb.VerifyRequest(token=w.pair.access.token, audience="api"),
    "Introspect": lambda w: pb.IntrospectRequest(token=w.pair.refresh_token),
    "RevokeFamily": lambda w: pb.RevokeFamilyRequest(family_id=w.pair.family.family_id),
    "PublishKeys": lambda w: pb.PublishKeysRequest(),
    "ClientCredentials": lambda w: pb.ClientCredentialsRequest(
        client_id=w.running.admin.client_id, client_secret=w.running.admin.client_secret
    ),
    "Revoke": lambda w: pb.RevokeRequest(token=w.pair.refresh_token),
    "RevokeSubject": lambda w: pb.RevokeSubjectRequest(subject="alice"),
    "RevokeClient": lambda w: pb.RevokeClientRequest(client_id=w.app.client_id, disable=True),
    "ListSessions": lambda w: pb.ListSessionsRequest(subject="alice"),
    "WatchRevocations": lambda w: pb.WatchRevocationsRequest(cursor=0),
    "RotateKeys": lambda w: pb.RotateKeysRequest(immediate=True),
    "AuthenticateClient": lambda w: pb.AuthenticateClientRequest(
        client_id=w.app.client_id, client_secret=w.app.client_secret
    ),
    "GetClient": lambda w: pb.GetClientRequest(client_id=w.app.client_id),
    "AuthenticateUser": lambda w: pb.AuthenticateUserRequest(
        username="alice", password="correct horse battery"
    ),
    "CreateAuthorizationCode": lambda w: pb.CreateAuthorizationCodeRequest(
        client_id=w.app.client_id,
        redirect_uri=APP_REDIRECT_URI,
        subject="alice",
        # A request of its own: the world's code answered the one VERIFIER names.
        code_challenge=pkce.s256(secrets.token_urlsafe(32)),
        code_challenge_method="S256",
    ),
    "DenyAuthorization": lambda w: pb.DenyAuthorizationRequest(
        client_id=w.app.client_id,
        subject="alice",
        code_challenge=pkce.s256(secrets.token_urlsafe(32)),
    ),
    "ExchangeAuthorizationCode": lambda w: pb.ExchangeAuthorizationCodeRequest(
        client_id=w.app.client_id,
        code=w.code,
        redirect_uri=APP_REDIRECT_URI,
        code_verifier=w.verifier,
    ),
}
# Calls that write when allowed: a refusal of these must leave the database as it was.
WRITERS = {
    "IssueTokenPair",
    "Rotate",
    "RevokeFamily",
    "Revoke",
    "RevokeSubject",
    "RevokeClient",
    "RotateKeys",
    "CreateAuthorizationCode",
    "DenyAuthorization",
    "ExchangeAuthorizationCode",
}


def test_the_request_table_covers_every_method() -> None:
    assert set(REQUESTS) == {method.name for _, method in METHODS}


async def _make_world(running: RunningAuthority) -> World:
    app = await running.create_client(
        "app",
        grant_types=["authorization_code", "refresh_token"],
        scopes=["read"],
        audiences=["api"],
        redirect_uris=[APP_REDIRECT_URI],
    )
    await running.create_user("alice", "correct horse battery")
    pair = await running.authority.issue_token_pair(subject="alice", client_id=app.client_id)
    code = await running.authority.create_authorization_code(
        client_id=app.client_id,
        redirect_uri=APP_REDIRECT_URI,
        subject="alice",
        code_challenge=pkce.s256(VERIFIER),
        code_challenge_method="S256",
    )
    return World(running, app, pair, code.code, VERIFIER)


@pytest.fixture
async def world(running: RunningAuthority) -> World:
    """A world of its own, for tests that change it."""
    return await _make_world(running)


@dataclass
class Shared:
    world: World
    channel: grpc.aio.Channel
    tokens: authsvc_pb2_grpc.TokenServiceStub
    admin: Metadata


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shared]:
    """One world for the refusal tests: each proves for itself that its call changed nothing, so
    they need not pay for an authority each."""
    async with start_authority(tmp_path_factory.mktemp("caller-auth")) as running:
        world = await _make_world(running)
        async with grpc.aio.insecure_channel(running.address) as channel:
            tokens = authsvc_pb2_grpc.TokenServiceStub(channel)
            yield Shared(world, channel, tokens, bearer(await running.admin_token()))


async def invoke(
    channel: grpc.aio.Channel, service: str, method: Any, request: Message, metadata: Metadata
) -> Any:
    """Call `method` generically; for a stream, its first message."""
    path = f"/{service}/{method.name}"
    response_class = getattr(pb, method.output_type.name)
    if method.server_streaming:
        call = channel.unary_stream(
            path,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_class.FromString,
        )(request, metadata=metadata)
        try:
            return await call.read()
        finally:
            call.cancel()
    return await channel.unary_unary(
        path,
        request_serializer=type(request).SerializeToString,
        response_deserializer=response_class.FromString,
    )(request, metadata=metadata)


def _params(only: Callable[[Any], bool]) -> list[Any]:
    return [
        pytest.param(service, method, id=f"{service.rsplit('.', 1)[1]}.{method.name}")
        for service, method in METHODS
        if only(method)
    ]


async def _family_is_live(world: World, admin: Metadata, tokens: Any) -> None:
    sessions = await tokens.ListSessions(pb.ListSessionsRequest(subject="alice"), metadata=admin)
    assert [s.family_id for s in sessions.sessions] == [world.pair.family.family_id]
    await tokens.Verify(
        pb.VerifyRequest(token=world.pair.access.token, audience="api"), metadata=admin
    )


@pytest.mark.parametrize(
    ("service", "method"),
    _params(lambda m: f"/authsvc.v1.TokenService/{m.name}" not in ANONYMOUS),
)
@pytest.mark.asyncio(loop_scope="module")
async def test_every_method_refuses_a_caller_without_a_token(
    shared: Shared, service: str, method: Any
) -> None:
    world, channel, tokens, admin = shared.world, shared.channel, shared.tokens, shared.admin
    before = await database_rows(world.running)
    request = REQUESTS[method.name](world)
    assert (await refused(invoke(channel, service, method, request, ())))[:2] == UNAUTHENTICATED
    assert await database_rows(world.running) == before
    await _family_is_live(world, admin, tokens)


@pytest.mark.parametrize(("service", "method"), _params(lambda m: bool(required_scopes(m))))
@pytest.mark.asyncio(loop_scope="module")
async def test_every_method_refuses_a_caller_without_its_permission(
    shared: Shared, service: str, method: Any
) -> None:
    world, channel, tokens, admin = shared.world, shared.channel, shared.tokens, shared.admin
    needed = required_scopes(method)
    # Every other authsvc permission, so only the missing one can be the reason.
    almost = await world.running.create_client(
        "almost-admin",
        scopes=[s for s in ADMIN_SCOPES if s not in needed],
        audiences=[world.running.settings.audience],
    )
    caller = bearer(await world.running.access_token(almost))
    before = await database_rows(world.running)
    request = REQUESTS[method.name](world)
    assert await refused(invoke(channel, service, method, request, caller)) == (
        *INSUFFICIENT_SCOPE,
        f"caller lacks permission: {' '.join(needed)}",
    )
    assert await database_rows(world.running) == before
    await _family_is_live(world, admin, tokens)


@pytest.mark.parametrize(("service", "method"), _params(lambda m: m.name in WRITERS))
async def test_the_same_requests_do_write_when_allowed(
    world: World, channel, admin, service: str, method: Any
) -> None:
    # Proof that the refusals above are meaningful: with permission, each request changes state.
    before = await database_rows(world.running)
    await invoke(channel, service, method, REQUESTS[method.name](world), admin)
    assert await database_rows(world.running) != before


@pytest.mark.parametrize(
    ("service", "method"),
    _params(lambda m: not m.server_streaming and m.name not in WRITERS),
)
@pytest.mark.asyncio(loop_scope="module")
async def test_the_read_requests_succeed_when_allowed(
    shared: Shared, service: str, method: Any
) -> None:
    world, channel, admin = shared.world, shared.channel, shared.admin
    await invoke(channel, service, method, REQUESTS[method.name](world), admin)


async def _expired(r: RunningAuthority) -> str:
    token = await r.admin_token()
    r.clock.advance(r.settings.longest_access_token_life)
    return token


async def _for_another_audience(r: RunningAuthority) -> str:
    client = await r.create_client("svc", scopes=ADMIN_SCOPES, audiences=["api"])
    return await r.access_token(client)


async def _revoked(r: RunningAuthority) -> str:
    token = await r.admin_token()
    await r.authority.revoke(token)
    return token


@pytest.mark.parametrize(
    ("credential", "reason"),
    [
        pytest.param(_expired, "token expired", id="expired"),
        pytest.param(
            _for_another_audience,
            "token audience not accepted: calls to authsvc need a token for audience authsvc",
            id="other-audience",
        ),
        pytest.param(_revoked, "token revoked (token revoked)", id="revoked"),
        pytest.param(lambda r: _const("garbage"), "malformed token", id="garbage"),
        pytest.param(
            lambda r: _const("eyJhbGciOlsiRWREU0EiXX0.e30.c2ln"),
            "token algorithm not accepted",
            id="alg-not-a-string",
        ),
    ],
)
async def test_a_bad_bearer_token_is_unauthenticated(
    world: World, tokens, credential: Callable[[RunningAuthority], Any], reason: str
) -> None:
    token = await credential(world.running)
    before = await database_rows(world.running)
    request = pb.RevokeFamilyRequest(family_id=world.pair.family.family_id)
    assert await refused(tokens.RevokeFamily(request, metadata=bearer(token))) == (
        *UNAUTHENTICATED,
        f"caller credential rejected: {reason}",
    )
    assert await database_rows(world.running) == before


async def test_a_second_authorization_header_does_not_pick_the_caller(
    world: World, tokens, admin
) -> None:
    """The last header had counted: behind a proxy that checked the first, a caller could add
    an admin's token after its own."""
    before = await database_rows(world.running)
    request = pb.RevokeFamilyRequest(family_id=world.pair.family.family_id)
    for metadata in (
        (*bearer(world.pair.access.token), *admin),
        (*admin, *bearer(world.pair.access.token)),
    ):
        assert await refused(tokens.RevokeFamily(request, metadata=metadata)) == (
            *UNAUTHENTICATED,
            "missing bearer token or client certificate",
        )
    assert await database_rows(world.running) == before


async def _const(value: str) -> str:
    return value


async def test_a_user_token_without_permissions_is_refused(world: World, tokens, admin) -> None:
    # A user's access token (audience api, no authsvc:* scope) is not an admin credential.
    request = pb.RevokeSubjectRequest(subject="alice")
    refusal = await refused(tokens.RevokeSubject(request, metadata=bearer(world.pair.access.token)))
    assert refusal[:2] == UNAUTHENTICATED  # wrong audience before any scope is considered


async def test_anonymous_methods_ignore_a_stale_credential(world: World, tokens) -> None:
    stale = await _expired(world.running)
    issued = await tokens.ClientCredentials(
        REQUESTS["ClientCredentials"](world), metadata=bearer(stale)
    )
    assert issued.access_token
    keys = await tokens.PublishKeys(pb.PublishKeysRequest(), metadata=bearer("garbage"))
    assert keys.keys


async def test_verify_may_be_opened_to_anonymous_callers(tmp_path) -> None:
    async with start_authority(tmp_path, allow_anonymous_verify=True) as running:
        token = await running.admin_token()
        async with grpc.aio.insecure_channel(running.address) as channel:
            tokens = authsvc_pb2_grpc.TokenServiceStub(channel)
            response = await tokens.Verify(pb.VerifyRequest(token=token, audience="authsvc"))
            assert response.claims.client_id == running.admin.client_id
            # Only Verify: everything else still needs a caller.
            refusal = await refused(tokens.ListSessions(pb.ListSessionsRequest(subject="a")))
            assert refusal[:2] == UNAUTHENTICATED


# A handler the refusal cannot wrap must not run unwrapped


@pytest.mark.parametrize(
    "make", [grpc.stream_unary_rpc_method_handler, grpc.stream_stream_rpc_method_handler]
)
def test_a_client_streaming_handler_is_never_passed_through_unwrapped(make: Any) -> None:
    # Were it returned as it came, a refused call to such a method would run as if allowed.
    async def behaviour(requests: Any, context: Any) -> Any:
        raise AssertionError("must not run")

    with pytest.raises(TypeError, match="client-streaming"):
        wrap_handler(make(behaviour), lambda b: b, lambda b: b)


def test_no_method_with_a_policy_streams_from_the_client() -> None:
    # So the TypeError above never reaches an authsvc.v1 caller.
    client_streaming = [
        method.full_name
        for service in pb.DESCRIPTOR.services_by_name.values()
        for method in service.methods
        if method.client_streaming
    ]
    assert client_streaming == []


async def test_a_stream_that_cannot_be_judged_per_message_is_never_passed_through() -> None:
    # A stream that sends with context.write() has no messages to judge in between; were it
    # passed through, it would go on after its caller's token expired.
    async def writes(request: Any, context: Any) -> None:
        raise AssertionError("must not run")

    method = "/authsvc.v1.TokenService/WatchRevocations"
    interceptor = CallerAuthInterceptor(
        {method: MethodPolicy(required_scopes=())},
        lambda token: Caller("watcher", frozenset(), "bearer"),
    )

    async def continuation(_details: Any) -> Any:
        return grpc.unary_stream_rpc_method_handler(writes)

    @dataclass
    class Details:
        method: str
        invocation_metadata: tuple[tuple[str, str], ...]

    details: Any = Details(method, (("authorization", "Bearer t"),))
    with pytest.raises(TypeError, match="judged per message"):
        await interceptor.intercept_service(continuation, details)
