"""`authsvc demo`: what a new user does first, against `make run`, over gRPC only.

Gets a client-credentials token as the demo service, verifies it through `Verify`, then fetches the
published keys and verifies it again locally, as the interceptor does: what every integrating
service does.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
from authsvc_client import parse_jwks, verify_access_token
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_client.v1 import authsvc_pb2_grpc

from authsvc.config import Settings


async def run_demo(settings: Settings, credentials: dict[str, Any]) -> int:
    demo = credentials["demo"]
    address = settings.grpc_address
    async with grpc.aio.insecure_channel(address) as channel:
        tokens = authsvc_pb2_grpc.TokenServiceStub(channel)
        try:
            issued = await tokens.ClientCredentials(
                pb.ClientCredentialsRequest(
                    client_id=demo["client_id"],
                    client_secret=demo["client_secret"],
                    audience=["demo-api", settings.audience],
                ),
                timeout=5,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                print(f"could not reach authsvc at {address}: {exc.details()} (is `make run` up?)")
            else:  # it answered, and refused: say what it said
                print(
                    f"authsvc at {address} refused the demo client: {exc.code().name}: "
                    f"{exc.details()} (the data directory's dev-credentials.json may be from "
                    "another database: delete it, and `make run` registers new dev clients)"
                )
            return 1
        bearer = (("authorization", f"Bearer {issued.access_token}"),)
        verified = await tokens.Verify(
            pb.VerifyRequest(token=issued.access_token, audience="demo-api"),
            metadata=bearer,
            timeout=5,
        )
        keys = await tokens.PublishKeys(pb.PublishKeysRequest(), timeout=5)
    claims = verified.claims
    print(f"access token ({issued.expires_in}s):\n{issued.access_token}\n")
    print(f"verified: sub={claims.sub} aud={list(claims.aud)} scope={' '.join(claims.scope)}")
    # What an integrating service does with the published keys: verify on its own, no call.
    local = verify_access_token(
        issued.access_token,
        keys=parse_jwks(keys.jwks_json),
        issuer=settings.issuer,
        audience="demo-api",
        now=time.time(),
        leeway=settings.leeway,
    )
    print(f"verified locally too, with kid={local.kid} ({len(keys.keys)} keys published)")
    print("\nProtect your own service with the interceptor: see README, 'Protect your service'.")
    return 0
