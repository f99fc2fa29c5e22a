"""Input that PostgreSQL cannot store (a NUL character, a value longer than its column) is
invalid_request on every RPC it can reach, on both databases, and changes nothing; SQLite would
store it, PostgreSQL had answered INTERNAL and logged a traceback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from authsvc_client.v1 import authsvc_pb2 as pb

from authsvc.client_registry import RegisteredClient
from authsvc.testing import RunningAuthority
from tests.authsvc.calls import INVALID_REQUEST, database_rows, refused, seed_families

Call = Callable[[Any, Any, Any, RegisteredClient], Awaitable[Any]]

# Refused by the domain itself, whichever the database: a subject or a device id carries no
# control character (`authsvc.subjects`), and a subject is at most 200 characters.
REFUSED_ON_BOTH: dict[str, Call] = {
    "IssueTokenPair-subject": lambda tokens, _, admin, app: tokens.IssueTokenPair(
        pb.IssueTokenPairRequest(subject="al\x00ice", client_id=app.client_id), metadata=admin
    ),
    "IssueTokenPair-subject-c1": lambda tokens, _, admin, app: tokens.IssueTokenPair(
        pb.IssueTokenPairRequest(subject="al\x85ice", client_id=app.client_id), metadata=admin
    ),
    "IssueTokenPair-device": lambda tokens, _, admin, app: tokens.IssueTokenPair(
        pb.IssueTokenPairRequest(subject="alice", client_id=app.client_id, device_id="\x00"),
        metadata=admin,
    ),
    "ListSessions-subject": lambda tokens, _, admin, app: tokens.ListSessions(
        pb.ListSessionsRequest(subject="al\x00ice"), metadata=admin
    ),
    "RevokeSubject-subject": lambda tokens, _, admin, app: tokens.RevokeSubject(
        pb.RevokeSubjectRequest(subject="al\x00ice"), metadata=admin
    ),
    "RevokeSubject-long-subject": lambda tokens, _, admin, app: tokens.RevokeSubject(
        pb.RevokeSubjectRequest(subject="s" * 201), metadata=admin
    ),
}
# Looked up, never stored: no such row (SQLite) or a value PostgreSQL refuses (invalid_request).
LOOKED_UP: dict[str, Call] = {
    "RevokeFamily-family": lambda tokens, _, admin, app: tokens.RevokeFamily(
        pb.RevokeFamilyRequest(family_id="f\x00"), metadata=admin
    ),
    "GetClient-client": lambda _, authorization, admin, app: authorization.GetClient(
        pb.GetClientRequest(client_id="c\x00"), metadata=admin
    ),
    "AuthenticateUser-username": lambda _, authorization, admin, app: (
        authorization.AuthenticateUser(
            pb.AuthenticateUserRequest(username="al\x00ice", password="pw"), metadata=admin
        )
    ),
    "ClientCredentials-client": lambda tokens, _, admin, app: tokens.ClientCredentials(
        pb.ClientCredentialsRequest(client_id="c\x00", client_secret="s")
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSED_ON_BOTH))
async def test_a_subject_no_database_should_hold_is_refused_on_both(
    running: RunningAuthority, tokens, authorization, admin, app: RegisteredClient, name: str
) -> None:
    before = await database_rows(running)
    refusal = await refused(REFUSED_ON_BOTH[name](tokens, authorization, admin, app))
    assert refusal[:2] == INVALID_REQUEST
    assert await database_rows(running) == before


@pytest.mark.parametrize("name", sorted(LOOKED_UP))
async def test_a_value_looked_up_is_never_a_server_error(
    running: RunningAuthority, tokens, authorization, admin, app: RegisteredClient, name: str
) -> None:
    before = await database_rows(running)
    assert await _status_of(LOOKED_UP[name](tokens, authorization, admin, app)) in {
        grpc.StatusCode.OK,  # RevokeFamily of no such family: revoked=False
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,  # AuthenticateUser: invalid_grant
    }
    rows = await database_rows(running)
    if "AuthenticateUser" in name:  # a failed login is counted, whatever the name
        rows.pop("login_failures"), before.pop("login_failures")
    assert rows == before


async def _status_of(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_a_subject_stored_before_the_rule_can_still_be_listed_and_logged_out(
    running: RunningAuthority, app: RegisteredClient
) -> None:
    """A TAB in a subject was accepted before `check_subject` refused control characters: its
    sessions must still be listed and ended by that subject."""
    await seed_families(running, app.client_id, "alice\tsmith", 2)
    assert len(await running.authority.list_sessions("alice\tsmith")) == 2
    assert await running.authority.revoke_subject("alice\tsmith") == 2
