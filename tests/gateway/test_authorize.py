"""GET /oauth/authorize, the sign-in page and consent, against real servers."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_gateway import paths
from authsvc_gateway.csrf import CSRF_COOKIE, CSRF_FIELD, HOST_ONLY_CSRF_COOKIE
from authsvc_gateway.errors import TemporarilyUnavailable
from authsvc_gateway.in_process import InProcessBackend
from authsvc_gateway.pages import INVALID_CREDENTIALS, TOO_MANY_ATTEMPTS
from authsvc_gateway.server import listening_socket, start_gateway
from sqlalchemy import text

from tests.authsvc.calls import database_rows
from tests.gateway.browser import decide, read_form, sign_in
from tests.gateway.conftest import (
    BACKENDS,
    PASSWORD,
    REDIRECT_URI,
    USERNAME,
    Deployment,
    PrefixProxy,
    authorize_url,
    deploy,
    pkce_pair,
    redirect_params,
    register_app,
)

# Tests here register their own clients and move no clock, so they share one deployment.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture
def deployment(shared_deployment: Deployment) -> Deployment:
    return shared_deployment


@pytest.fixture
def http(shared_http: httpx.AsyncClient) -> httpx.AsyncClient:
    return shared_http


async def _token_request(http: httpx.AsyncClient, **form: str) -> httpx.Response:
    return await http.post(paths.TOKEN, data={"grant_type": "authorization_code", **form})


async def test_state_comes_back_unchanged(deployment: Deployment, http: httpx.AsyncClient) -> None:
    client_id, _ = await register_app(deployment)
    _, challenge = pkce_pair()
    state = "a b+c/d?e=f&g=h%20i~é<script>"
    url = authorize_url(deployment, client_id, challenge, state=state)
    answer = redirect_params(await sign_in(http, url, USERNAME, PASSWORD))
    assert answer["state"] == state
    assert answer["code"].startswith("asac_")
    assert answer["iss"] == deployment.config.issuer


async def test_a_native_app_may_listen_on_any_loopback_port(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    # RFC 8252 §7.3: registered as http://127.0.0.1:9999/callback, the app got port 53123 now.
    client_id, _ = await register_app(deployment)
    verifier, challenge = pkce_pair()
    ephemeral = REDIRECT_URI.replace("9999", "53123")
    url = authorize_url(deployment, client_id, challenge, redirect_uri=ephemeral)
    response = await sign_in(http, url, USERNAME, PASSWORD)
    assert response.headers["location"].startswith(ephemeral + "?")
    code = redirect_params(response)["code"]
    exchange = {"code": code, "code_verifier": verifier, "client_id": client_id}
    registered = await _token_request(http, **exchange, redirect_uri=REDIRECT_URI)
    assert registered.json()["error"] == "invalid_grant"  # not the URI of this request
    verifier, challenge = pkce_pair()
    url = authorize_url(deployment, client_id, challenge, redirect_uri=ephemeral)
    code = redirect_params(await sign_in(http, url, USERNAME, PASSWORD))["code"]
    exchange = {"code": code, "code_verifier": verifier, "client_id": client_id}
    tokens = await _token_request(http, **exchange, redirect_uri=ephemeral)
    assert tokens.status_code == 200, tokens.text


@pytest.mark.parametrize("first_party", [True, False], ids=["first-party", "with-consent"])
async def test_a_client_with_one_redirect_uri_may_leave_it_out(
    deployment: Deployment, http: httpx.AsyncClient, first_party: bool
) -> None:
    # OAuth 2.1 §4.1.1: optional where one is registered; §4.1.3: then optional at the token
    # endpoint too, and if sent, it is the one the response went to.
    only = "https://app.example/callback"
    client_id, _ = await register_app(deployment, first_party=first_party, redirect_uris=(only,))
    for presented in (None, REDIRECT_URI, only):
        verifier, challenge = pkce_pair()
        url = authorize_url(deployment, client_id, challenge, redirect_uri=None)
        response = await sign_in(http, url, USERNAME, PASSWORD)
        if not first_party:
            response = await decide(http, response, "allow")
        assert response.headers["location"].startswith(only + "?")
        exchange = {"code": redirect_params(response)["code"], "code_verifier": verifier}
        if presented is not None:
            exchange["redirect_uri"] = presented
        tokens = await _token_request(http, client_id=client_id, **exchange)
        if presented == REDIRECT_URI:
            assert tokens.json()["error"] == "invalid_grant", tokens.text
        else:
            assert tokens.status_code == 200, tokens.text


async def test_a_native_app_must_name_its_loopback_redirect_uri(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    # Its port changes per request (RFC 8252 §7.3): the registered one may be anyone's now.
    client_id, _ = await register_app(deployment, redirect_uris=(REDIRECT_URI,))
    _, challenge = pkce_pair()
    page = await http.get(authorize_url(deployment, client_id, challenge, redirect_uri=None))
    assert page.status_code == 400
    assert "location" not in page.headers


async def test_the_redirect_uri_keeps_its_own_query(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    with_query = "http://127.0.0.1:9999/cb?tenant=7"
    client = await deployment.authority.create_client(
        "app",
        grant_types=["authorization_code"],
        redirect_uris=[with_query],
        audiences=["api"],
        public=True,
        first_party=True,
    )
    _, challenge = pkce_pair()
    url = authorize_url(deployment, client.client_id, challenge, redirect_uri=with_query)
    redirected = await sign_in(http, url, USERNAME, PASSWORD)
    assert redirected.headers["location"].startswith(with_query + "&code=")


@pytest.mark.parametrize(
    ("params", "error"),
    [
        pytest.param({"code_challenge": ""}, "invalid_request", id="missing-challenge"),
        pytest.param({"code_challenge_method": "plain"}, "invalid_request", id="plain-challenge"),
        pytest.param({"code_challenge_method": ""}, "invalid_request", id="method-defaults-plain"),
        pytest.param({"code_challenge": "short"}, "invalid_request", id="malformed-challenge"),
        pytest.param({"response_type": "token"}, "unsupported_response_type", id="implicit"),
        pytest.param({"response_type": "code id_token"}, "unsupported_response_type", id="hybrid"),
        pytest.param({"response_type": ""}, "invalid_request", id="no-response-type"),
        pytest.param({"scope": "profile admin"}, "invalid_scope", id="scope-not-allowed"),
    ],
)
async def test_refusals_go_back_to_a_registered_redirect_uri(
    deployment: Deployment, http: httpx.AsyncClient, params: dict[str, str], error: str
) -> None:
    client_id, _ = await register_app(deployment)
    _, challenge = pkce_pair()
    refused = await http.get(authorize_url(deployment, client_id, challenge, **params))
    assert refused.headers["location"].startswith(REDIRECT_URI + "?")
    answer = redirect_params(refused)
    assert answer["error"] == error
    assert answer["state"] == "af0ifjsldkj"
    assert answer["iss"] == deployment.config.issuer
    assert "code" not in answer


async def _two_api_app(deployment: Deployment, *, first_party: bool) -> str:
    """A public code-flow client whose tokens may be for either of two APIs."""
    client = await deployment.authority.create_client(
        "Photo Printer",
        grant_types=["authorization_code", "refresh_token"],
        scopes=["profile"],
        audiences=["photos-api", "print-api"],
        redirect_uris=[REDIRECT_URI],
        public=True,
        first_party=first_party,
    )
    return client.client_id


def _audience(access_token: str) -> list[str]:
    claims = jwt.decode(access_token, options={"verify_signature": False})
    return sorted([claims["aud"]] if isinstance(claims["aud"], str) else claims["aud"])


@pytest.mark.parametrize(
    ("resource", "audience"),
    [
        pytest.param(["print-api"], ["print-api"], id="one"),
        pytest.param(["print-api", "photos-api"], ["photos-api", "print-api"], id="repeated"),
        pytest.param([], ["photos-api", "print-api"], id="none-the-clients-defaults"),
    ],
)
@pytest.mark.parametrize("first_party", [True, False], ids=["first-party", "with-consent"])
async def test_a_resource_indicator_restricts_the_audience_of_the_codes_tokens(
    deployment: Deployment,
    http: httpx.AsyncClient,
    first_party: bool,
    resource: list[str],
    audience: list[str],
) -> None:
    # RFC 8707 §2.1: the code is for the resources the authorization request indicated, and so
    # are the tokens issued from it, refreshed ones too.
    client_id = await _two_api_app(deployment, first_party=first_party)
    verifier, challenge = pkce_pair()
    url = authorize_url(deployment, client_id, challenge)
    url += "".join(f"&resource={target}" for target in resource)
    response = await sign_in(http, url, USERNAME, PASSWORD)
    if not first_party:
        response = await decide(http, response, "allow")
    code = redirect_params(response)["code"]
    exchange = {"code": code, "code_verifier": verifier, "redirect_uri": REDIRECT_URI}
    tokens = await _token_request(http, client_id=client_id, **exchange)
    assert tokens.status_code == 200, tokens.text
    assert _audience(tokens.json()["access_token"]) == audience
    refreshed = await http.post(
        paths.TOKEN,
        data={
            "grant_type": "refresh_token",
            "client_id": client_id,
            "refresh_token": tokens.json()["refresh_token"],
        },
    )
    assert _audience(refreshed.json()["access_token"]) == audience


@pytest.mark.parametrize(
    ("resource", "description"),
    [
        pytest.param(
            "payments-api", "resource payments-api is not allowed for this client", id="not-allowed"
        ),
        pytest.param(
            "print-api#x",
            "resource print-api#x carries a fragment, which RFC 8707 section 2 forbids",
            id="fragment",
        ),
    ],
)
async def test_a_resource_the_client_may_not_have_is_refused_with_invalid_target(
    deployment: Deployment, http: httpx.AsyncClient, resource: str, description: str
) -> None:
    # RFC 8707 §2: sent back to the client, as any error once its redirect URI is verified.
    client_id = await _two_api_app(deployment, first_party=True)
    _, challenge = pkce_pair()
    url = authorize_url(deployment, client_id, challenge)
    refused = await http.get(url + "&resource=print-api&" + urlencode({"resource": resource}))
    assert redirect_params(refused) == {
        "error": "invalid_target",
        "error_description": description,
        "state": "af0ifjsldkj",
        "iss": deployment.config.issuer,
    }


async def _code_for(
    deployment: Deployment, http: httpx.AsyncClient, client_id: str, resource: list[str]
) -> dict[str, str]:
    """The token request fields for a code the authorization request indicated `resource` for."""
    verifier, challenge = pkce_pair()
    url = authorize_url(deployment, client_id, challenge)
    url += "".join(f"&resource={target}" for target in resource)
    code = redirect_params(await sign_in(http, url, USERNAME, PASSWORD))["code"]
    return {
        "client_id": client_id,
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": REDIRECT_URI,
    }


async def test_a_token_request_may_narrow_the_codes_resources(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    # RFC 8707 §2.2: the access token is for the resources the token request names, among those
    # authorized; the grant keeps them all, so a refresh is for every one again.
    client_id = await _two_api_app(deployment, first_party=True)
    exchange = await _code_for(deployment, http, client_id, ["print-api", "photos-api"])
    tokens = await _token_request(http, **exchange, resource="print-api")
    assert tokens.status_code == 200, tokens.text
    assert _audience(tokens.json()["access_token"]) == ["print-api"]
    refreshed = await http.post(
        paths.TOKEN,
        data={
            "grant_type": "refresh_token",
            "client_id": client_id,
            "refresh_token": tokens.json()["refresh_token"],
        },
    )
    assert _audience(refreshed.json()["access_token"]) == ["photos-api", "print-api"]


async def test_a_token_request_for_a_resource_the_code_was_not_for_is_refused(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    client_id = await _two_api_app(deployment, first_party=True)
    exchange = await _code_for(deployment, http, client_id, ["print-api"])
    wider = {
        "grant_type": "authorization_code",
        **exchange,
        "resource": ["print-api", "photos-api"],
    }
    refused = await http.post(paths.TOKEN, data=wider)
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "invalid_target",
        "error_description": "resource not authorized by this grant: photos-api",
    }
    # Refused before the code was used: asked for properly, it still works.
    again = await _token_request(http, **exchange, resource="print-api")
    assert again.status_code == 200, again.text
    assert _audience(again.json()["access_token"]) == ["print-api"]


async def test_repeated_parameters_are_refused(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    client_id, _ = await register_app(deployment)
    _, challenge = pkce_pair()
    url = authorize_url(deployment, client_id, challenge) + "&scope=profile&scope=photos:read"
    assert redirect_params(await http.get(url))["error"] == "invalid_request"


@pytest.mark.parametrize(
    "redirect_uri",
    [
        pytest.param("https://evil.example/callback", id="foreign"),
        pytest.param(REDIRECT_URI + "/../evil", id="path-suffix"),
        pytest.param(REDIRECT_URI + "x", id="prefix-match"),
        pytest.param(REDIRECT_URI.replace("127.0.0.1", "localhost"), id="localhost-for-loopback"),
        pytest.param(REDIRECT_URI.replace("http:", "https:"), id="other-scheme"),
        pytest.param(REDIRECT_URI.replace("callback", "CALLBACK"), id="case"),
        pytest.param(REDIRECT_URI + "?next=https://evil.example", id="added-query"),
        pytest.param(REDIRECT_URI + "#frag", id="fragment"),
        pytest.param("", id="missing"),
    ],
)
async def test_a_redirect_uri_mismatch_shows_an_error_page_never_a_redirect(
    deployment: Deployment, http: httpx.AsyncClient, redirect_uri: str
) -> None:
    client_id, _ = await register_app(deployment)
    _, challenge = pkce_pair()
    # Even with every other parameter wrong too, nothing may be sent to an unverified URI.
    url = authorize_url(
        deployment, client_id, challenge, redirect_uri=redirect_uri, response_type="token"
    )
    page = await http.get(url)
    assert page.status_code == 400
    assert "location" not in page.headers
    assert page.headers["content-type"].startswith("text/html")
    assert "invalid_request" in page.text


async def test_a_repeated_redirect_uri_is_not_trusted(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    client_id, _ = await register_app(deployment)
    _, challenge = pkce_pair()
    url = authorize_url(deployment, client_id, challenge) + "&redirect_uri=https%3A%2F%2Fevil"
    page = await http.get(url)
    assert page.status_code == 400
    assert "location" not in page.headers


@pytest.mark.parametrize(
    "client_id",
    [pytest.param("no-such-client", id="unknown"), pytest.param("", id="missing")],
)
async def test_an_unknown_client_shows_an_error_page(
    deployment: Deployment, http: httpx.AsyncClient, client_id: str
) -> None:
    _, challenge = pkce_pair()
    page = await http.get(authorize_url(deployment, client_id, challenge))
    assert page.status_code == 400
    assert "location" not in page.headers


async def test_error_pages_escape_what_they_echo(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    client_id, _ = await register_app(deployment)
    _, challenge = pkce_pair()
    page = await http.get(
        authorize_url(deployment, client_id, challenge, redirect_uri="<script>alert(1)</script>")
    )
    assert "<script>" not in page.text
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


async def test_the_sign_in_page_carries_a_csrf_token_and_a_strict_cookie(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    client_id, _ = await register_app(deployment)
    _, challenge = pkce_pair()
    page = await http.get(authorize_url(deployment, client_id, challenge))
    assert page.status_code == 200
    assert read_form(page).fields[CSRF_FIELD]
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(CSRF_COOKIE + "=")
    assert "HttpOnly" in cookie
    # Lax: the user arrives from the client's site, a navigation that carries no Strict cookie,
    # and a new nonce at every arrival would break the forms open in other tabs.
    assert "SameSite=lax" in cookie
    assert page.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param("drop-cookie", id="no-cookie"),
        pytest.param("drop-token", id="no-token"),
        pytest.param("wrong-token", id="wrong-token"),
        pytest.param("other-cookie", id="cookie-from-another-browser"),
    ],
)
async def test_a_login_without_the_csrf_pair_is_refused(
    deployment: Deployment, http: httpx.AsyncClient, tamper: str
) -> None:
    client_id, _ = await register_app(deployment)
    _, challenge = pkce_pair()
    page = await http.get(authorize_url(deployment, client_id, challenge))
    form = read_form(page)
    fields = {**form.fields, "username": USERNAME, "password": PASSWORD}
    if tamper == "drop-cookie":
        http.cookies.clear()
    elif tamper == "drop-token":
        del fields[CSRF_FIELD]
    elif tamper == "wrong-token":
        fields[CSRF_FIELD] = "A" * 43
    else:
        http.cookies.clear()
        http.cookies.set(CSRF_COOKIE, "B" * 43, path="/oauth")
    refused = await http.post(form.action, data=fields)
    assert refused.status_code == 403
    assert "location" not in refused.headers
    # No password was checked: the attempt cannot feed a guessing attack.
    assert "code=" not in refused.text


async def test_over_https_the_csrf_cookie_is_one_only_this_host_can_set(tmp_path) -> None:
    async with (
        deploy(tmp_path, public_url="https://auth.example") as deployment,
        httpx.AsyncClient(base_url=deployment.url, follow_redirects=False) as http,
    ):
        client_id, _ = await register_app(deployment)
        _, challenge = pkce_pair()
        page = await http.get(authorize_url(deployment, client_id, challenge))
        cookie = page.headers["set-cookie"]
        assert cookie.startswith(HOST_ONLY_CSRF_COOKIE + "=")
        attributes = [a.strip().lower() for a in cookie.split(";")[1:]]
        assert {"secure", "path=/", "httponly", "samesite=lax"} <= set(attributes)
        assert not any(a.startswith("domain") for a in attributes)
        nonce = cookie.split(";")[0].split("=", 1)[1]
        fields = {**read_form(page).fields, "username": USERNAME, "password": PASSWORD}
        http.cookies.clear()  # the test sends each cookie by hand, over plain HTTP

        # The nonce under the plain name, as a sibling domain could plant it, is not read.
        planted = await http.post(
            paths.LOGIN, data=fields, headers={"cookie": f"{CSRF_COOKIE}={nonce}"}
        )
        assert planted.status_code == 403
        signed_in = await http.post(
            paths.LOGIN, data=fields, headers={"cookie": f"{HOST_ONLY_CSRF_COOKIE}={nonce}"}
        )
        assert signed_in.status_code in (200, 303), signed_in.text  # consent, or the code


@pytest.mark.parametrize(
    ("username", "password"),
    [
        pytest.param(USERNAME, "wrong password", id="wrong-password"),
        pytest.param("mallory", PASSWORD, id="unknown-user"),
        pytest.param(USERNAME, "", id="empty-password"),
    ],
)
async def test_failed_logins_say_only_invalid_credentials(
    deployment: Deployment, http: httpx.AsyncClient, username: str, password: str
) -> None:
    client_id, _ = await register_app(deployment)
    _, challenge = pkce_pair()
    page = await sign_in(http, authorize_url(deployment, client_id, challenge), username, password)
    assert page.status_code == 200
    assert INVALID_CREDENTIALS in page.text
    assert "location" not in page.headers
    # The page can be submitted again: it carries a fresh form.
    assert read_form(page).fields[CSRF_FIELD]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
async def test_failed_logins_are_rate_limited_per_account(tmp_path, backend: str) -> None:
    async with (
        deploy(tmp_path, backend) as deployment,
        httpx.AsyncClient(base_url=deployment.url) as http,
    ):
        client_id, _ = await register_app(deployment)
        _, challenge = pkce_pair()
        url = authorize_url(deployment, client_id, challenge)
        limit = deployment.authority.settings.login_max_failures_account
        for _ in range(limit):
            assert INVALID_CREDENTIALS in (await sign_in(http, url, USERNAME, "nope")).text
        blocked = await sign_in(http, url, USERNAME, PASSWORD)  # even the right password
        assert blocked.status_code == 429
        assert TOO_MANY_ATTEMPTS in blocked.text
        window = deployment.authority.settings.login_failure_window
        assert blocked.headers["retry-after"] == str(window)  # authsvc's clock has not moved
        assert "location" not in blocked.headers
        # Usernames match exactly: another spelling is another (here unknown) account.
        assert INVALID_CREDENTIALS in (await sign_in(http, url, USERNAME.upper(), PASSWORD)).text
        # An unknown account is answered the same way once over its limit.
        for _ in range(limit):
            await sign_in(http, url, "nobody", "nope")
        unknown = await sign_in(http, url, "nobody", "nope")
        assert (unknown.status_code, unknown.headers["retry-after"]) == (429, str(window))
        # authsvc's clock decides when the account may try again.
        deployment.authority.clock.advance(window - 10)
        assert (await sign_in(http, url, USERNAME, PASSWORD)).headers["retry-after"] == "10"
        deployment.authority.clock.advance(10)
        assert "code" in redirect_params(await sign_in(http, url, USERNAME, PASSWORD))


@pytest.mark.parametrize("backend", sorted(BACKENDS))
async def test_failed_logins_are_rate_limited_per_ip(tmp_path, backend: str) -> None:
    limits = {"login_max_failures_account": 100, "login_max_failures_ip": 3}
    async with (
        deploy(tmp_path, backend, authsvc=limits) as deployment,
        httpx.AsyncClient(base_url=deployment.url) as http,
    ):
        client_id, _ = await register_app(deployment)
        _, challenge = pkce_pair()
        url = authorize_url(deployment, client_id, challenge)
        for name in ("a", "b", "c"):
            assert INVALID_CREDENTIALS in (await sign_in(http, url, name, "nope")).text
        blocked = await sign_in(http, url, USERNAME, PASSWORD)
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) > 0
        # A forged X-Forwarded-For does not buy a fresh budget.
        forged = await http.get(url, headers={"x-forwarded-for": "203.0.113.9"})
        form = read_form(forged)
        again = await http.post(
            form.action,
            data={**form.fields, "username": USERNAME, "password": PASSWORD},
            headers={"x-forwarded-for": "203.0.113.9"},
        )
        assert again.status_code == 429


async def test_two_gateways_share_one_budget(tmp_path) -> None:
    """A standalone gateway and the embedded one in front of the same authsvc: the failures made
    through one count at the other (the limit is authsvc's, kept in its database)."""
    async with (
        deploy(tmp_path) as first,
        start_gateway(
            first.config,
            InProcessBackend(first.authority.authority),
            listening_socket("127.0.0.1", 0),
        ) as second,
        httpx.AsyncClient(base_url=first.url) as http_one,
        httpx.AsyncClient(base_url=second.url) as http_two,
    ):
        client_id, _ = await register_app(first)
        _, challenge = pkce_pair()
        limit = first.authority.settings.login_max_failures_account
        for attempt in range(limit):
            http, base = (http_one, first.url) if attempt % 2 else (http_two, second.url)
            url = authorize_url(first, client_id, challenge).replace(first.url, base)
            assert INVALID_CREDENTIALS in (await sign_in(http, url, USERNAME, "nope")).text
        for http, base in ((http_one, first.url), (http_two, second.url)):
            url = authorize_url(first, client_id, challenge).replace(first.url, base)
            assert (await sign_in(http, url, USERNAME, PASSWORD)).status_code == 429


async def test_first_party_clients_skip_consent(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    client_id, _ = await register_app(deployment, first_party=True)
    _, challenge = pkce_pair()
    answer = redirect_params(
        await sign_in(http, authorize_url(deployment, client_id, challenge), USERNAME, PASSWORD)
    )
    assert "code" in answer


async def test_first_party_clients_see_consent_when_configured(tmp_path) -> None:
    async with (
        deploy(tmp_path, first_party_skip_consent=False) as deployment,
        httpx.AsyncClient(base_url=deployment.url) as http,
    ):
        client_id, _ = await register_app(deployment, first_party=True)
        _, challenge = pkce_pair()
        url = authorize_url(deployment, client_id, challenge)
        consent = await sign_in(http, url, USERNAME, PASSWORD)
        assert consent.status_code == 200
        assert "Allow access?" in consent.text


async def test_third_party_clients_ask_for_consent_then_issue_a_code(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    client_id, secret = await register_app(deployment, public=False, first_party=False)
    verifier, challenge = pkce_pair()
    url = authorize_url(deployment, client_id, challenge, scope="photos:read")
    consent = await sign_in(http, url, USERNAME, PASSWORD)
    assert consent.status_code == 200
    assert "Photo Printer" in consent.text
    assert "photos:read" in consent.text
    assert consent.headers["x-frame-options"] == "DENY"
    answer = redirect_params(await decide(http, consent, "allow"))
    assert answer["state"] == "af0ifjsldkj"
    tokens = await _token_request(
        http,
        code=answer["code"],
        redirect_uri=REDIRECT_URI,
        code_verifier=verifier,
        client_id=client_id,
        client_secret=secret,
    )
    assert tokens.status_code == 200, tokens.text
    assert tokens.json()["scope"] == "photos:read"


async def _consent_page(
    deployment: Deployment, http: httpx.AsyncClient
) -> tuple[str, httpx.Response]:
    """A third-party client's id, and its consent page after the user signed in."""
    client_id, _ = await register_app(deployment, first_party=False)
    _, challenge = pkce_pair()
    url = authorize_url(deployment, client_id, challenge)
    return client_id, await sign_in(http, url, USERNAME, PASSWORD)


async def test_denied_consent_answers_access_denied(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    _, consent = await _consent_page(deployment, http)
    answer = redirect_params(await decide(http, consent, "deny"))
    assert answer == {
        "error": "access_denied",
        "error_description": "the user denied the request",
        "state": "af0ifjsldkj",
        "iss": deployment.config.issuer,
    }


async def test_a_client_disabled_during_consent_gets_no_redirect(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    # RFC 6749 §4.1.2.1: an invalid client is told to the user, never redirected to.
    client_id, consent = await _consent_page(deployment, http)
    await deployment.authority.authority.revoke_client(client_id, reason="abuse", disable=True)
    refused = await decide(http, consent, "allow")
    assert refused.status_code == 400  # a page, with no challenge to carry: never 401
    assert "www-authenticate" not in refused.headers
    assert "location" not in refused.headers
    assert "invalid_client" in refused.text


@pytest.mark.parametrize("revocation", ["subject", "client"])
@pytest.mark.parametrize("backend", sorted(BACKENDS))
async def test_a_consent_page_left_open_across_a_revocation_gets_no_code(
    tmp_path, backend: str, revocation: str
) -> None:
    # "Log out everywhere" (or the client's revocation) while the consent page is open: the
    # sign-in it carries is older than the revocation, so Allow must start no session. Its own
    # deployment: it revokes the user and moves the clock.
    async with (
        deploy(tmp_path, backend) as deployment,
        httpx.AsyncClient(base_url=deployment.url) as http,
    ):
        running = deployment.authority
        client_id, _ = await register_app(deployment, first_party=False)
        _, challenge = pkce_pair()
        url = authorize_url(deployment, client_id, challenge)
        consent = await sign_in(http, url, USERNAME, PASSWORD)
        assert "Allow access?" in consent.text
        running.clock.advance(5)
        if revocation == "subject":
            await running.authority.revoke_subject(deployment.subject, reason="log out")
        else:
            await running.authority.revoke_client(client_id, reason="compromised", disable=False)
        running.clock.advance(5)
        before = await database_rows(running)
        answer = redirect_params(await decide(http, consent, "allow"))
        assert answer == {
            "error": "access_denied",
            "error_description": f"{revocation} revoked since the sign-in; sign in again",
            "state": "af0ifjsldkj",
            "iss": deployment.config.issuer,
        }
        assert await database_rows(running) == before
        # Signing in again is how the user goes on.
        again = await sign_in(http, url, USERNAME, PASSWORD)
        assert "code" in redirect_params(await decide(http, again, "allow"))


async def test_a_consent_posted_again_replaces_the_code_until_it_is_used(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    # The ticket lives ten minutes; the request it carries (its PKCE challenge names it) has one
    # live code, whichever gateway replica a post reaches. A double click gets the browser a
    # working code (the last), and once a code is redeemed, posting again gets none.
    client_id, _ = await register_app(deployment, first_party=False)
    verifier, challenge = pkce_pair()
    consent = await sign_in(
        http, authorize_url(deployment, client_id, challenge), USERNAME, PASSWORD
    )
    first = redirect_params(await decide(http, consent, "allow"))["code"]
    second = redirect_params(await decide(http, consent, "allow"))["code"]
    assert first != second
    exchange = {"client_id": client_id, "code_verifier": verifier, "redirect_uri": REDIRECT_URI}
    replaced = await _token_request(http, code=first, **exchange)
    assert replaced.json()["error"] == "invalid_grant"
    tokens = await _token_request(http, code=second, **exchange)
    assert tokens.status_code == 200, tokens.text
    again = redirect_params(await decide(http, consent, "allow"))
    assert again == {
        "error": "invalid_request",
        "error_description": "this authorization request was answered already; start a new one",
        "state": "af0ifjsldkj",
        "iss": deployment.config.issuer,
    }


@pytest.mark.parametrize("backend", sorted(BACKENDS))
async def test_allow_after_deny_on_the_same_consent_page_gets_no_code(
    tmp_path, backend: str
) -> None:
    # The back button, a second tab or a replayed form: the user's Deny is the request's answer,
    # and the same consent page's Allow must not start a session after it.
    async with (
        deploy(tmp_path, backend) as deployment,
        httpx.AsyncClient(base_url=deployment.url) as http,
    ):
        _, consent = await _consent_page(deployment, http)
        denied = redirect_params(await decide(http, consent, "deny"))
        assert denied["error"] == "access_denied"
        before = await database_rows(deployment.authority)
        allowed = redirect_params(await decide(http, consent, "allow"))
        assert allowed == {
            "error": "invalid_request",
            "error_description": "this authorization request was answered already; start a new one",
            "state": "af0ifjsldkj",
            "iss": deployment.config.issuer,
        }
        assert await database_rows(deployment.authority) == before
        # Deny again is answered as before, and changes nothing.
        assert redirect_params(await decide(http, consent, "deny"))["error"] == "access_denied"
        assert await database_rows(deployment.authority) == before


async def test_deny_after_allow_on_the_same_consent_page_voids_the_code(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    # The last answer stands, as with Allow posted twice: Deny voids the unused code.
    client_id, _ = await register_app(deployment, first_party=False)
    verifier, challenge = pkce_pair()
    consent = await sign_in(
        http, authorize_url(deployment, client_id, challenge), USERNAME, PASSWORD
    )
    code = redirect_params(await decide(http, consent, "allow"))["code"]
    assert redirect_params(await decide(http, consent, "deny"))["error"] == "access_denied"
    exchange = {"client_id": client_id, "code_verifier": verifier, "redirect_uri": REDIRECT_URI}
    voided = await _token_request(http, code=code, **exchange)
    assert voided.json()["error"] == "invalid_grant"
    again = redirect_params(await decide(http, consent, "allow"))
    assert "code" not in again


class _DenialsUnrecorded(InProcessBackend):
    async def deny_authorization(
        self, request: pb.DenyAuthorizationRequest, /
    ) -> pb.DenyAuthorizationResponse:
        raise TemporarilyUnavailable("authsvc is unavailable; try again shortly")


async def test_a_deny_authsvc_could_not_record_is_not_sent_to_the_client(tmp_path) -> None:
    # Sent unrecorded, a Deny could be followed by a working Allow: the user is told to try again.
    async with (
        deploy(tmp_path) as deployment,
        start_gateway(
            deployment.config,
            _DenialsUnrecorded(deployment.authority.authority),
            listening_socket("127.0.0.1", 0),
        ) as gateway,
        httpx.AsyncClient(base_url=gateway.url) as http,
    ):
        client_id, _ = await register_app(deployment, first_party=False)
        _, challenge = pkce_pair()
        url = authorize_url(deployment, client_id, challenge).replace(deployment.url, gateway.url)
        consent = await sign_in(http, url, USERNAME, PASSWORD)
        refused = await decide(http, consent, "deny")
        assert refused.status_code == 503
        assert "location" not in refused.headers
        assert "temporarily_unavailable" in refused.text


async def _set_redirect_uris(deployment: Deployment, client_id: str, uris: list[str]) -> None:
    """Change a registration behind authsvc's back (it has no API for it yet)."""
    store = deployment.authority.authority.ctx.store
    async with store.engine.begin() as conn:
        await conn.execute(
            text("UPDATE clients SET redirect_uris = :uris WHERE client_id = :id"),
            {"uris": json.dumps(uris), "id": client_id},
        )


@pytest.mark.parametrize("decision", ["allow", "deny"])
async def test_a_consent_whose_redirect_uri_was_unregistered_meanwhile_redirects_nowhere(
    deployment: Deployment, http: httpx.AsyncClient, decision: str
) -> None:
    # RFC 6749 §4.1.2.1: the ticket's URI was registered when the page was shown; a response,
    # even a denial, goes only to a URI registered now.
    client_id, consent = await _consent_page(deployment, http)
    await _set_redirect_uris(deployment, client_id, ["https://app.example/new"])
    answer = await decide(http, consent, decision)
    assert answer.status_code == 400
    assert "location" not in answer.headers
    assert "settings changed" in answer.text


async def test_a_consent_ticket_copied_into_another_browser_is_refused(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    client_id, consent = await _consent_page(deployment, http)
    ticket = read_form(consent).fields["ticket"]
    _, challenge = pkce_pair()
    async with httpx.AsyncClient(base_url=deployment.url) as other_browser:
        # Its own sign-in form gives it a valid CSRF cookie and token of its own.
        page = await other_browser.get(authorize_url(deployment, client_id, challenge))
        form = read_form(page)
        copied = {CSRF_FIELD: form.fields[CSRF_FIELD], "ticket": ticket, "decision": "allow"}
        refused = await other_browser.post(deployment.url + paths.CONSENT, data=copied)
    assert refused.status_code == 400
    assert "location" not in refused.headers
    # The browser it was shown to still completes the authorization.
    assert "code" in redirect_params(await decide(http, consent, "allow"))


async def test_a_tampered_consent_ticket_is_refused(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    _, consent = await _consent_page(deployment, http)
    form = read_form(consent)
    body, _, signature = form.fields["ticket"].partition(".")
    forged = {**form.fields, "ticket": body[:-2] + "AA." + signature, "decision": "allow"}
    refused = await http.post(form.action, data=forged)
    assert refused.status_code == 400
    assert "location" not in refused.headers


@pytest.mark.parametrize(
    ("change", "error"),
    [
        pytest.param({"code_verifier": "wrong" * 10}, "invalid_grant", id="wrong-verifier"),
        pytest.param({"code_verifier": ""}, "invalid_request", id="missing-verifier"),
        pytest.param(
            {"redirect_uri": "com.example.app:/oauth2redirect"}, "invalid_grant", id="other-uri"
        ),
        pytest.param({"code": "asac_" + "A" * 43}, "invalid_grant", id="unknown-code"),
        # RFC 6749 §4.1.3: required, since the authorization request had one.
        pytest.param({"redirect_uri": None}, "invalid_grant", id="redirect-uri-left-out"),
    ],
)
async def test_the_code_exchange_refuses(
    deployment: Deployment, http: httpx.AsyncClient, change: dict[str, str | None], error: str
) -> None:
    client_id, _ = await register_app(deployment)
    verifier, challenge = pkce_pair()
    answer = redirect_params(
        await sign_in(http, authorize_url(deployment, client_id, challenge), USERNAME, PASSWORD)
    )
    form = {
        "client_id": client_id,
        "code": answer["code"],
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
        **change,
    }
    refused = await _token_request(http, **{k: v for k, v in form.items() if v is not None})
    assert refused.status_code == 400
    assert refused.json()["error"] == error
    assert refused.headers["cache-control"] == "no-store"


async def test_a_code_used_twice_fails_and_revokes_what_it_issued(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    client_id, _ = await register_app(deployment)
    verifier, challenge = pkce_pair()
    answer = redirect_params(
        await sign_in(http, authorize_url(deployment, client_id, challenge), USERNAME, PASSWORD)
    )
    form = {
        "client_id": client_id,
        "code": answer["code"],
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    first = await _token_request(http, **form)
    assert first.status_code == 200
    second = await _token_request(http, **form)
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    refresh = await http.post(
        paths.TOKEN,
        data={
            "grant_type": "refresh_token",
            "client_id": client_id,
            "refresh_token": first.json()["refresh_token"],
        },
    )
    assert refresh.json()["error"] == "invalid_grant"
    verified = await deployment.authority.authority.introspect(first.json()["access_token"])
    assert not verified.active


async def test_a_code_expires_after_sixty_seconds(tmp_path) -> None:
    async with (
        deploy(tmp_path) as deployment,
        httpx.AsyncClient(base_url=deployment.url) as http,
    ):
        await _expired_code_is_refused(deployment, http)


async def _expired_code_is_refused(deployment: Deployment, http: httpx.AsyncClient) -> None:
    client_id, _ = await register_app(deployment)
    verifier, challenge = pkce_pair()
    answer = redirect_params(
        await sign_in(http, authorize_url(deployment, client_id, challenge), USERNAME, PASSWORD)
    )
    deployment.authority.clock.advance(61)
    refused = await _token_request(
        http,
        client_id=client_id,
        code=answer["code"],
        redirect_uri=REDIRECT_URI,
        code_verifier=verifier,
    )
    assert refused.json()["error"] == "invalid_grant"


async def test_a_gateway_behind_a_path_prefix_completes_the_flow(tmp_path) -> None:
    # Its public URL is http://host/auth, where a proxy strips /auth: the forms must post, and
    # the plain-HTTP CSRF cookie be scoped, under /auth as the browser sees it.
    async with (
        deploy(tmp_path, public_path="/auth") as deployment,
        httpx.AsyncClient(
            base_url=deployment.url + "/auth", transport=PrefixProxy("/auth")
        ) as browser,
    ):
        client_id, _ = await register_app(deployment, first_party=False)
        verifier, challenge = pkce_pair()
        url = authorize_url(deployment, client_id, challenge)
        login = await browser.get(url.replace(deployment.url, deployment.url + "/auth", 1))
        assert httpx.URL(read_form(login).action).path == "/auth/oauth/login"
        assert "Path=/auth/oauth" in login.headers["set-cookie"]
        form = read_form(login)
        consent = await browser.post(
            form.action, data={**form.fields, "username": USERNAME, "password": PASSWORD}
        )
        assert httpx.URL(read_form(consent).action).path == "/auth/oauth/consent"
        code = redirect_params(await decide(browser, consent, "allow"))["code"]
        exchange = {"code": code, "code_verifier": verifier, "redirect_uri": REDIRECT_URI}
        tokens = await browser.post(
            paths.TOKEN,
            data={"grant_type": "authorization_code", "client_id": client_id, **exchange},
        )
        assert tokens.status_code == 200, tokens.text
        metadata = (await browser.get(paths.METADATA)).json()
        assert metadata["token_endpoint"] == deployment.url + "/auth" + paths.TOKEN


async def test_codes_are_bound_to_their_client(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    client_id, _ = await register_app(deployment)
    other_id, _ = await register_app(deployment)
    verifier, challenge = pkce_pair()
    answer = redirect_params(
        await sign_in(http, authorize_url(deployment, client_id, challenge), USERNAME, PASSWORD)
    )
    stolen = await _token_request(
        http,
        client_id=other_id,
        code=answer["code"],
        redirect_uri=REDIRECT_URI,
        code_verifier=verifier,
    )
    assert stolen.json()["error"] == "invalid_grant"
