"""Fixtures shared by every suite: a real authsvc on port 0 over a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from authsvc_client.v1 import authsvc_pb2_grpc

from authsvc.testing import RunningAuthority, start_authority


@pytest.fixture
async def running(tmp_path) -> AsyncIterator[RunningAuthority]:
    async with start_authority(tmp_path) as running:
        yield running


@pytest.fixture
async def channel(running: RunningAuthority) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(running.address) as channel:
        yield channel


@pytest.fixture
def tokens(channel: grpc.aio.Channel) -> authsvc_pb2_grpc.TokenServiceStub:
    return authsvc_pb2_grpc.TokenServiceStub(channel)


@pytest.fixture
def authorization(channel: grpc.aio.Channel) -> authsvc_pb2_grpc.AuthorizationServiceStub:
    return authsvc_pb2_grpc.AuthorizationServiceStub(channel)


@pytest.fixture
async def admin(running: RunningAuthority) -> tuple[tuple[str, str], ...]:
    """Call metadata for the bootstrap admin client."""
    return (("authorization", f"Bearer {await running.admin_token()}"),)
