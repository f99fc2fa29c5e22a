"""Gateway fixtures: a real authsvc and a real uvicorn, both on port 0, wired as in production."""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
import pytest_asyncio
from authsvc_gateway.backend import GrpcBackend
from authsvc_gateway.config import GATEWAY_SCOPES, GatewayConfig
from authsvc_gateway.in_process import InProcessBackend
from authsvc_gateway.server import RunningGateway, listening_socket, start_gateway

from authsvc.testing import RunningAuthority, start_authority

REDIRECT_URI = "http://127.0.0.1:9999/callback"
USERNAME = "alice"
PASSWORD = "correct horse battery staple"


@dataclass
class Deployment:
    """authsvc and the gateway in front of it, plus a user and a browser app registered."""

    authority: RunningAuthority
    gateway: RunningGateway
    config: GatewayConfig
    subject: str

    @property
    def url(self) -> str:
        return self.gateway.url

    def endpoint(self, path: str) -> str:
        return self.gateway.url + path


@asynccontextmanager
async def _grpc_backend(settings: GatewayConfig, authority: RunningAuthority) -> AsyncIterator[Any]:
    async with GrpcBackend.connect(settings) as backend:
        yield backend


@asynccontextmanager
async def _in_process_backend(
    settings: GatewayConfig, authority: RunningAuthority
) -> AsyncIterator[Any]:
    yield InProcessBackend(authority.authority)


BACKENDS = {"grpc": _grpc_backend, "in_process": _in_process_backend}


@asynccontextmanager
async def deploy(
    tmp_path: Any,
    backend: str = "grpc",
    *,
    authsvc: dict[str, Any] | None = None,
    public_path: str = "",
    **config: Any,
) -> AsyncIterator[Deployment]:
    """Start authsvc with the gateway's URL as issuer, register the gateway's own client, start
    the gateway on a socket bound beforehand (so its URL is known before anything starts).

    `backend` is how the gateway reaches authsvc: "grpc" as a standalone gateway does, or
    "in_process" as the gateway embedded in `authsvc serve` does. `authsvc` overrides authsvc's
    settings (the login limits are among them); `config` the gateway's. `public_path` is a prefix
    under which a reverse proxy serves the gateway, as its public URL says (`PrefixProxy`)."""
    sock: socket.socket = listening_socket("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with start_authority(tmp_path, issuer=url, **(authsvc or {})) as authority:
            own = await authority.create_client(
                "gateway",
                grant_types=["client_credentials"],
                scopes=GATEWAY_SCOPES,
                audiences=[authority.settings.audience],
            )
            settings = GatewayConfig(
                client_id=own.client_id,
                client_secret=own.client_secret,
                issuer=url,
                upstream=authority.address,
                port=sock.getsockname()[1],
                public_url=url + public_path,
            )
            settings = replace(settings, **config)
            subject = await authority.create_user(USERNAME, PASSWORD)
            async with (
                BACKENDS[backend](settings, authority) as reach,
                start_gateway(settings, reach, sock) as gateway,
            ):
                yield Deployment(authority, gateway, settings, subject)
    finally:
        sock.close()


@pytest.fixture
async def deployment(tmp_path: Any) -> AsyncIterator[Deployment]:
    async with deploy(tmp_path) as deployment:
        yield deployment


@pytest.fixture
async def http(deployment: Deployment) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client: keeps cookies, does not follow redirects (tests read them)."""
    async with httpx.AsyncClient(base_url=deployment.url, follow_redirects=False) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared_deployment(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    """One deployment for a whole module whose tests neither move clocks nor share state
    (each registers its own clients). Such a module marks itself
    `pytest.mark.asyncio(loop_scope="module")` and aliases `deployment` and `http` to these."""
    async with deploy(tmp_path_factory.mktemp("authsvc")) as deployment:
        yield deployment


@pytest_asyncio.fixture(loop_scope="module")
async def shared_http(shared_deployment: Deployment) -> AsyncIterator[httpx.AsyncClient]:
    """A fresh browser (empty cookie jar) on the shared deployment."""
    async with httpx.AsyncClient(base_url=shared_deployment.url, follow_redirects=False) as client:
        yield client


def pkce_pair() -> tuple[str, str]:
    """A fresh code verifier and its S256 challenge (RFC 7636 §4.1, §4.2)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def register_app(
    deployment: Deployment,
    *,
    public: bool = True,
    first_party: bool = True,
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token"),
    redirect_uris: tuple[str, ...] = (REDIRECT_URI, "com.example.app:/oauth2redirect"),
) -> tuple[str, str]:
    """A browser or server app using the code flow: (client_id, client_secret or "")."""
    client = await deployment.authority.create_client(
        "Photo Printer" if not first_party else "Our App",
        grant_types=grant_types,
        scopes=["profile", "photos:read"],
        audiences=["photos-api"],
        redirect_uris=redirect_uris,
        public=public,
        first_party=first_party,
    )
    return client.client_id, client.client_secret


class PrefixProxy(httpx.AsyncBaseTransport):
    """A reverse proxy serving the gateway under `prefix` and stripping it, as nginx does with
    `location /auth/ { proxy_pass http://gateway/; }`; anything else is not found."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix.encode()
        self._upstream = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path
        if not path.startswith(self._prefix + b"/"):
            return httpx.Response(404, request=request)
        forwarded = httpx.Request(
            request.method,
            request.url.copy_with(raw_path=path[len(self._prefix) :]),
            headers=request.headers,
            stream=request.stream,
        )
        return await self._upstream.handle_async_request(forwarded)

    async def aclose(self) -> None:
        await self._upstream.aclose()


def authorize_url(
    deployment: Deployment, client_id: str, challenge: str, **params: str | None
) -> str:
    """An authorization request URL with sensible defaults; `params` override, add or, given
    None, leave out."""
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "af0ifjsldkj",
        **params,
    }
    sent = {name: value for name, value in query.items() if value is not None}
    return str(httpx.URL(deployment.url + "/oauth/authorize", params=sent))


def redirect_params(response: httpx.Response) -> dict[str, str]:
    """The query parameters of a redirect back to the client."""
    assert response.status_code in {302, 303}, (response.status_code, response.text[:300])
    location = httpx.URL(response.headers["location"])
    return dict(location.params)
