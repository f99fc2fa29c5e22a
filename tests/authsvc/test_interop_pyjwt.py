"""Interop: our access tokens verify in PyJWT against the JWK Set PublishKeys serves."""

from __future__ import annotations

from pathlib import Path

import grpc
import jwt
import pytest
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_client.v1 import authsvc_pb2_grpc

from authsvc.testing import RunningAuthority, start_authority


async def jwk_set(tokens: authsvc_pb2_grpc.TokenServiceStub) -> jwt.PyJWKSet:
    response = await tokens.PublishKeys(pb.PublishKeysRequest())
    return jwt.PyJWKSet.from_json(response.jwks_json)


def decode(token: str, keys: jwt.PyJWKSet, *, issuer: str, audience: str) -> dict[str, object]:
    kid = jwt.get_unverified_header(token)["kid"]
    claims: dict[str, object] = jwt.decode(
        token,
        key=keys[kid],
        algorithms=["EdDSA"],
        audience=audience,
        issuer=issuer,
        options={"require": ["exp", "iat", "iss", "sub", "aud", "jti"]},
    )
    return claims


async def test_user_access_token_verifies_in_pyjwt(
    running: RunningAuthority, tokens, pair: pb.TokenPair
) -> None:
    claims = decode(
        pair.access_token, await jwk_set(tokens), issuer=running.settings.issuer, audience="api"
    )
    assert claims["sub"] == "alice"
    assert claims["sid"] == pair.family_id
    assert claims["scope"] == "read write profile"
    assert jwt.get_unverified_header(pair.access_token)["typ"] == "at+jwt"


async def test_client_credentials_token_verifies_in_pyjwt(
    running: RunningAuthority, tokens
) -> None:
    service = await running.create_client("svc", scopes=["read"], audiences=["api"])
    issued = await tokens.ClientCredentials(
        pb.ClientCredentialsRequest(
            client_id=service.client_id, client_secret=service.client_secret
        )
    )
    claims = decode(
        issued.access_token, await jwk_set(tokens), issuer=running.settings.issuer, audience="api"
    )
    assert claims["client_id"] == service.client_id


async def test_token_of_the_next_key_verifies_after_rotation(
    running: RunningAuthority, tokens, admin, pair: pb.TokenPair
) -> None:
    # A verifier that cached the set before the rotation already knows the next key.
    cached = await jwk_set(tokens)
    await tokens.RotateKeys(pb.RotateKeysRequest(immediate=True), metadata=admin)
    fresh_token = await running.admin_token()
    issuer = running.settings.issuer
    decode(fresh_token, cached, issuer=issuer, audience="authsvc")
    decode(pair.access_token, await jwk_set(tokens), issuer=issuer, audience="api")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        pytest.param({"audience": "third-api"}, jwt.InvalidAudienceError, id="wrong-audience"),
        pytest.param({"issuer": "https://evil.example"}, jwt.InvalidIssuerError, id="wrong-issuer"),
        pytest.param({"tamper": True}, jwt.InvalidSignatureError, id="tampered"),
    ],
)
async def test_pyjwt_refuses_what_it_should(
    running: RunningAuthority, tokens, pair: pb.TokenPair, change: dict[str, object], error: type
) -> None:
    # The interop check can fail: PyJWT really checks what we ask it to.
    token = pair.access_token
    if change.get("tamper"):
        head, body, signature = token.split(".")
        token = f"{head}.{body}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    with pytest.raises(error):
        decode(
            token,
            await jwk_set(tokens),
            issuer=str(change.get("issuer", running.settings.issuer)),
            audience=str(change.get("audience", "api")),
        )


async def test_es256_token_verifies_in_pyjwt(tmp_path: Path) -> None:
    async with (
        start_authority(tmp_path, signing_algorithm="ES256") as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        keys = await jwk_set(authsvc_pb2_grpc.TokenServiceStub(channel))
        token = await running.admin_token()
        kid = jwt.get_unverified_header(token)["kid"]
        claims = jwt.decode(
            token,
            key=keys[kid],
            algorithms=["ES256"],
            audience="authsvc",
            issuer=running.settings.issuer,
        )
        assert claims["client_id"] == running.admin.client_id
