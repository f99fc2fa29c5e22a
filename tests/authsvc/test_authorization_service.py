"""AuthorizationService over gRPC: what the gateway calls for the code flow with PKCE."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from authsvc_client.v1 import authsvc_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select, update

from authsvc import pkce
from authsvc.client_registry import RegisteredClient
from authsvc.config import SIGN_IN_LIFETIME
from authsvc.errors import AccessDenied, InvalidRequest
from authsvc.passwords import Argon2Parameters, Passwords
from authsvc.storage.schema import authorization_codes, users
from authsvc.testing import RunningAuthority, start_authority
from authsvc.tokens import opaque
from tests.authsvc.calls import (
    ACCESS_DENIED,
    INVALID_CLIENT,
    INVALID_GRANT,
    INVALID_REQUEST,
    INVALID_SCOPE,
    INVALID_TARGET,
    INVALID_TOKEN,
    UNAUTHORIZED_CLIENT,
    audit_events,
    bearer,
    database_rows,
    refused,
)
from tests.authsvc.conftest import APP_REDIRECT_URI
from tests.databases import asyncpg_dsn
from tests.waiting import eventually

VECTOR = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "rfc7636_appendix_b.json").read_text()
)
PASSWORD = "correct horse battery staple"


# AuthenticateClient and GetClient


async def test_authenticate_confidential_client(
    authorization, admin, app: RegisteredClient
) -> None:
    client = await authorization.AuthenticateClient(
        pb.AuthenticateClientRequest(client_id=app.client_id, client_secret=app.client_secret),
        metadata=admin,
    )
    assert client == pb.Client(
        client_id=app.client_id,
        name="app",
        public=False,
        first_party=True,
        grant_types=["authorization_code", "refresh_token"],
        redirect_uris=[APP_REDIRECT_URI],
        scopes=["read", "write", "profile"],
        audiences=["api", "other-api"],
    )


@pytest.fixture
async def spa(running: RunningAuthority) -> RegisteredClient:
    """A public client: no secret, PKCE only."""
    return await running.create_client(
        "spa",
        grant_types=["authorization_code", "refresh_token"],
        scopes=["read"],
        audiences=["api"],
        redirect_uris=["http://127.0.0.1:9000/cb"],
        public=True,
    )


async def test_authenticate_public_client_without_secret(
    authorization, admin, spa: RegisteredClient
) -> None:
    assert spa.client_secret == ""
    client = await authorization.AuthenticateClient(
        pb.AuthenticateClientRequest(client_id=spa.client_id), metadata=admin
    )
    assert client.public


@pytest.mark.parametrize(
    ("who", "secret"),
    [
        pytest.param("app", "asc_" + "A" * 43, id="wrong-secret"),
        pytest.param("app", "", id="no-secret"),
        pytest.param("nobody", "asc_" + "A" * 43, id="unknown-client"),
        pytest.param("", "", id="no-client"),
        pytest.param("spa", "asc_" + "A" * 43, id="public-client-with-a-secret"),
        pytest.param("disabled", None, id="disabled-client"),
    ],
)
async def test_authenticate_client_refuses(
    running: RunningAuthority,
    authorization,
    admin,
    app: RegisteredClient,
    spa: RegisteredClient,
    who: str,
    secret: str | None,
) -> None:
    client_id = {"app": app.client_id, "spa": spa.client_id}.get(who, who)
    if who == "disabled":
        client_id, secret = app.client_id, app.client_secret
        await running.authority.revoke_client(app.client_id, disable=True)
    request = pb.AuthenticateClientRequest(client_id=client_id, client_secret=secret)
    assert await refused(authorization.AuthenticateClient(request, metadata=admin)) == (
        *INVALID_CLIENT,
        "client authentication failed",
    )


async def test_get_client(running: RunningAuthority, authorization, admin, app) -> None:
    client = await authorization.GetClient(
        pb.GetClientRequest(client_id=app.client_id), metadata=admin
    )
    assert (client.client_id, list(client.redirect_uris)) == (app.client_id, [APP_REDIRECT_URI])
    for unknown in ("nobody", ""):
        get = authorization.GetClient(pb.GetClientRequest(client_id=unknown), metadata=admin)
        assert (await refused(get))[0] == grpc.StatusCode.NOT_FOUND


# AuthenticateUser


@pytest.fixture
async def alice(running: RunningAuthority) -> str:
    return await running.create_user("alice", PASSWORD)


async def test_authenticate_user(
    running: RunningAuthority, authorization, admin, alice: str
) -> None:
    response = await authorization.AuthenticateUser(
        pb.AuthenticateUserRequest(username="alice", password=PASSWORD), metadata=admin
    )
    assert response.subject == alice
    # By authsvc's clock, which dates revocations too.
    assert response.authenticated_at.ToNanoseconds() == int(running.clock.now() * 1e9)


@pytest.mark.parametrize(
    ("username", "password"),
    [
        pytest.param("alice", PASSWORD + "!", id="wrong-password"),
        pytest.param("alice", "", id="no-password"),
        pytest.param("Alice", PASSWORD, id="username-case"),
        pytest.param("mallory", PASSWORD, id="unknown-user"),
        pytest.param("alice", "x" * 1025, id="oversized-password"),
    ],
)
async def test_authenticate_user_refuses_with_one_generic_answer(
    authorization, admin, alice: str, username: str, password: str
) -> None:
    request = pb.AuthenticateUserRequest(username=username, password=password)
    assert await refused(authorization.AuthenticateUser(request, metadata=admin)) == (
        *INVALID_GRANT,
        "invalid credentials",
    )


async def test_too_many_failures_answer_resource_exhausted_with_retry_after(
    running: RunningAuthority, authorization, admin, alice: str
) -> None:
    wrong = pb.AuthenticateUserRequest(username="alice", password="nope", client_ip="192.0.2.1")
    for _ in range(running.settings.login_max_failures_account):
        await refused(authorization.AuthenticateUser(wrong, metadata=admin))
    right = pb.AuthenticateUserRequest(username="alice", password=PASSWORD, client_ip="192.0.2.1")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await authorization.AuthenticateUser(right, metadata=admin)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(caught.value.trailing_metadata() or ())
    assert trailers["oauth-error"] == "too_many_attempts"
    assert trailers["retry-after"] == str(running.settings.login_failure_window)
    assert "alice" not in str(caught.value.details()) + str(trailers)


@pytest.mark.parametrize(
    "client_ip",
    [pytest.param("not-an-ip", id="word"), pytest.param("192.0.2.1\n", id="control")],
)
async def test_a_malformed_client_ip_is_invalid_request(
    authorization, admin, alice: str, client_ip: str
) -> None:
    request = pb.AuthenticateUserRequest(username="alice", password=PASSWORD, client_ip=client_ip)
    assert (await refused(authorization.AuthenticateUser(request, metadata=admin)))[:2] == (
        INVALID_REQUEST
    )


async def _stored_hash(running: RunningAuthority) -> str:
    async with running.authority.ctx.store.transaction(readonly=True) as tx:
        result = await (await tx.connection()).execute(select(users.c.password_hash))
        return str(result.scalar_one())


async def test_a_hash_from_weaker_parameters_is_upgraded_on_login(
    running: RunningAuthority, authorization, admin, alice: str
) -> None:
    old = await _stored_hash(running)
    assert "$m=19456,t=2,p=1$" in old
    running.authority.ctx.passwords = Passwords(Argon2Parameters(time_cost=3))
    request = pb.AuthenticateUserRequest(username="alice", password=PASSWORD)
    await authorization.AuthenticateUser(request, metadata=admin)
    new = await _stored_hash(running)
    assert "$m=19456,t=3,p=1$" in new
    await authorization.AuthenticateUser(request, metadata=admin)  # the new hash checks out
    assert await _stored_hash(running) == new


def test_argon2_parameters_below_owasp_are_refused() -> None:
    for weak in (Argon2Parameters(memory_kib=19 * 1024 - 1), Argon2Parameters(time_cost=1)):
        with pytest.raises(ValueError, match="OWASP"):
            Passwords(weak)


@pytest.mark.parametrize(
    ("username", "password"),
    [
        pytest.param("bob", "short", id="password-too-short"),
        pytest.param("bob", "x" * 1025, id="password-too-long"),
        pytest.param("", PASSWORD, id="no-username"),
        pytest.param("alice", PASSWORD, id="username-taken"),
    ],
)
async def test_create_user_refuses(
    running: RunningAuthority, alice: str, username: str, password: str
) -> None:
    with pytest.raises(InvalidRequest):
        await running.create_user(username, password)


# CreateAuthorizationCode


def code_request(client: RegisteredClient, **fields: Any) -> pb.CreateAuthorizationCodeRequest:
    values: dict[str, Any] = {
        "client_id": client.client_id,
        "redirect_uri": APP_REDIRECT_URI,
        "subject": "alice",
        "scope": ["read"],
        "audience": ["api"],
        "code_challenge": VECTOR["code_challenge"],
        "code_challenge_method": "S256",
        "device_id": "browser",
    }
    values.update(fields)
    return pb.CreateAuthorizationCodeRequest(**values)


async def test_create_authorization_code(
    running: RunningAuthority, authorization, admin, app: RegisteredClient
) -> None:
    code = await authorization.CreateAuthorizationCode(code_request(app), metadata=admin)
    assert code.code.startswith("asac_")
    assert code.expires_in == 60 == running.settings.authorization_code_ttl


@pytest.mark.parametrize(
    ("fields", "refusal"),
    [
        pytest.param({"code_challenge_method": "plain"}, INVALID_REQUEST, id="plain-method"),
        pytest.param({"code_challenge_method": ""}, INVALID_REQUEST, id="no-method"),
        pytest.param({"code_challenge_method": "s256"}, INVALID_REQUEST, id="method-case"),
        pytest.param({"code_challenge": ""}, INVALID_REQUEST, id="no-challenge"),
        pytest.param(
            {"code_challenge": VECTOR["code_verifier"] + "=="}, INVALID_REQUEST, id="bad-challenge"
        ),
        pytest.param(
            {"redirect_uri": APP_REDIRECT_URI + "/"}, INVALID_REQUEST, id="redirect-slash"
        ),
        pytest.param(
            {"redirect_uri": "https://evil.example/callback"}, INVALID_REQUEST, id="redirect-other"
        ),
        pytest.param({"subject": ""}, INVALID_REQUEST, id="no-subject"),
        pytest.param({"scope": ["admin"]}, INVALID_SCOPE, id="scope-not-allowed"),
        pytest.param({"audience": ["payments"]}, INVALID_SCOPE, id="audience-not-allowed"),
        pytest.param({"client_id": "nobody"}, INVALID_CLIENT, id="unknown-client"),
    ],
)
async def test_create_authorization_code_refuses(
    running: RunningAuthority,
    authorization,
    admin,
    app: RegisteredClient,
    fields: dict[str, Any],
    refusal: tuple[object, str],
) -> None:
    before = await database_rows(running)
    creating = authorization.CreateAuthorizationCode(code_request(app, **fields), metadata=admin)
    assert (await refused(creating))[:2] == refusal
    assert await database_rows(running) == before


async def test_a_code_without_a_redirect_uri_needs_a_client_with_exactly_one(
    running: RunningAuthority, authorization, admin
) -> None:
    several = await running.create_client(
        "several",
        grant_types=["authorization_code"],
        redirect_uris=[APP_REDIRECT_URI, "https://app.example/other"],
    )
    before = await database_rows(running)
    creating = authorization.CreateAuthorizationCode(
        code_request(several, scope=[], audience=[], redirect_uri_omitted=True), metadata=admin
    )
    assert await refused(creating) == (
        *INVALID_REQUEST,
        "redirect_uri is required: the client has no single redirect URI to imply",
    )
    assert await database_rows(running) == before


@pytest.mark.parametrize(
    "presented", ["", APP_REDIRECT_URI], ids=["none-again", "the-one-registered"]
)
async def test_a_code_issued_without_a_redirect_uri_is_redeemed_without_one_or_with_the_one(
    authorization, admin, app: RegisteredClient, presented: str
) -> None:
    # OAuth 2.1 §4.1.1 and §4.1.3: the authorization request left it out, the client has one.
    issued = await authorization.CreateAuthorizationCode(
        code_request(app, redirect_uri_omitted=True), metadata=admin
    )
    wrong = exchange_request(app, issued.code, redirect_uri="https://app.example/other")
    assert await refused(authorization.ExchangeAuthorizationCode(wrong, metadata=admin)) == (
        *INVALID_GRANT,
        "redirect_uri does not match the authorization request",
    )
    redeemed = exchange_request(app, issued.code, redirect_uri=presented)
    pair = await authorization.ExchangeAuthorizationCode(redeemed, metadata=admin)
    assert pair.refresh_token


async def test_a_code_issued_with_a_redirect_uri_needs_it_again(
    authorization, admin, app: RegisteredClient, code: str
) -> None:
    # RFC 6749 §4.1.3: required, if it was included in the authorization request.
    missing = exchange_request(app, code, redirect_uri="")
    assert await refused(authorization.ExchangeAuthorizationCode(missing, metadata=admin)) == (
        *INVALID_GRANT,
        "redirect_uri does not match the authorization request",
    )
    await authorization.ExchangeAuthorizationCode(exchange_request(app, code), metadata=admin)


async def test_one_authorization_request_has_one_live_code(
    running: RunningAuthority, authorization, admin, app: RegisteredClient
) -> None:
    # Its PKCE challenge names the request. The same consent or sign-in posted again (a double
    # click; its ticket lives ten minutes) replaces the code while it is unused: the browser
    # follows the last answer, and the first code is gone.
    first = await authorization.CreateAuthorizationCode(code_request(app), metadata=admin)
    second = await authorization.CreateAuthorizationCode(code_request(app), metadata=admin)
    gone = exchange_request(app, first.code)
    assert await refused(authorization.ExchangeAuthorizationCode(gone, metadata=admin)) == (
        *INVALID_GRANT,
        "authorization code unknown",
    )
    await authorization.ExchangeAuthorizationCode(
        exchange_request(app, second.code), metadata=admin
    )
    # Once used, the request is answered: a third post gets nothing.
    before = await database_rows(running)
    again = authorization.CreateAuthorizationCode(code_request(app), metadata=admin)
    assert await refused(again) == (
        *INVALID_REQUEST,
        "this authorization request was answered already; start a new one",
    )
    assert await database_rows(running) == before


async def test_another_subject_cannot_answer_an_authorization_request_again(
    running: RunningAuthority, authorization, admin, app: RegisteredClient
) -> None:
    # Someone who saw the request's URL signs in as themselves: the code for it stays the one
    # issued, and another client's request with the same challenge is another request.
    first = await authorization.CreateAuthorizationCode(code_request(app), metadata=admin)
    before = await database_rows(running)
    other_subject = authorization.CreateAuthorizationCode(
        code_request(app, subject="mallory"), metadata=admin
    )
    assert (await refused(other_subject))[:2] == INVALID_REQUEST
    assert await database_rows(running) == before
    other = await running.create_client(
        "other",
        grant_types=["authorization_code"],
        redirect_uris=[APP_REDIRECT_URI],
        audiences=["api"],
    )
    await authorization.CreateAuthorizationCode(
        code_request(other, scope=[], audience=[]), metadata=admin
    )
    await authorization.ExchangeAuthorizationCode(exchange_request(app, first.code), metadata=admin)


# DenyAuthorization


def deny_request(client: RegisteredClient, **fields: Any) -> pb.DenyAuthorizationRequest:
    values: dict[str, Any] = {
        "client_id": client.client_id,
        "subject": "alice",
        "code_challenge": VECTOR["code_challenge"],
    }
    values.update(fields)
    return pb.DenyAuthorizationRequest(**values)


ANSWERED = (*INVALID_REQUEST, "this authorization request was answered already; start a new one")


async def test_a_denied_authorization_request_gets_no_code_after(
    running: RunningAuthority, authorization, admin, app: RegisteredClient
) -> None:
    # The consent page's Allow pressed after its Deny (the back button, a second tab).
    await authorization.DenyAuthorization(deny_request(app), metadata=admin)
    before = await database_rows(running)
    for subject in ("alice", "mallory"):
        allowed = authorization.CreateAuthorizationCode(
            code_request(app, subject=subject), metadata=admin
        )
        assert await refused(allowed) == ANSWERED
    # Denied again: answered already, nothing changes.
    await authorization.DenyAuthorization(deny_request(app), metadata=admin)
    assert await database_rows(running) == before


async def test_a_denial_voids_the_unused_code_of_an_earlier_allow(
    running: RunningAuthority, authorization, admin, app: RegisteredClient
) -> None:
    # The last answer stands, as for Allow posted twice.
    issued = await authorization.CreateAuthorizationCode(code_request(app), metadata=admin)
    await authorization.DenyAuthorization(deny_request(app), metadata=admin)
    voided = exchange_request(app, issued.code)
    assert await refused(authorization.ExchangeAuthorizationCode(voided, metadata=admin)) == (
        *INVALID_GRANT,
        "authorization code unknown",
    )
    assert (
        await refused(authorization.CreateAuthorizationCode(code_request(app), metadata=admin))
        == ANSWERED
    )


async def test_a_denial_leaves_a_redeemed_code_and_another_users_code_alone(
    running: RunningAuthority, authorization, admin, app: RegisteredClient
) -> None:
    redeemed = await authorization.CreateAuthorizationCode(code_request(app), metadata=admin)
    pair = await authorization.ExchangeAuthorizationCode(
        exchange_request(app, redeemed.code), metadata=admin
    )
    verifier, challenge = fresh_pkce()
    alices = await authorization.CreateAuthorizationCode(
        code_request(app, code_challenge=challenge), metadata=admin
    )
    before = await database_rows(running)
    await authorization.DenyAuthorization(deny_request(app), metadata=admin)
    await authorization.DenyAuthorization(
        deny_request(app, subject="mallory", code_challenge=challenge), metadata=admin
    )
    assert await database_rows(running) == before
    assert (await running.authority.introspect(pair.access_token)).active
    await authorization.ExchangeAuthorizationCode(
        exchange_request(app, alices.code, code_verifier=verifier), metadata=admin
    )


@pytest.mark.parametrize(
    ("fields", "refusal"),
    [
        pytest.param({"client_id": "nobody"}, INVALID_CLIENT, id="unknown-client"),
        pytest.param({"subject": ""}, INVALID_REQUEST, id="no-subject"),
        pytest.param({"subject": "a\x00b"}, INVALID_REQUEST, id="nul-in-subject"),
        pytest.param({"code_challenge": ""}, INVALID_REQUEST, id="no-challenge"),
        pytest.param({"code_challenge": "short"}, INVALID_REQUEST, id="bad-challenge"),
    ],
)
async def test_deny_authorization_refuses(
    running: RunningAuthority,
    authorization,
    admin,
    app: RegisteredClient,
    fields: dict[str, Any],
    refusal: tuple[object, str],
) -> None:
    before = await database_rows(running)
    denying = authorization.DenyAuthorization(deny_request(app, **fields), metadata=admin)
    assert (await refused(denying))[:2] == refusal
    assert await database_rows(running) == before


async def test_a_disabled_client_cannot_have_a_request_denied(
    running: RunningAuthority, authorization, admin, app: RegisteredClient
) -> None:
    await running.authority.revoke_client(app.client_id, reason="abuse", disable=True)
    before = await database_rows(running)
    denying = authorization.DenyAuthorization(deny_request(app), metadata=admin)
    assert (await refused(denying))[:2] == INVALID_CLIENT
    assert await database_rows(running) == before


async def _live(running: RunningAuthority, code: str) -> bool:
    async with running.authority.ctx.store.transaction(readonly=True) as tx:
        return await tx.get_code(opaque.digest(code)) is not None


async def test_concurrent_answers_to_one_authorization_request_leave_one_code(
    running: RunningAuthority, authorization, admin, app: RegisteredClient
) -> None:
    # On PostgreSQL both may find no code for the challenge; the unique index decides, and
    # the subjects' posts that lose to another subject's get nothing.
    for _ in range(5):
        verifier, challenge = fresh_pkce()
        subjects = ["alice", "bob", "alice", "bob"]
        results = await asyncio.gather(
            *(
                authorization.CreateAuthorizationCode(
                    code_request(app, code_challenge=challenge, subject=subject), metadata=admin
                )
                for subject in subjects
            ),
            return_exceptions=True,
        )
        codes = [r for r in results if isinstance(r, pb.AuthorizationCode)]
        refusals = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert {r.code() for r in refusals} <= {grpc.StatusCode.INVALID_ARGUMENT}
        redeemed = [
            await authorization.ExchangeAuthorizationCode(
                exchange_request(app, c.code, code_verifier=verifier), metadata=admin
            )
            for c in codes
            if await _live(running, c.code)
        ]
        assert len(redeemed) == 1  # one live code, whoever won


async def test_create_authorization_code_needs_the_grant(
    running: RunningAuthority, authorization, admin
) -> None:
    service = await running.create_client("svc", grant_types=["client_credentials"])
    creating = authorization.CreateAuthorizationCode(code_request(service), metadata=admin)
    assert (await refused(creating))[:2] == UNAUTHORIZED_CLIENT


# ExchangeAuthorizationCode


def fresh_pkce() -> tuple[str, str]:
    """A verifier of its own and its challenge: one per authorization request (RFC 7636 §4.1)."""
    verifier = secrets.token_urlsafe(32)
    return verifier, pkce.s256(verifier)


def exchange_request(
    client: RegisteredClient, code: str, **fields: Any
) -> pb.ExchangeAuthorizationCodeRequest:
    values: dict[str, Any] = {
        "client_id": client.client_id,
        "code": code,
        "redirect_uri": APP_REDIRECT_URI,
        "code_verifier": VECTOR["code_verifier"],
    }
    values.update(fields)
    return pb.ExchangeAuthorizationCodeRequest(**values)


@pytest.fixture
async def code(authorization, admin, app: RegisteredClient) -> str:
    """A code whose challenge is the RFC 7636 Appendix B one."""
    issued = await authorization.CreateAuthorizationCode(code_request(app), metadata=admin)
    return str(issued.code)


async def test_exchange_with_the_rfc7636_appendix_b_verifier(
    running: RunningAuthority, tokens, authorization, admin, app: RegisteredClient, code: str
) -> None:
    assert pkce.s256(VECTOR["code_verifier"]) == VECTOR["code_challenge"]
    pair = await authorization.ExchangeAuthorizationCode(
        exchange_request(app, code), metadata=admin
    )
    assert list(pair.scope) == ["read"]
    claims = (
        await tokens.Verify(
            pb.VerifyRequest(token=pair.access_token, audience="api"), metadata=admin
        )
    ).claims
    assert (claims.sub, claims.client_id, claims.sid) == ("alice", app.client_id, pair.family_id)
    sessions = await tokens.ListSessions(pb.ListSessionsRequest(subject="alice"), metadata=admin)
    assert [(s.family_id, s.device_id) for s in sessions.sessions] == [(pair.family_id, "browser")]
    await tokens.Rotate(pb.RotateRequest(refresh_token=pair.refresh_token), metadata=admin)


async def test_a_code_with_no_audience_is_refused_without_side_effects(
    running: RunningAuthority, authorization, admin, app: RegisteredClient, code: str
) -> None:
    # A code made before codes for a client without an audience were refused: its redemption
    # would start a session whose access tokens no verifier accepts (RFC 9068 §2.2).
    async with running.authority.ctx.store.transaction() as tx:
        connection = await tx.connection()
        await connection.execute(update(authorization_codes).values(audience=""))
    before = await database_rows(running)
    redeeming = authorization.ExchangeAuthorizationCode(exchange_request(app, code), metadata=admin)
    assert await refused(redeeming) == (
        *INVALID_SCOPE,
        "this client has no audience to issue tokens for: register a new client with one",
    )
    assert await database_rows(running) == before


async def test_the_exchange_may_narrow_the_codes_audience(
    running: RunningAuthority, tokens, authorization, admin, app: RegisteredClient
) -> None:
    # RFC 8707 §2.2: the code is for api and other-api (the client's defaults); the access token
    # for the one asked, the session (and so each refresh) for both.
    issued = await authorization.CreateAuthorizationCode(
        code_request(app, audience=[]), metadata=admin
    )
    pair = await authorization.ExchangeAuthorizationCode(
        exchange_request(app, issued.code, audience=["other-api"]), metadata=admin
    )
    verified = await running.authority.introspect(pair.access_token)
    assert list(verified.aud) == ["other-api"]
    rotated = await tokens.Rotate(
        pb.RotateRequest(refresh_token=pair.refresh_token), metadata=admin
    )
    assert sorted((await running.authority.introspect(rotated.access_token)).aud) == [
        "api",
        "other-api",
    ]


async def test_an_exchange_for_an_audience_the_code_is_not_for_leaves_the_code_unused(
    running: RunningAuthority, authorization, admin, app: RegisteredClient
) -> None:
    issued = await authorization.CreateAuthorizationCode(
        code_request(app, audience=["api"]), metadata=admin
    )
    before = await database_rows(running)
    wider = exchange_request(app, issued.code, audience=["api", "other-api"])
    assert await refused(authorization.ExchangeAuthorizationCode(wider, metadata=admin)) == (
        *INVALID_TARGET,
        "resource not authorized by this grant: other-api",
    )
    assert await database_rows(running) == before
    # Only a request with the right verifier is told: a wrong one burns the code as ever.
    wrong = exchange_request(
        app, issued.code, audience=["other-api"], code_verifier=VECTOR["code_verifier"][:-1] + "A"
    )
    assert (await refused(authorization.ExchangeAuthorizationCode(wrong, metadata=admin)))[
        :2
    ] == INVALID_GRANT


async def test_an_exchange_for_the_codes_own_audience_works_after_a_refused_one(
    running: RunningAuthority, authorization, admin, app: RegisteredClient
) -> None:
    issued = await authorization.CreateAuthorizationCode(
        code_request(app, audience=["api"]), metadata=admin
    )
    wider = exchange_request(app, issued.code, audience=["other-api"])
    await refused(authorization.ExchangeAuthorizationCode(wider, metadata=admin))
    pair = await authorization.ExchangeAuthorizationCode(
        exchange_request(app, issued.code, audience=["api"]), metadata=admin
    )
    assert list((await running.authority.introspect(pair.access_token)).aud) == ["api"]


async def test_a_client_without_the_refresh_grant_gets_no_refresh_token(
    running: RunningAuthority, tokens, authorization, admin
) -> None:
    """RFC 6749 §1.5: refresh tokens go only to clients allowed to use them; the session (family)
    still exists, so it can be listed and revoked."""
    code_only = await running.create_client(
        "code-only",
        grant_types=["authorization_code"],
        scopes=["read"],
        audiences=["api"],
        redirect_uris=[APP_REDIRECT_URI],
    )
    issued = await authorization.CreateAuthorizationCode(code_request(code_only), metadata=admin)

    pair = await authorization.ExchangeAuthorizationCode(
        exchange_request(code_only, issued.code), metadata=admin
    )

    assert (pair.refresh_token, pair.refresh_expires_in) == ("", 0)
    assert pair.access_token
    assert pair.family_id
    assert (await database_rows(running))["refresh_tokens"] == []
    sessions = await tokens.ListSessions(pb.ListSessionsRequest(subject="alice"), metadata=admin)
    assert [s.family_id for s in sessions.sessions] == [pair.family_id]


async def test_wrong_verifier_burns_the_code(
    authorization, admin, app: RegisteredClient, code: str
) -> None:
    wrong = exchange_request(app, code, code_verifier=VECTOR["code_verifier"][:-1] + "A")
    assert await refused(authorization.ExchangeAuthorizationCode(wrong, metadata=admin)) == (
        *INVALID_GRANT,
        "code_verifier does not match the code challenge",
    )
    # No second guess: the right verifier now finds the code used.
    right = exchange_request(app, code)
    assert (await refused(authorization.ExchangeAuthorizationCode(right, metadata=admin)))[
        :2
    ] == INVALID_GRANT


async def test_code_reuse_revokes_the_family_issued_from_it(
    running: RunningAuthority, tokens, authorization, admin, app: RegisteredClient, code: str
) -> None:
    request = exchange_request(app, code)
    pair = await authorization.ExchangeAuthorizationCode(request, metadata=admin)
    assert await refused(authorization.ExchangeAuthorizationCode(request, metadata=admin)) == (
        *INVALID_GRANT,
        "authorization code already used; tokens issued from it were revoked",
    )
    verifying = tokens.Verify(
        pb.VerifyRequest(token=pair.access_token, audience="api"), metadata=admin
    )
    assert (await refused(verifying))[:2] == INVALID_TOKEN
    rotating = tokens.Rotate(pb.RotateRequest(refresh_token=pair.refresh_token), metadata=admin)
    assert (await refused(rotating))[:2] == INVALID_GRANT
    [event] = await audit_events(running, "authorization_code_reuse_detected")
    assert event["family_id"] == pair.family_id


@pytest.mark.parametrize("revocation", ["subject", "client", "client and disable"])
async def test_a_code_not_yet_redeemed_dies_with_its_subject_or_client(
    running: RunningAuthority,
    tokens,
    authorization,
    admin,
    app: RegisteredClient,
    code: str,
    revocation: str,
) -> None:
    # "Log out everywhere" (or revoking the client) between the login and the code's redemption:
    # the code must not start a session after it (RFC 9700 §4.14). It is gone, as if unknown.
    if revocation == "subject":
        await tokens.RevokeSubject(pb.RevokeSubjectRequest(subject="alice"), metadata=admin)
    else:
        revoke = pb.RevokeClientRequest(client_id=app.client_id, disable="disable" in revocation)
        await tokens.RevokeClient(revoke, metadata=admin)
    running.clock.advance(5)
    exchange = authorization.ExchangeAuthorizationCode(exchange_request(app, code), metadata=admin)
    assert await refused(exchange) == (*INVALID_GRANT, "authorization code unknown")
    sessions = await tokens.ListSessions(pb.ListSessionsRequest(subject="alice"), metadata=admin)
    assert list(sessions.sessions) == []


@pytest.mark.parametrize("revocation", ["subject", "client"])
async def test_a_sign_in_followed_by_a_revocation_of_its_subject_or_client_gets_no_code(
    running: RunningAuthority,
    tokens,
    authorization,
    admin,
    app: RegisteredClient,
    alice: str,
    revocation: str,
) -> None:
    # The consent page stays open across "log out everywhere" (or the client's revocation):
    # what was authenticated before it must not start a session after it.
    login = await authorization.AuthenticateUser(
        pb.AuthenticateUserRequest(username="alice", password=PASSWORD), metadata=admin
    )
    running.clock.advance(5)
    if revocation == "subject":
        await tokens.RevokeSubject(pb.RevokeSubjectRequest(subject=alice), metadata=admin)
    else:
        revoke = pb.RevokeClientRequest(client_id=app.client_id)
        await tokens.RevokeClient(revoke, metadata=admin)
    running.clock.advance(5)
    before = await database_rows(running)
    creating = authorization.CreateAuthorizationCode(
        code_request(app, subject=alice, authenticated_at=login.authenticated_at),
        metadata=admin,
    )
    assert await refused(creating) == (
        *ACCESS_DENIED,
        f"{revocation} revoked since the sign-in; sign in again",
    )
    assert await database_rows(running) == before
    # Signing in again, after the revocation, gets one.
    again = await authorization.AuthenticateUser(
        pb.AuthenticateUserRequest(username="alice", password=PASSWORD), metadata=admin
    )
    running.clock.advance(5)
    code = await authorization.CreateAuthorizationCode(
        code_request(app, subject=alice, authenticated_at=again.authenticated_at),
        metadata=admin,
    )
    assert code.code.startswith("asac_")


async def test_a_sign_in_older_than_the_revocations_remembered_gets_no_code(
    running: RunningAuthority, app: RegisteredClient, alice: str
) -> None:
    # Revocations are held this long (at least a consent page's life): past it, one may have
    # been forgotten. (Through the domain: the caller's own token would have expired meanwhile.)
    login = await running.authority.authenticate_user("alice", PASSWORD)
    running.clock.advance(running.settings.subject_revocation_memory + 1)
    with pytest.raises(AccessDenied, match="the sign-in is too old; sign in again"):
        await running.authority.create_authorization_code(
            client_id=app.client_id,
            redirect_uri=APP_REDIRECT_URI,
            subject=alice,
            code_challenge=VECTOR["code_challenge"],
            code_challenge_method="S256",
            authenticated_at=login.authenticated_at,
        )


@pytest.fixture
async def short_lived(tmp_path: Path, database_url: str) -> AsyncIterator[RunningAuthority]:
    """Access tokens of the shortest life allowed: a consent page outlives them (60 s < 600)."""
    async with start_authority(
        tmp_path / "short", database_url=database_url, access_token_ttl=60
    ) as running:
        yield running


async def _code_for(running: RunningAuthority, client: RegisteredClient, subject: str, at: float):
    return await running.authority.create_authorization_code(
        client_id=client.client_id,
        redirect_uri=APP_REDIRECT_URI,
        subject=subject,
        code_challenge=VECTOR["code_challenge"],
        code_challenge_method="S256",
        authenticated_at=at,
    )


async def test_a_consent_page_open_longer_than_a_token_lives_still_gets_its_code(
    short_lived: RunningAuthority,
) -> None:
    # Revocations were remembered one access-token life (90 s here), and an older sign-in was
    # refused as one that could not be vouched for: a user who read the consent page for two
    # minutes was sent back to the app with access_denied.
    app = await short_lived.create_client(
        "short-app", grant_types=["authorization_code"], redirect_uris=[APP_REDIRECT_URI]
    )
    alice = await short_lived.create_user("alice", PASSWORD)
    login = await short_lived.authority.authenticate_user("alice", PASSWORD)
    short_lived.clock.advance(SIGN_IN_LIFETIME - 1)
    issued = await _code_for(short_lived, app, alice, login.authenticated_at)
    assert issued.code.startswith("asac_")


async def test_a_logout_is_remembered_as_long_as_a_sign_in_before_it_can_ask_for_a_code(
    short_lived: RunningAuthority,
) -> None:
    app = await short_lived.create_client(
        "short-app", grant_types=["authorization_code"], redirect_uris=[APP_REDIRECT_URI]
    )
    alice = await short_lived.create_user("alice", PASSWORD)
    login = await short_lived.authority.authenticate_user("alice", PASSWORD)
    short_lived.clock.advance(5)
    await short_lived.authority.revoke_subject(alice)
    # Every token from before the logout has expired, and maintenance has pruned what it may.
    short_lived.clock.advance(SIGN_IN_LIFETIME - 10)
    await short_lived.authority.run_maintenance()
    with pytest.raises(AccessDenied, match="subject revoked since the sign-in; sign in again"):
        await _code_for(short_lived, app, alice, login.authenticated_at)


async def test_a_sign_in_dated_in_the_future_gets_no_code(
    running: RunningAuthority, tokens, authorization, admin, app: RegisteredClient, alice: str
) -> None:
    # A made-up later time (or one a unit off) had skipped the check: no revocation is ever
    # made after it.
    login = await authorization.AuthenticateUser(
        pb.AuthenticateUserRequest(username="alice", password=PASSWORD), metadata=admin
    )
    await tokens.RevokeSubject(pb.RevokeSubjectRequest(subject=alice), metadata=admin)
    later = Timestamp(seconds=login.authenticated_at.seconds + 3600)
    before = await database_rows(running)
    creating = authorization.CreateAuthorizationCode(
        code_request(app, subject=alice, authenticated_at=later), metadata=admin
    )
    assert await refused(creating) == (
        *ACCESS_DENIED,
        "the sign-in is dated in the future; send AuthenticateUser's authenticated_at back "
        "unchanged",
    )
    assert await database_rows(running) == before


@pytest.mark.parametrize(
    "stamp",
    [
        pytest.param(Timestamp(seconds=1_800_000_000_000), id="milliseconds-as-seconds"),
        pytest.param(Timestamp(seconds=-62_135_596_801), id="before-year-1"),
        pytest.param(Timestamp(seconds=1_800_000_000, nanos=-1), id="negative-nanos"),
        pytest.param(Timestamp(seconds=1_800_000_000, nanos=10**9), id="nanos-past-a-second"),
    ],
)
async def test_a_sign_in_time_that_is_no_time_is_an_invalid_request(
    running: RunningAuthority, authorization, admin, app: RegisteredClient, stamp: Timestamp
) -> None:
    # It had been an internal error, logged with a traceback.
    before = await database_rows(running)
    creating = authorization.CreateAuthorizationCode(
        code_request(app, authenticated_at=stamp), metadata=admin
    )
    assert await refused(creating) == (
        *INVALID_REQUEST,
        "authenticated_at is not a valid time; send AuthenticateUser's authenticated_at back "
        "unchanged",
    )
    assert await database_rows(running) == before


async def test_a_code_request_that_names_no_sign_in_time_is_not_checked(
    running: RunningAuthority, tokens, authorization, admin, app: RegisteredClient
) -> None:
    # A gateway older than authenticated_at: codes as before, and a revocation made after one
    # exists still discards it.
    await tokens.RevokeSubject(pb.RevokeSubjectRequest(subject="alice"), metadata=admin)
    running.clock.advance(5)
    code = await authorization.CreateAuthorizationCode(code_request(app), metadata=admin)
    assert code.code.startswith("asac_")


async def test_a_logout_during_a_redemption_revokes_the_session_it_starts(
    running: RunningAuthority, tokens, authorization, admin, app: RegisteredClient, code: str
) -> None:
    # PostgreSQL, READ COMMITTED: a redemption that has marked its code used and started a
    # family, not yet committed, while "log out everywhere" runs. The logout must wait for it and
    # revoke that family too, not read the families first and miss it.
    if running.settings.database_url.startswith("sqlite"):
        pytest.skip("SQLite runs one writer at a time: no redemption is in flight")
    other = await running.authority.issue_token_pair(subject="mallory", client_id=app.client_id)
    redemption = await asyncpg.connect(asyncpg_dsn(running.settings.database_url))
    try:
        transaction = redemption.transaction()
        await transaction.start()
        await redemption.execute(
            "UPDATE authorization_codes SET used_at = $1 WHERE code_digest = $2",
            running.clock.now(),
            opaque.digest(code),
        )
        # Stands in for the family the redemption inserts: alice's, and not committed yet.
        await redemption.execute(
            "UPDATE families SET subject = 'alice' WHERE family_id = $1", other.family.family_id
        )
        logout = asyncio.ensure_future(
            tokens.RevokeSubject(pb.RevokeSubjectRequest(subject="alice"), metadata=admin)
        )
        await eventually(lambda: _waits_for_a_lock(redemption))
        assert not logout.done()
        await transaction.commit()
        revoked = await logout
    finally:
        await redemption.close()
    assert revoked.families_revoked == 1
    rotating = tokens.Rotate(
        pb.RotateRequest(refresh_token=other.refresh_token, client_id=app.client_id),
        metadata=admin,
    )
    assert (await refused(rotating))[:2] == INVALID_GRANT


async def _waits_for_a_lock(conn: Any) -> bool:
    return bool(await conn.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"))


async def test_a_redeemed_code_is_still_seen_as_reused_after_a_logout(
    running: RunningAuthority, tokens, authorization, admin, app: RegisteredClient, code: str
) -> None:
    request = exchange_request(app, code)
    await authorization.ExchangeAuthorizationCode(request, metadata=admin)
    await tokens.RevokeSubject(pb.RevokeSubjectRequest(subject="alice"), metadata=admin)
    assert await refused(authorization.ExchangeAuthorizationCode(request, metadata=admin)) == (
        *INVALID_GRANT,
        "authorization code already used; tokens issued from it were revoked",
    )


async def test_a_logout_leaves_other_subjects_codes_alone(
    tokens, authorization, admin, app: RegisteredClient
) -> None:
    bobs = await authorization.CreateAuthorizationCode(
        code_request(app, subject="bob"), metadata=admin
    )
    await tokens.RevokeSubject(pb.RevokeSubjectRequest(subject="alice"), metadata=admin)
    pair = await authorization.ExchangeAuthorizationCode(
        exchange_request(app, bobs.code), metadata=admin
    )
    assert pair.family_id


async def test_a_concurrent_second_redemption_revokes_the_family_too(
    running: RunningAuthority, tokens, authorization, admin, app: RegisteredClient
) -> None:
    # Both redemptions may read the code unused (PostgreSQL, read committed); the one that loses
    # the compare-and-set is a second use all the same. Whichever way they interleave, no family
    # issued from a code used twice may live (RFC 6749 §4.1.2).
    for _ in range(10):
        verifier, challenge = fresh_pkce()
        issued = await authorization.CreateAuthorizationCode(
            code_request(app, code_challenge=challenge), metadata=admin
        )
        request = exchange_request(app, issued.code, code_verifier=verifier)
        results = await asyncio.gather(
            *(authorization.ExchangeAuthorizationCode(request, metadata=admin) for _ in range(2)),
            return_exceptions=True,
        )
        [pair] = [r for r in results if isinstance(r, pb.TokenPair)]
        [loser] = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert dict(loser.trailing_metadata())["oauth-error-description"] == (
            "authorization code already used; tokens issued from it were revoked"
        )
        rotating = tokens.Rotate(pb.RotateRequest(refresh_token=pair.refresh_token), metadata=admin)
        assert (await refused(rotating))[:2] == INVALID_GRANT
    assert len(await audit_events(running, "authorization_code_reuse_detected")) == 10


async def test_code_expires_at_sixty_seconds(
    running: RunningAuthority, authorization, app: RegisteredClient, admin
) -> None:
    first = await authorization.CreateAuthorizationCode(code_request(app), metadata=admin)
    verifier, challenge = fresh_pkce()
    second = await authorization.CreateAuthorizationCode(
        code_request(app, code_challenge=challenge), metadata=admin
    )
    running.clock.advance(59.9)
    await authorization.ExchangeAuthorizationCode(exchange_request(app, first.code), metadata=admin)
    running.clock.advance(0.1)
    expired = exchange_request(app, second.code, code_verifier=verifier)
    assert await refused(authorization.ExchangeAuthorizationCode(expired, metadata=admin)) == (
        *INVALID_GRANT,
        "authorization code expired",
    )


@pytest.mark.parametrize(
    ("fields", "refusal", "burns"),
    [
        pytest.param({"redirect_uri": APP_REDIRECT_URI + "/"}, INVALID_GRANT, False, id="redirect"),
        pytest.param({"client_id": "other"}, INVALID_GRANT, False, id="another-client"),
        pytest.param({"code_verifier": ""}, INVALID_REQUEST, False, id="no-verifier"),
        pytest.param({"code_verifier": "short"}, INVALID_GRANT, True, id="malformed-verifier"),
        pytest.param({"code": "asac_" + "A" * 43}, INVALID_GRANT, False, id="unknown-code"),
        pytest.param({"code": "garbage"}, INVALID_GRANT, False, id="garbage-code"),
    ],
)
async def test_exchange_refuses(
    running: RunningAuthority,
    authorization,
    admin,
    app: RegisteredClient,
    code: str,
    fields: dict[str, Any],
    refusal: tuple[object, str],
    burns: bool,
) -> None:
    if fields.get("client_id") == "other":
        other = await running.create_client(
            "other", grant_types=["authorization_code"], redirect_uris=[APP_REDIRECT_URI]
        )
        fields = {"client_id": other.client_id}
    fields = dict(fields)
    bad = exchange_request(app, fields.pop("code", code), **fields)
    assert (await refused(authorization.ExchangeAuthorizationCode(bad, metadata=admin)))[
        :2
    ] == refusal
    exchanging = authorization.ExchangeAuthorizationCode(
        exchange_request(app, code), metadata=admin
    )
    if burns:
        assert (await refused(exchanging))[:2] == INVALID_GRANT
    else:  # a mistake that proves nothing about the verifier leaves the code usable
        await exchanging


async def test_public_client_code_flow(
    running: RunningAuthority, authorization, admin, spa: RegisteredClient
) -> None:
    verifier = "public-client-verifier-" + "x" * 40
    issued = await authorization.CreateAuthorizationCode(
        pb.CreateAuthorizationCodeRequest(
            client_id=spa.client_id,
            redirect_uri="http://127.0.0.1:9000/cb",
            subject="alice",
            code_challenge=pkce.s256(verifier),
            code_challenge_method="S256",
        ),
        metadata=admin,
    )
    pair = await authorization.ExchangeAuthorizationCode(
        pb.ExchangeAuthorizationCodeRequest(
            client_id=spa.client_id,
            code=issued.code,
            redirect_uri="http://127.0.0.1:9000/cb",
            code_verifier=verifier,
        ),
        metadata=bearer(await running.admin_token()),
    )
    assert pair.refresh_token.startswith("asrt_")
