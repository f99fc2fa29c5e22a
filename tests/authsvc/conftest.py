"""Fixtures for the core's tests: a registered app, a user, token pairs issued over gRPC, and a
PostgreSQL server of the test's own to stop and start."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_client.v1 import authsvc_pb2_grpc

from authsvc.client_registry import RegisteredClient
from authsvc.testing import RunningAuthority
from tests.private_postgres import PrivatePostgres, unavailable_reason

APP_REDIRECT_URI = "https://app.example/callback"
APP_SCOPES = ("read", "write", "profile")
APP_AUDIENCES = ("api", "other-api")


@pytest.fixture
async def app(running: RunningAuthority) -> RegisteredClient:
    """A confidential first-party app that signs users in: code flow and refresh tokens."""
    return await running.create_client(
        "app",
        grant_types=["authorization_code", "refresh_token"],
        scopes=APP_SCOPES,
        audiences=APP_AUDIENCES,
        redirect_uris=[APP_REDIRECT_URI],
        first_party=True,
    )


@pytest.fixture
async def pair(
    tokens: authsvc_pb2_grpc.TokenServiceStub,
    admin: tuple[tuple[str, str], ...],
    app: RegisteredClient,
) -> pb.TokenPair:
    """A fresh user token pair (one family) for subject `alice` on device `laptop`."""
    return await tokens.IssueTokenPair(
        pb.IssueTokenPairRequest(subject="alice", client_id=app.client_id, device_id="laptop"),
        metadata=admin,
    )


@pytest.fixture
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    """A running PostgreSQL server of this test's own (skipped, saying why, where impossible)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"cannot run a private PostgreSQL server: {reason}")
    server = PrivatePostgres()
    try:
        await asyncio.to_thread(server.init)
        await asyncio.to_thread(server.start)
        yield server
    finally:
        await asyncio.to_thread(server.remove)
