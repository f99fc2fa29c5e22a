"""Verify builds each token's reply once; every check still runs on every call."""

from __future__ import annotations

import grpc
import pytest
from authsvc_client.v1 import authsvc_pb2 as pb

from authsvc.testing import RunningAuthority


def _oauth_error(error: grpc.aio.AioRpcError) -> str:
    return dict(error.trailing_metadata() or ())["oauth-error"]


async def test_a_remembered_reply_never_outlives_a_revocation(
    running: RunningAuthority, tokens, admin
) -> None:
    client = await running.create_client(grant_types=["refresh_token"], audiences=["api"])
    pair = await running.authority.issue_token_pair(
        subject="ann", client_id=client.client_id, audience=["api"]
    )
    other = await running.authority.issue_token_pair(
        subject="bob", client_id=client.client_id, audience=["api"]
    )
    request = pb.VerifyRequest(token=pair.access.token, audience="api")
    first = await tokens.Verify(request, metadata=admin)
    again = await tokens.Verify(request, metadata=admin)
    assert first == again
    assert first.claims.sub == "ann"
    assert (
        await tokens.Verify(
            pb.VerifyRequest(token=other.access.token, audience="api"), metadata=admin
        )
    ).claims.sub == "bob"

    await tokens.RevokeFamily(
        pb.RevokeFamilyRequest(family_id=pair.family.family_id), metadata=admin
    )

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await tokens.Verify(request, metadata=admin)
    assert _oauth_error(refused.value) == "invalid_token"
    with pytest.raises(grpc.aio.AioRpcError) as wrong_audience:
        await tokens.Verify(
            pb.VerifyRequest(token=other.access.token, audience="elsewhere"), metadata=admin
        )
    assert _oauth_error(wrong_audience.value) == "invalid_token"
