"""The whole authorization code flow, driven by Authlib's httpx client against real servers."""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from authlib.deprecate import AuthlibDeprecationWarning
from authlib.oauth2.rfc7636 import create_s256_code_challenge

with warnings.catch_warnings():
    # Authlib 1.9 would rather run on httpx2; it runs on httpx, which is what its users have.
    warnings.filterwarnings(
        "ignore", "The httpx module is deprecated", category=AuthlibDeprecationWarning
    )
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

from authsvc_gateway import paths

from tests.gateway.browser import sign_in
from tests.gateway.conftest import BACKENDS, PASSWORD, REDIRECT_URI, USERNAME, Deployment, deploy

APPENDIX_B = json.loads(
    (Path(__file__).parent / "fixtures" / "rfc7636_appendix_b.json").read_text()
)


async def _browser_app(deployment: Deployment) -> str:
    web = await deployment.authority.create_client(
        "browser-app",
        grant_types=["authorization_code", "refresh_token"],
        scopes=["profile", "orders:read"],
        audiences=["orders-api"],
        redirect_uris=[REDIRECT_URI],
        public=True,
        first_party=True,
    )
    return web.client_id


async def _resource_server(deployment: Deployment) -> tuple[str, str]:
    api = await deployment.authority.create_client(
        "orders-api", grant_types=["client_credentials"], scopes=["authsvc:introspect"]
    )
    return api.client_id, api.client_secret


@pytest.fixture(params=sorted(BACKENDS))
async def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Deployment]:
    """Every flow here runs once per way the gateway reaches authsvc: over gRPC (a standalone
    gateway) and in process (the gateway embedded in `authsvc serve`)."""
    async with deploy(tmp_path, backend=request.param) as deployment:
        yield deployment


def _query(location: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


async def test_authlib_runs_the_whole_flow(deployment: Deployment, http: httpx.AsyncClient) -> None:
    client_id = await _browser_app(deployment)
    api_id, api_secret = await _resource_server(deployment)
    token_url = deployment.endpoint(paths.TOKEN)
    verifier = "v" * 20 + "-._~" + "a1" * 20

    async with AsyncOAuth2Client(
        client_id=client_id,
        token_endpoint_auth_method="none",
        redirect_uri=REDIRECT_URI,
        scope="profile orders:read",
        code_challenge_method="S256",
    ) as app:
        url, state = app.create_authorization_url(
            deployment.endpoint(paths.AUTHORIZE), code_verifier=verifier
        )
        redirected = await sign_in(http, url, USERNAME, PASSWORD)
        assert redirected.status_code == 303
        location = redirected.headers["location"]
        assert location.startswith(REDIRECT_URI + "?")
        answer = _query(location)
        assert answer["state"] == state
        assert answer["iss"] == deployment.config.issuer

        token = await app.fetch_token(
            token_url, authorization_response=location, code_verifier=verifier
        )
        assert token["token_type"] == "Bearer"
        assert token["refresh_token"].startswith("asrt_")
        assert token["scope"] == "profile orders:read"

        # The access token verifies against the published JWKS, as any third party would do it.
        # (PyJWKClient fetches with blocking urllib, which would stall this event loop.)
        key_set = jwt.PyJWKSet.from_dict((await http.get(paths.JWKS)).json())
        kid = jwt.get_unverified_header(token["access_token"])["kid"]
        claims = jwt.decode(
            token["access_token"],
            key=key_set[kid],
            algorithms=["EdDSA"],
            audience="orders-api",
            issuer=deployment.config.issuer,
        )
        assert claims["sub"] == deployment.subject
        assert claims["client_id"] == client_id

        first_refresh = token["refresh_token"]
        rotated = await app.refresh_token(token_url, refresh_token=first_refresh)
        assert rotated["refresh_token"] != first_refresh

        with pytest.raises(OAuthError) as reused:
            await app.refresh_token(token_url, refresh_token=first_refresh)
        assert reused.value.error == "invalid_grant"
        with pytest.raises(OAuthError) as family_dead:
            await app.refresh_token(token_url, refresh_token=rotated["refresh_token"])
        assert family_dead.value.error == "invalid_grant"

    async with AsyncOAuth2Client(
        client_id=api_id, client_secret=api_secret, token_endpoint_auth_method="client_secret_basic"
    ) as api:
        dead = await api.introspect_token(
            deployment.endpoint(paths.INTROSPECT), token=rotated["access_token"]
        )
        assert dead.json() == {"active": False}

    # A second login, then revocation of its refresh token kills its access token too. A verifier
    # of its own: the first one's request was answered already.
    verifier = "w" * 20 + "-._~" + "b2" * 20
    async with AsyncOAuth2Client(
        client_id=client_id,
        token_endpoint_auth_method="none",
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
    ) as app:
        url, _ = app.create_authorization_url(
            deployment.endpoint(paths.AUTHORIZE), code_verifier=verifier
        )
        location = (await sign_in(http, url, USERNAME, PASSWORD)).headers["location"]
        token = await app.fetch_token(
            token_url, authorization_response=location, code_verifier=verifier
        )
        async with AsyncOAuth2Client(client_id=api_id, client_secret=api_secret) as api:
            live = (
                await api.introspect_token(
                    deployment.endpoint(paths.INTROSPECT), token=token["access_token"]
                )
            ).json()
            assert live["active"] is True
            assert live["sub"] == deployment.subject
            assert live["client_id"] == client_id
            assert live["token_type"] == "Bearer"

            revoked = await app.revoke_token(
                deployment.endpoint(paths.REVOKE),
                token=token["refresh_token"],
                token_type_hint="refresh_token",
            )
            assert revoked.status_code == 200
            after = await api.introspect_token(
                deployment.endpoint(paths.INTROSPECT), token=token["access_token"]
            )
            assert after.json() == {"active": False}


async def test_rfc7636_appendix_b_vector_end_to_end(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    """Authorize with the Appendix B challenge, redeem with its verifier, through both servers."""
    verifier, challenge = APPENDIX_B["code_verifier"], APPENDIX_B["code_challenge"]
    octets = bytes(APPENDIX_B["verifier_octets"])
    assert base64.urlsafe_b64encode(octets).rstrip(b"=").decode() == verifier
    assert create_s256_code_challenge(verifier) == challenge
    client_id = await _browser_app(deployment)
    url = httpx.URL(
        deployment.endpoint(paths.AUTHORIZE),
        params={
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT_URI,
            "code_challenge": challenge,
            "code_challenge_method": APPENDIX_B["code_challenge_method"],
        },
    )
    location = (await sign_in(http, str(url), USERNAME, PASSWORD)).headers["location"]
    reply = await http.post(
        paths.TOKEN,
        data={
            "grant_type": "authorization_code",
            "client_id": client_id,
            "code": _query(location)["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["cache-control"] == "no-store"
    assert set(reply.json()) >= {"access_token", "refresh_token", "expires_in", "token_type"}


async def test_a_client_configured_by_discovery_alone(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    """What an outside OAuth library does: read the metadata, then use only what it names."""
    metadata = (await http.get(paths.METADATA)).json()
    service = await deployment.authority.create_client(
        "billing",
        grant_types=["client_credentials"],
        scopes=["invoices:read", "authsvc:introspect"],
        audiences=["billing-api"],
    )
    assert "client_secret_post" in metadata["token_endpoint_auth_methods_supported"]
    async with AsyncOAuth2Client(
        client_id=service.client_id,
        client_secret=service.client_secret,
        token_endpoint_auth_method="client_secret_post",
        scope="invoices:read",
    ) as client:
        token = await client.fetch_token(
            metadata["token_endpoint"], grant_type="client_credentials"
        )
        assert token["scope"] == "invoices:read"

        key_set = jwt.PyJWKSet.from_dict((await http.get(metadata["jwks_uri"])).json())
        header = jwt.get_unverified_header(token["access_token"])
        assert header["typ"] == "at+jwt"
        claims = jwt.decode(
            token["access_token"],
            key=key_set[header["kid"]],
            algorithms=["EdDSA"],
            audience="billing-api",
            issuer=metadata["issuer"],
        )
        assert claims["client_id"] == service.client_id

        introspected = await client.introspect_token(
            metadata["introspection_endpoint"], token=token["access_token"]
        )
        assert introspected.json()["active"] is True
        revoked = await client.revoke_token(
            metadata["revocation_endpoint"],
            token=token["access_token"],
            token_type_hint="access_token",
        )
        assert revoked.status_code == 200
        gone = await client.introspect_token(
            metadata["introspection_endpoint"], token=token["access_token"]
        )
        assert gone.json() == {"active": False}
