"""Minting over gRPC: IssueTokenPair (user token pairs) and ClientCredentials (RFC 6749 §4.4)."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from authsvc_client.v1 import authsvc_pb2 as pb

from authsvc import pkce
from authsvc.client_registry import RegisteredClient
from authsvc.errors import InvalidRequest
from authsvc.issuance import mint_access_token
from authsvc.storage.records import ClientRecord
from authsvc.testing import RunningAuthority
from authsvc.tokens import opaque
from tests.authsvc.calls import (
    INVALID_CLIENT,
    INVALID_REQUEST,
    INVALID_SCOPE,
    UNAUTHORIZED_CLIENT,
    audit_events,
    database_rows,
    refused,
)
from tests.authsvc.conftest import APP_REDIRECT_URI

VERIFIER = "a" * 43  # RFC 7636 §4.1: 43 to 128 characters


def payload_of(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return result


def header_of(token: str) -> dict[str, Any]:
    head = token.split(".")[0]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    return result


# IssueTokenPair


async def test_issue_token_pair(
    running: RunningAuthority, tokens, admin, app: RegisteredClient
) -> None:
    pair = await tokens.IssueTokenPair(
        pb.IssueTokenPairRequest(
            subject="alice",
            client_id=app.client_id,
            scope=["read"],
            audience=["api"],
            device_id="laptop",
        ),
        metadata=admin,
    )
    s = running.settings
    assert pair.token_type == "Bearer"
    assert pair.expires_in == s.access_token_ttl
    assert pair.refresh_expires_in == s.refresh_absolute_ttl
    assert list(pair.scope) == ["read"]
    assert opaque.looks_like(opaque.Kind.REFRESH_TOKEN, pair.refresh_token)
    assert header_of(pair.access_token) == {
        "alg": "EdDSA",
        "typ": "at+jwt",
        "kid": running.authority.ctx.key_ring.signer.kid,
    }
    claims = payload_of(pair.access_token)
    now = int(running.clock.now())
    assert claims == {
        "iss": s.issuer,
        "sub": "alice",
        "aud": ["api"],
        "exp": now + s.access_token_ttl,
        "iat": now,
        "jti": claims["jti"],
        "client_id": app.client_id,
        "scope": "read",
        "sid": pair.family_id,
    }
    [event] = await audit_events(running, "token_pair_issued")
    assert (event["family_id"], event["subject"]) == (pair.family_id, "alice")


async def test_issue_token_pair_defaults_to_the_clients_registration(
    tokens, admin, app: RegisteredClient
) -> None:
    pair = await tokens.IssueTokenPair(
        pb.IssueTokenPairRequest(subject="alice", client_id=app.client_id), metadata=admin
    )
    assert list(pair.scope) == ["read", "write", "profile"]
    assert payload_of(pair.access_token)["aud"] == ["api", "other-api"]


async def test_each_issue_starts_a_new_family_with_unique_tokens(
    tokens, admin, app: RegisteredClient
) -> None:
    request = pb.IssueTokenPairRequest(subject="alice", client_id=app.client_id)
    pairs = [await tokens.IssueTokenPair(request, metadata=admin) for _ in range(3)]
    for attribute in ("family_id", "refresh_token", "access_token"):
        assert len({getattr(p, attribute) for p in pairs}) == 3
    assert len({payload_of(p.access_token)["jti"] for p in pairs}) == 3


@pytest.mark.parametrize(
    ("fields", "refusal"),
    [
        pytest.param({"scope": ["admin"]}, INVALID_SCOPE, id="scope-not-allowed"),
        pytest.param(
            # The refusal names them all: 8 KiB, past what gRPC's trailing metadata may carry.
            {"scope": [f"{i:02d}" + "z" * 126 for i in range(64)]},
            INVALID_SCOPE,
            id="scopes-not-allowed-longer-than-a-header",
        ),
        pytest.param({"audience": ["payments"]}, INVALID_SCOPE, id="audience-not-allowed"),
        pytest.param({"scope": ['"quoted"']}, INVALID_REQUEST, id="malformed-scope"),
        pytest.param({"subject": ""}, INVALID_REQUEST, id="no-subject"),
        pytest.param({"subject": "s" * 201}, INVALID_REQUEST, id="subject-too-long"),
        pytest.param({"device_id": "d" * 201}, INVALID_REQUEST, id="device-id-too-long"),
        pytest.param({"client_id": "nobody"}, INVALID_CLIENT, id="unknown-client"),
    ],
)
async def test_issue_token_pair_refuses(
    running: RunningAuthority,
    tokens,
    admin,
    app: RegisteredClient,
    fields: dict[str, Any],
    refusal: tuple[object, str],
) -> None:
    request = {"subject": "alice", "client_id": app.client_id, **fields}
    before = await database_rows(running)
    issuing = tokens.IssueTokenPair(pb.IssueTokenPairRequest(**request), metadata=admin)
    assert (await refused(issuing))[:2] == refusal
    assert await database_rows(running) == before


async def test_issue_token_pair_needs_the_refresh_token_grant(
    running: RunningAuthority, tokens, admin
) -> None:
    service = await running.create_client("svc", grant_types=["client_credentials"])
    issuing = tokens.IssueTokenPair(
        pb.IssueTokenPairRequest(subject="alice", client_id=service.client_id), metadata=admin
    )
    assert (await refused(issuing))[:2] == UNAUTHORIZED_CLIENT


SUBJECT_IS_A_CLIENT = (
    "subject is a registered client's id, which that client's tokens carry as sub: "
    "give the user another subject"
)


async def test_no_user_is_given_a_clients_id_as_subject(
    running: RunningAuthority, tokens, admin, app: RegisteredClient
) -> None:
    """RFC 9068 §5: a client's own tokens carry its id as `sub` (test_client_credentials), so a
    user token with that `sub` would be that service to a resource server that reads `sub`.
    Any client's id, the app's own included, over either way a family starts."""
    service = await running.create_client("orders")
    before = await database_rows(running)
    for subject in (service.client_id, app.client_id):
        issuing = tokens.IssueTokenPair(
            pb.IssueTokenPairRequest(subject=subject, client_id=app.client_id), metadata=admin
        )
        assert await refused(issuing) == (*INVALID_REQUEST, SUBJECT_IS_A_CLIENT)
    assert await database_rows(running) == before
    code = await running.authority.create_authorization_code(
        client_id=app.client_id,
        redirect_uri=APP_REDIRECT_URI,
        subject=service.client_id,
        code_challenge=pkce.s256(VERIFIER),
        code_challenge_method="S256",
    )
    before = await database_rows(running)
    with pytest.raises(InvalidRequest, match=re.escape(SUBJECT_IS_A_CLIENT)):
        await running.authority.exchange_authorization_code(
            client_id=app.client_id,
            code=code.code,
            redirect_uri=APP_REDIRECT_URI,
            code_verifier=VERIFIER,
        )
    assert await database_rows(running) == before


# ClientCredentials


@pytest.fixture
async def service(running: RunningAuthority) -> RegisteredClient:
    return await running.create_client(
        "orders", scopes=["orders:read", "orders:write"], audiences=["api", "ledger"]
    )


def credentials(client: RegisteredClient, **fields: Any) -> pb.ClientCredentialsRequest:
    return pb.ClientCredentialsRequest(
        client_id=client.client_id, client_secret=client.client_secret, **fields
    )


async def test_client_credentials(
    running: RunningAuthority, tokens, service: RegisteredClient
) -> None:
    issued = await tokens.ClientCredentials(
        credentials(service, scope=["orders:read"], audience=["ledger"])
    )
    assert issued.token_type == "Bearer"
    assert issued.expires_in == running.settings.access_token_ttl
    assert list(issued.scope) == ["orders:read"]
    claims = payload_of(issued.access_token)
    assert (claims["sub"], claims["client_id"]) == (service.client_id, service.client_id)
    assert (claims["aud"], claims["scope"]) == (["ledger"], "orders:read")
    assert "sid" not in claims
    verified = running.authority.verify(issued.access_token, audience="ledger")
    assert verified.scope == ("orders:read",)


async def test_client_credentials_defaults_to_the_registration(
    tokens, service: RegisteredClient
) -> None:
    issued = await tokens.ClientCredentials(credentials(service))
    assert list(issued.scope) == ["orders:read", "orders:write"]
    assert payload_of(issued.access_token)["aud"] == ["api", "ledger"]


@pytest.mark.parametrize(
    ("fields", "description"),
    [
        pytest.param(
            {"scope": ["orders:read", "orders:delete"]},
            "scope not allowed for this client: orders:delete",
            id="scope",
        ),
        pytest.param(
            {"audience": ["payments"]},
            "audience not allowed for this client: payments",
            id="audience",
        ),
        pytest.param(
            {"audience": ["authsvc"]},
            "audience not allowed for this client: authsvc",
            id="authsvc-itself",
        ),
    ],
)
async def test_client_credentials_refuses_what_the_client_may_not_have(
    tokens, service: RegisteredClient, fields: dict[str, Any], description: str
) -> None:
    assert await refused(tokens.ClientCredentials(credentials(service, **fields))) == (
        *INVALID_SCOPE,
        description,
    )


async def _wrong_secret(
    r: RunningAuthority, client: RegisteredClient
) -> pb.ClientCredentialsRequest:
    return pb.ClientCredentialsRequest(
        client_id=client.client_id, client_secret=opaque.new_secret(opaque.Kind.CLIENT_SECRET)
    )


async def _no_secret(r: RunningAuthority, client: RegisteredClient) -> pb.ClientCredentialsRequest:
    return pb.ClientCredentialsRequest(client_id=client.client_id)


async def _unknown(r: RunningAuthority, client: RegisteredClient) -> pb.ClientCredentialsRequest:
    return pb.ClientCredentialsRequest(client_id="nobody", client_secret=client.client_secret)


async def _another_clients_secret(
    r: RunningAuthority, client: RegisteredClient
) -> pb.ClientCredentialsRequest:
    return pb.ClientCredentialsRequest(
        client_id=client.client_id, client_secret=r.admin.client_secret
    )


async def _public(r: RunningAuthority, client: RegisteredClient) -> pb.ClientCredentialsRequest:
    spa = await r.create_client(
        "spa",
        grant_types=["authorization_code"],
        redirect_uris=["https://spa.example/cb"],
        public=True,
    )
    return pb.ClientCredentialsRequest(client_id=spa.client_id)


async def _disabled(r: RunningAuthority, client: RegisteredClient) -> pb.ClientCredentialsRequest:
    await r.authority.revoke_client(client.client_id, disable=True)
    return credentials(client)


async def _rotated_secret(
    r: RunningAuthority, client: RegisteredClient
) -> pb.ClientCredentialsRequest:
    await r.authority.rotate_client_secret(client.client_id)
    return credentials(client)


@pytest.mark.parametrize(
    "request_for",
    [
        pytest.param(_wrong_secret, id="wrong-secret"),
        pytest.param(_no_secret, id="no-secret"),
        pytest.param(_another_clients_secret, id="another-clients-secret"),
        pytest.param(_unknown, id="unknown-client"),
        pytest.param(_public, id="public-client"),
        pytest.param(_disabled, id="disabled-client"),
        pytest.param(_rotated_secret, id="secret-rotated-away"),
    ],
)
async def test_client_credentials_refuses_a_client_that_does_not_authenticate(
    running: RunningAuthority, tokens, service: RegisteredClient, request_for: Any
) -> None:
    request = await request_for(running, service)
    assert (await refused(tokens.ClientCredentials(request)))[:2] == INVALID_CLIENT


async def test_client_credentials_needs_the_grant(running: RunningAuthority, tokens) -> None:
    app = await running.create_client("app", grant_types=["refresh_token"], scopes=["read"])
    assert (await refused(tokens.ClientCredentials(credentials(app))))[:2] == UNAUTHORIZED_CLIENT


async def test_rotated_secret_works(running: RunningAuthority, tokens, service) -> None:
    rotated = await running.authority.rotate_client_secret(service.client_id)
    assert rotated.client_secret != service.client_secret
    await tokens.ClientCredentials(credentials(rotated))


async def test_oversized_secret_is_refused_before_any_work(tokens, service) -> None:
    request = pb.ClientCredentialsRequest(client_id=service.client_id, client_secret="x" * 9000)
    assert (await refused(tokens.ClientCredentials(request)))[:2] == INVALID_REQUEST


NO_AUDIENCE = "this client has no audience to issue tokens for: register a new client with one"


async def _stored_without_an_audience(running: RunningAuthority) -> RegisteredClient:
    """A client as registration accepted it before it required an audience."""
    secret = opaque.new_secret(opaque.Kind.CLIENT_SECRET)
    record = ClientRecord(
        client_id="legacy",
        name="legacy",
        public=False,
        first_party=False,
        grant_types=("client_credentials", "refresh_token"),
        redirect_uris=(),
        scopes=("read",),
        audiences=(),
        created_at=0.0,
        disabled_at=None,
        secret_digest=opaque.digest(secret),
    )
    async with running.authority.ctx.store.transaction() as tx:
        await tx.insert_client(record)
    return RegisteredClient(record.client_id, secret, record)


async def test_a_client_stored_without_an_audience_is_refused_a_token_nothing_accepts(
    running: RunningAuthority, tokens, admin
) -> None:
    """RFC 9068 §2.2 requires `aud`. Minted with `aud: []`, the token was refused by every
    verifier ("claim aud missing or malformed"), authsvc's own Verify and introspection
    included, while the client that got it took it for good. Registration now refuses such a
    client (`test_client_registry`); one registered before that is refused its tokens."""
    client = await _stored_without_an_audience(running)
    before = await database_rows(running)
    pair = tokens.IssueTokenPair(
        pb.IssueTokenPairRequest(subject="alice", client_id=client.client_id), metadata=admin
    )
    assert await refused(pair) == (*INVALID_SCOPE, NO_AUDIENCE)
    assert await refused(tokens.ClientCredentials(credentials(client))) == (
        *INVALID_SCOPE,
        NO_AUDIENCE,
    )
    assert await database_rows(running) == before


def test_no_access_token_is_ever_minted_without_an_audience(running: RunningAuthority) -> None:
    # The last line behind every grant's own refusal (above, and rotation's).
    with pytest.raises(ValueError, match="needs an audience"):
        mint_access_token(
            running.authority.ctx, subject="alice", client_id="app", scope=(), audience=()
        )
