"""POST /oauth/token, /oauth/revoke and /oauth/introspect against real servers."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote_plus

import httpx
import pytest
from authsvc_gateway import paths
from authsvc_gateway.client_auth import BASIC_CHALLENGE

from tests.gateway.conftest import Deployment, deploy, register_app

# Tests here register their own clients and move no clock, so they share one deployment.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture
def deployment(shared_deployment: Deployment) -> Deployment:
    return shared_deployment


@pytest.fixture
def http(shared_http: httpx.AsyncClient) -> httpx.AsyncClient:
    return shared_http


async def _service(deployment: Deployment, **fields) -> tuple[str, str]:
    client = await deployment.authority.create_client(
        "reporting",
        grant_types=fields.pop("grant_types", ["client_credentials"]),
        scopes=fields.pop("scopes", ["reports:read", "reports:write"]),
        audiences=fields.pop("audiences", ["reports-api"]),
        **fields,
    )
    return client.client_id, client.client_secret


def _basic(client_id: str, secret: str) -> dict[str, str]:
    # RFC 6749 §2.3.1: each part form-urlencoded, then joined and base64-encoded.
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"authorization": "Basic " + base64.b64encode(raw).decode()}


async def test_client_credentials_with_basic_auth(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    client_id, secret = await _service(deployment)
    reply = await http.post(
        paths.TOKEN,
        data={"grant_type": "client_credentials", "scope": "reports:read"},
        headers=_basic(client_id, secret),
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "reports:read"
    assert "refresh_token" not in body
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["pragma"] == "no-cache"


async def test_client_credentials_with_post_auth_and_resource(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    client_id, secret = await _service(deployment, audiences=["reports-api", "other-api"])
    reply = await http.post(
        paths.TOKEN,
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
            "resource": "reports-api",
        },
    )
    assert reply.status_code == 200, reply.text
    claims = await deployment.authority.authority.introspect(reply.json()["access_token"])
    assert claims.active


@pytest.mark.parametrize(
    "how",
    [pytest.param("basic", id="basic"), pytest.param("post", id="post")],
)
async def test_a_wrong_secret_is_invalid_client(
    deployment: Deployment, http: httpx.AsyncClient, how: str
) -> None:
    client_id, secret = await _service(deployment)
    wrong = secret[:-2] + ("AA" if not secret.endswith("AA") else "BB")
    if how == "basic":
        reply = await http.post(
            paths.TOKEN, data={"grant_type": "client_credentials"}, headers=_basic(client_id, wrong)
        )
        assert reply.headers["www-authenticate"] == BASIC_CHALLENGE
    else:
        reply = await http.post(
            paths.TOKEN,
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": wrong,
            },
        )
        assert "www-authenticate" not in reply.headers
    # A 401 carries a challenge (RFC 9110 §15.5.2); without one, RFC 6749 §5.2's 400.
    assert reply.status_code == (401 if how == "basic" else 400)
    assert reply.json()["error"] == "invalid_client"
    assert reply.headers["cache-control"] == "no-store"


async def test_no_client_authentication_is_invalid_client_with_a_challenge(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    reply = await http.post(paths.TOKEN, data={"grant_type": "client_credentials"})
    assert reply.status_code == 401
    assert reply.json()["error"] == "invalid_client"
    assert reply.headers["www-authenticate"] == BASIC_CHALLENGE


@pytest.mark.parametrize(
    "grant",
    [
        pytest.param(
            {"grant_type": "password", "username": "alice", "password": "x"}, id="password"
        ),
        pytest.param({"grant_type": "implicit"}, id="implicit"),
        pytest.param({"grant_type": "token"}, id="token"),
        pytest.param(
            {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": "x"},
            id="device-code",
        ),
    ],
)
async def test_password_and_implicit_grants_do_not_exist(
    deployment: Deployment, http: httpx.AsyncClient, grant: dict[str, str]
) -> None:
    client_id, secret = await _service(deployment)
    reply = await http.post(paths.TOKEN, data=grant, headers=_basic(client_id, secret))
    assert reply.status_code == 400
    assert reply.json()["error"] == "unsupported_grant_type"


async def test_a_public_client_may_not_use_client_credentials(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    client_id, _ = await register_app(deployment, public=True)
    reply = await http.post(
        paths.TOKEN, data={"grant_type": "client_credentials", "client_id": client_id}
    )
    assert reply.status_code == 400
    assert reply.json()["error"] == "unauthorized_client"


async def test_a_client_is_held_to_its_registered_grants(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    client_id, secret = await _service(deployment)
    reply = await http.post(
        paths.TOKEN,
        data={"grant_type": "refresh_token", "refresh_token": "asrt_" + "A" * 43},
        headers=_basic(client_id, secret),
    )
    assert reply.json()["error"] == "unauthorized_client"


async def test_a_scope_the_client_lacks_is_invalid_scope(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    client_id, secret = await _service(deployment)
    reply = await http.post(
        paths.TOKEN,
        data={"grant_type": "client_credentials", "scope": "authsvc:admin"},
        headers=_basic(client_id, secret),
    )
    assert reply.status_code == 400
    assert reply.json()["error"] == "invalid_scope"


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        pytest.param(
            json.dumps({"grant_type": "client_credentials"}),
            {"content-type": "application/json"},
            id="json-body",
        ),
        pytest.param(
            "grant_type=client_credentials&grant_type=client_credentials",
            {"content-type": "application/x-www-form-urlencoded"},
            id="repeated-grant-type",
        ),
        pytest.param(
            "grant_type=client_credentials&scope=a&scope=b",
            {"content-type": "application/x-www-form-urlencoded"},
            id="repeated-scope",
        ),
        pytest.param(
            "grant_type=client_credentials&" + "x" * 20_000 + "=1",
            {"content-type": "application/x-www-form-urlencoded"},
            id="oversized",
        ),
        pytest.param(
            b"grant_type=client_credentials&scope=%ff",
            {"content-type": "application/x-www-form-urlencoded"},
            id="not-utf8",
        ),
        pytest.param(
            "grant_type=client_credentials",
            {"content-type": "application/x-www-form-urlencoded; charset=latin-1"},
            id="other-charset",
        ),
        pytest.param("grant_type=client_credentials", {}, id="no-content-type"),
        pytest.param(
            "--b\r\nContent-Disposition: form-data; name=grant_type\r\n\r\nclient_credentials\r\n",
            {"content-type": "multipart/form-data; boundary=b"},
            id="multipart",
        ),
    ],
)
async def test_malformed_bodies_are_invalid_request(
    deployment: Deployment,
    http: httpx.AsyncClient,
    content: str | bytes,
    headers: dict[str, str],
) -> None:
    client_id, secret = await _service(deployment)
    for path in (paths.TOKEN, paths.REVOKE, paths.INTROSPECT):
        reply = await http.post(
            path, content=content, headers={**headers, **_basic(client_id, secret)}
        )
        assert reply.status_code == 400, (path, reply.text)
        assert reply.json()["error"] == "invalid_request"


async def test_both_client_authentication_methods_at_once_are_refused(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    client_id, secret = await _service(deployment)
    reply = await http.post(
        paths.TOKEN,
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        headers=_basic(client_id, secret),
    )
    assert reply.json()["error"] == "invalid_request"


async def test_refresh_rotates_and_a_replay_kills_the_family(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    web_id, web_secret = await register_app(deployment, public=False)
    pair = await deployment.authority.authority.issue_token_pair(
        subject=deployment.subject, client_id=web_id, scope=["profile", "photos:read"]
    )
    headers = _basic(web_id, web_secret)
    narrowed = await http.post(
        paths.TOKEN,
        data={
            "grant_type": "refresh_token",
            "refresh_token": pair.refresh_token,
            "scope": "profile",
        },
        headers=headers,
    )
    assert narrowed.status_code == 200, narrowed.text
    assert narrowed.json()["scope"] == "profile"
    replay = await http.post(
        paths.TOKEN,
        data={"grant_type": "refresh_token", "refresh_token": pair.refresh_token},
        headers=headers,
    )
    assert replay.json()["error"] == "invalid_grant"
    child = await http.post(
        paths.TOKEN,
        data={"grant_type": "refresh_token", "refresh_token": narrowed.json()["refresh_token"]},
        headers=headers,
    )
    assert child.json()["error"] == "invalid_grant"


async def test_a_refresh_token_only_works_for_its_own_client(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    owner_id, _ = await register_app(deployment, public=False)
    thief_id, thief_secret = await register_app(deployment, public=False)
    pair = await deployment.authority.authority.issue_token_pair(
        subject=deployment.subject, client_id=owner_id
    )
    stolen = await http.post(
        paths.TOKEN,
        data={"grant_type": "refresh_token", "refresh_token": pair.refresh_token},
        headers=_basic(thief_id, thief_secret),
    )
    assert stolen.json()["error"] == "invalid_grant"


async def test_revoking_an_unknown_token_answers_200(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    client_id, secret = await _service(deployment)
    for token in ("nonsense", "asrt_" + "A" * 43, "a.b.c"):
        reply = await http.post(
            paths.REVOKE, data={"token": token}, headers=_basic(client_id, secret)
        )
        assert reply.status_code == 200
        assert reply.content == b""


async def test_revoking_a_refresh_token_revokes_its_family(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    web_id, web_secret = await register_app(deployment, public=False)
    pair = await deployment.authority.authority.issue_token_pair(
        subject=deployment.subject, client_id=web_id
    )
    reply = await http.post(
        paths.REVOKE,
        data={"token": pair.refresh_token, "token_type_hint": "refresh_token"},
        headers=_basic(web_id, web_secret),
    )
    assert reply.status_code == 200
    assert not (await deployment.authority.authority.introspect(pair.access.token)).active


async def test_a_client_cannot_revoke_another_clients_token(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    owner_id, _ = await register_app(deployment, public=False)
    other_id, other_secret = await _service(deployment)
    pair = await deployment.authority.authority.issue_token_pair(
        subject=deployment.subject, client_id=owner_id
    )
    reply = await http.post(
        paths.REVOKE, data={"token": pair.refresh_token}, headers=_basic(other_id, other_secret)
    )
    assert reply.status_code == 200  # RFC 7009: says nothing either way
    assert (await deployment.authority.authority.introspect(pair.access.token)).active


async def test_revoke_needs_client_authentication(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    reply = await http.post(paths.REVOKE, data={"token": "whatever"})
    assert reply.status_code == 401
    assert reply.json()["error"] == "invalid_client"


async def test_introspection_of_a_client_credentials_token(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    client_id, secret = await _service(deployment)
    token = (
        await http.post(
            paths.TOKEN,
            data={"grant_type": "client_credentials", "scope": "reports:read"},
            headers=_basic(client_id, secret),
        )
    ).json()["access_token"]
    reply = await http.post(
        paths.INTROSPECT, data={"token": token}, headers=_basic(client_id, secret)
    )
    assert reply.status_code == 200
    body = reply.json()
    assert body["active"] is True
    assert body["scope"] == "reports:read"
    assert body["client_id"] == client_id
    assert body["iss"] == deployment.config.issuer
    assert body["aud"] == ["reports-api"]
    assert body["exp"] > body["iat"]
    assert reply.headers["cache-control"] == "no-store"


async def test_introspection_hides_other_clients_tokens_unless_permitted(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    issuer_id, issuer_secret = await _service(deployment)
    nosy_id, nosy_secret = await _service(deployment)
    rs_id, rs_secret = await _service(deployment, scopes=["authsvc:introspect"])
    token = (
        await http.post(
            paths.TOKEN,
            data={"grant_type": "client_credentials"},
            headers=_basic(issuer_id, issuer_secret),
        )
    ).json()["access_token"]
    nosy = await http.post(
        paths.INTROSPECT, data={"token": token}, headers=_basic(nosy_id, nosy_secret)
    )
    assert nosy.json() == {"active": False}
    allowed = await http.post(
        paths.INTROSPECT, data={"token": token}, headers=_basic(rs_id, rs_secret)
    )
    assert allowed.json()["active"] is True


@pytest.mark.parametrize(
    "auth",
    [pytest.param("none", id="anonymous"), pytest.param("public", id="public-client")],
)
async def test_introspection_refuses_unauthenticated_callers(
    deployment: Deployment, http: httpx.AsyncClient, auth: str
) -> None:
    data = {"token": "anything"}
    if auth == "public":
        data["client_id"], _ = await register_app(deployment, public=True)
    reply = await http.post(paths.INTROSPECT, data=data)
    assert reply.status_code == (401 if auth == "none" else 400)  # a challenge only for none
    assert reply.json()["error"] == "invalid_client"
    assert ("www-authenticate" in reply.headers) is (reply.status_code == 401)


@pytest.mark.parametrize("path", [paths.INTROSPECT, paths.REVOKE])
async def test_the_client_is_authenticated_before_the_token_is_asked_for(
    deployment: Deployment, http: httpx.AsyncClient, path: str
) -> None:
    """RFC 7009 §2.1, RFC 7662 §2.1: a caller without credentials learns nothing about its
    request, not even that it lacks a token; an authenticated one is told what is missing."""
    anonymous = await http.post(path, data={"token_type_hint": "access_token"})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "invalid_client"
    wrong = await http.post(
        path, data={"token_type_hint": "access_token"}, headers=_basic("nobody", "secret")
    )
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client")
    client_id, secret = await _service(deployment)
    authenticated = await http.post(
        path, data={"token_type_hint": "access_token"}, headers=_basic(client_id, secret)
    )
    assert authenticated.status_code == 400
    assert authenticated.json()["error"] == "invalid_request"
    assert "token" in authenticated.json()["error_description"]


async def test_introspection_of_garbage_is_inactive(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    client_id, secret = await _service(deployment)
    for token in ("garbage", "asrt_" + "A" * 43, "eyJhbGciOiJub25lIn0.e30."):
        reply = await http.post(
            paths.INTROSPECT, data={"token": token}, headers=_basic(client_id, secret)
        )
        assert reply.json() == {"active": False}


async def test_basic_credentials_are_form_urlencoded(tmp_path) -> None:
    """RFC 6749 §2.3.1: a secret with ':' or '%' must be sent encoded; the gateway decodes it."""
    async with deploy(tmp_path) as deployment, httpx.AsyncClient(base_url=deployment.url) as http:
        client_id, secret = await _service(deployment)
        encoded = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        plain = await http.post(
            paths.TOKEN,
            data={"grant_type": "client_credentials"},
            headers={"authorization": f"Basic {encoded}"},
        )
        # authsvc secrets are base64url, so encoding changes nothing and both spellings work.
        assert plain.status_code == 200
        assert (
            await http.post(
                paths.TOKEN,
                data={"grant_type": "client_credentials"},
                headers=_basic(client_id, secret),
            )
        ).status_code == 200


@pytest.mark.parametrize("path", [paths.TOKEN, paths.REVOKE, paths.INTROSPECT])
async def test_a_get_on_a_post_endpoint_explains_itself(
    deployment: Deployment, http: httpx.AsyncClient, path: str
) -> None:
    reply = await http.get(path, params={"grant_type": "client_credentials"})
    assert reply.status_code == 405
    assert reply.headers["allow"] == "POST"
    assert reply.json()["error"] == "invalid_request"


@pytest.mark.parametrize("path", [paths.TOKEN, paths.REVOKE, paths.INTROSPECT])
async def test_a_trailing_slash_is_not_redirected(
    deployment: Deployment, http: httpx.AsyncClient, path: str
) -> None:
    # A redirect would have the client send its secret again, to a URL built from the request
    # as the gateway saw it: behind a proxy that ends TLS, an http:// one.
    client_id, secret = await _service(deployment)
    reply = await http.post(
        f"{path}/", data={"grant_type": "client_credentials"}, headers=_basic(client_id, secret)
    )
    assert reply.status_code == 404
    assert "location" not in reply.headers


@pytest.mark.parametrize("backend", ["grpc", "in_process"])
async def test_a_token_longer_than_any_is_unknown_not_a_malformed_request(
    tmp_path: Any, backend: str
) -> None:
    # authsvc's gRPC API refuses fields over 8 KiB as malformed; over HTTP such a token is
    # simply unknown, and the answer must not depend on how the gateway reaches authsvc.
    oversized = "A" * 9000
    async with deploy(tmp_path, backend) as deployment:
        client_id, secret = await _service(deployment, grant_types=["refresh_token"])
        auth = _basic(client_id, secret)
        async with httpx.AsyncClient(base_url=deployment.url) as http:
            introspected = await http.post(
                paths.INTROSPECT, data={"token": oversized}, headers=auth
            )
            revoked = await http.post(paths.REVOKE, data={"token": oversized}, headers=auth)
            refreshed = await http.post(
                paths.TOKEN,
                data={"grant_type": "refresh_token", "refresh_token": oversized},
                headers=auth,
            )
    assert (introspected.status_code, introspected.json()) == (200, {"active": False})
    assert revoked.status_code == 200  # RFC 7009 §2.2
    assert (refreshed.status_code, refreshed.json()["error"]) == (400, "invalid_grant")


async def test_a_public_client_asking_for_client_credentials_is_unauthorized_either_way(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    # RFC 6749 §4.4, §5.2: the same answer whether it names itself in the body or in Basic.
    client_id, _ = await register_app(deployment)
    in_body = await http.post(
        paths.TOKEN, data={"grant_type": "client_credentials", "client_id": client_id}
    )
    in_basic = await http.post(
        paths.TOKEN, data={"grant_type": "client_credentials"}, headers=_basic(client_id, "")
    )
    for reply in (in_body, in_basic):
        assert (reply.status_code, reply.json()["error"]) == (400, "unauthorized_client")


@pytest.mark.parametrize("path", [paths.TOKEN, paths.REVOKE, paths.INTROSPECT])
async def test_parameters_in_the_url_are_refused_not_ignored(
    deployment: Deployment, http: httpx.AsyncClient, path: str
) -> None:
    """RFC 6749 §2.3.1: credentials must not be in the request URI, where logs keep them. They
    were ignored: the request succeeded on its body alone and the client never learned."""
    client_id, secret = await _service(deployment)
    reply = await http.post(
        path,
        params={"client_id": client_id, "client_secret": secret},
        data={"grant_type": "client_credentials", "token": "x"},
        headers=_basic(client_id, secret),
    )
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"] == "invalid_request"
    assert reply.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("path", [paths.TOKEN, paths.REVOKE, paths.INTROSPECT])
@pytest.mark.parametrize("good_first", [True, False], ids=["good-first", "bad-first"])
async def test_two_authorization_headers_are_refused_whichever_comes_first(
    deployment: Deployment, http: httpx.AsyncClient, path: str, good_first: bool
) -> None:
    """The first one was read: good credentials then bad ones were a 200, the reverse a 401. A
    proxy in front that judges the last one would disagree with the gateway on who called."""
    client_id, secret = await _service(deployment)
    good = _basic(client_id, secret)["authorization"]
    bad = _basic(client_id, "wrong")["authorization"]
    pair = [good, bad] if good_first else [bad, good]
    reply = await http.post(
        path,
        content=b"grant_type=client_credentials&token=x",
        headers=[
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", pair[0]),
            ("authorization", pair[1]),
        ],
    )
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"] == "invalid_request"
    assert "send one authorization header" in reply.json()["error_description"]
