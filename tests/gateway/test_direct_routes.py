"""DirectRoutes answers byte for byte as the Starlette app it stands in front of.

Each request goes to the gateway app (DirectRoutes) and to its Starlette app alone; the ASGI
messages sent back, and the exception raised to the server if any, must be the same. A spy on
the Starlette app shows which requests took the direct path.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from authsvc_gateway import create_app, paths
from authsvc_gateway.config import GatewayConfig
from authsvc_gateway.errors import InvalidGrant, InvalidScope, TemporarilyUnavailable
from authsvc_gateway.forms import MAX_BODY_BYTES
from authsvc_gateway.server import listening_socket, start_gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.gateway.fakes import FakeBackend
from tests.gateway.test_no_server_errors import AUTHORIZATION, CONTENT_TYPES, FORMS

FORM = "application/x-www-form-urlencoded"
ORIGIN = "https://app.example"
CALLBACK = "https://app.example/cb"
#: The detail of an unexpected failure: it goes to the logs, never to the caller.
DETAIL = "the database is on fire"


def _basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


SVC = _basic("svc:svc-secret")


def _backend(failure: Exception | None = None) -> FakeBackend:
    backend = FakeBackend()
    backend.add_client(
        "app",
        grant_types=["authorization_code", "refresh_token"],
        redirect_uris=[CALLBACK],
        scopes=["read"],
    )
    backend.add_client(
        "svc",
        "svc-secret",
        grant_types=["client_credentials", "refresh_token"],
        scopes=["authsvc:introspect", "read"],
    )
    backend.failure = failure  # type: ignore[assignment]  (any exception, for these tests)
    return backend


def _app(backend: FakeBackend, cors: bool = True) -> Any:
    config = GatewayConfig(client_id="g", client_secret="s", cors_origins=(ORIGIN,) if cors else ())
    return create_app(config, backend)


@dataclass
class Case:
    """One HTTP request as uvicorn hands it to the app."""

    path: str
    form: dict[str, str] | list[tuple[str, str]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"
    content_type: str | None = FORM
    #: The body as it arrives, chunk by chunk; the form's encoding when not given.
    chunks: list[bytes] | None = None
    #: The client goes away after the chunks instead of ending the body.
    disconnects: bool = False
    root_path: str = ""

    def scope(self) -> Scope:
        headers = [(b"host", b"gw.example")]
        if self.content_type is not None:
            headers.append((b"content-type", self.content_type.encode()))
        headers += [(name.encode(), value.encode()) for name, value in self.headers.items()]
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "server": ("127.0.0.1", 8080),
            "client": ("127.0.0.1", 50000),
            "scheme": "http",
            "method": self.method,
            "root_path": self.root_path,
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": b"",
            "headers": headers,
            "state": {},
        }

    def messages(self) -> list[Message]:
        chunks = self.chunks
        if chunks is None:
            chunks = [urlencode(self.form or {}).encode()]
        sent: list[Message] = [
            {"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks
        ]
        if self.disconnects:
            return [*sent, {"type": "http.disconnect"}]
        sent[-1]["more_body"] = False
        return sent


def _svc(
    path: str, form: Any = None, *, headers: dict[str, str] | None = None, **fields: Any
) -> Case:
    """A request from the confidential client `svc`, authenticated with HTTP Basic."""
    return Case(path, form, {"authorization": SVC, **(headers or {})}, **fields)


@dataclass
class Exchange:
    """What the app sent back, and what it raised to the server."""

    sent: list[Message]
    raised: tuple[type[BaseException], str] | None


async def _exchange(app: ASGIApp, case: Case) -> Exchange:
    incoming = case.messages()

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    try:
        await app(case.scope(), receive, send)
    except Exception as exc:
        return Exchange(sent, (type(exc), str(exc)))
    return Exchange(sent, None)


@dataclass
class Spy:
    """The Starlette app behind DirectRoutes, counting the requests it was given."""

    app: ASGIApp
    calls: int = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        await self.app(scope, receive, send)


async def _both(case: Case, backend: FakeBackend, *, cors: bool = True) -> tuple[Exchange, bool]:
    """The exchange, checked to be the same through DirectRoutes and through Starlette alone,
    and whether DirectRoutes answered it itself."""
    app = _app(backend, cors)
    spy = app.app = Spy(app.app)
    direct = await _exchange(app, case)
    starlette = await _exchange(spy.app, case)
    assert direct == starlette
    return direct, spy.calls == 0


def _reply(exchange: Exchange) -> tuple[int, dict[bytes, bytes], Any]:
    start, body = exchange.sent
    assert not body.get("more_body", False)
    text = body["body"]
    return start["status"], dict(start["headers"]), json.loads(text) if text else None


CC = {"grant_type": "client_credentials", "scope": "read"}
CASES = [
    pytest.param(_svc(paths.TOKEN, CC), 200, id="cc-basic"),
    pytest.param(
        Case(paths.TOKEN, {**CC, "client_id": "svc", "client_secret": "svc-secret"}),
        200,
        id="cc-post",
    ),
    pytest.param(
        _svc(paths.TOKEN, [*CC.items(), ("resource", "a"), ("resource", "b")]),
        200,
        id="cc-resources",
    ),
    pytest.param(
        _svc(paths.TOKEN, {"grant_type": "refresh_token", "refresh_token": "asrt_x"}),
        200,
        id="refresh",
    ),
    pytest.param(
        Case(
            paths.TOKEN,
            {
                "grant_type": "authorization_code",
                "client_id": "app",
                "code": "asac_x",
                "redirect_uri": CALLBACK,
                "code_verifier": "v" * 43,
            },
        ),
        200,
        id="code-public-client",
    ),
    pytest.param(_svc(paths.INTROSPECT, {"token": "at"}), 200, id="introspect"),
    pytest.param(
        _svc(paths.REVOKE, {"token": "asrt_x", "token_type_hint": "refresh_token"}),
        200,
        id="revoke",
    ),
    pytest.param(
        _svc(paths.TOKEN, CC, chunks=[b"grant_type=client_", b"credentials"]),
        200,
        id="body-in-chunks",
    ),
    pytest.param(_svc(paths.TOKEN, {"scope": "read"}), 400, id="no-grant-type"),
    pytest.param(
        _svc(paths.TOKEN, {"grant_type": "password", "username": "a", "password": "b"}),
        400,
        id="unsupported-grant-type",
    ),
    pytest.param(Case(paths.TOKEN, {**CC, "client_id": "app"}), 400, id="unauthorized-client"),
    pytest.param(Case(paths.TOKEN, CC), 401, id="no-client-authentication"),
    pytest.param(
        Case(paths.TOKEN, CC, {"authorization": _basic("svc:wrong")}), 401, id="wrong-secret-basic"
    ),
    pytest.param(
        Case(paths.TOKEN, {**CC, "client_id": "svc", "client_secret": "wrong"}),
        400,  # no challenge for client_secret_post, so not 401 (RFC 9110 §15.5.2)
        id="wrong-secret-post",
    ),
    pytest.param(Case(paths.TOKEN, CC, {"authorization": "Bearer x"}), 401, id="not-basic"),
    pytest.param(_svc(paths.TOKEN, {**CC, "client_secret": "svc-secret"}), 400, id="two-methods"),
    pytest.param(
        Case(paths.INTROSPECT, {"token": "at", "client_id": "app"}), 400, id="introspect-public"
    ),
    pytest.param(_svc(paths.INTROSPECT, {}), 400, id="introspect-no-token"),
    pytest.param(_svc(paths.REVOKE, {}), 400, id="revoke-no-token"),
    pytest.param(_svc(paths.TOKEN, CC, content_type="application/json"), 400, id="json-body"),
    pytest.param(_svc(paths.TOKEN, CC, content_type=f"{FORM}; charset=latin1"), 400, id="latin1"),
    pytest.param(_svc(paths.TOKEN, CC, content_type=None), 400, id="no-content-type"),
    pytest.param(
        _svc(paths.TOKEN, CC, headers={"content-length": str(MAX_BODY_BYTES + 1)}),
        400,
        id="declared-oversized",
    ),
    pytest.param(
        _svc(paths.TOKEN, CC, headers={"content-length": "12a"}), 400, id="malformed-content-length"
    ),
    pytest.param(
        _svc(paths.TOKEN, chunks=[b"a" * MAX_BODY_BYTES, b"a"]), 400, id="streamed-oversized"
    ),
    pytest.param(_svc(paths.TOKEN, [*CC.items(), ("scope", "x")]), 400, id="repeated-param"),
    pytest.param(_svc(paths.TOKEN, chunks=[b"grant_type=%ff"]), 400, id="not-utf8"),
    pytest.param(
        _svc(paths.TOKEN, chunks=[b"grant_type="], disconnects=True), 400, id="client-goes-away"
    ),
]


@pytest.mark.parametrize(("case", "status"), CASES)
async def test_direct_requests_are_answered_as_starlette_answers_them(
    case: Case, status: int
) -> None:
    exchange, direct = await _both(case, _backend())
    assert direct
    assert exchange.raised is None
    got, headers, body = _reply(exchange)
    assert got == status, body
    assert headers[b"cache-control"] == b"no-store"
    assert headers[b"pragma"] == b"no-cache"
    if case.path != paths.REVOKE or status != 200:
        assert headers[b"content-type"] == b"application/json"


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        pytest.param(InvalidGrant("used"), 400, id="invalid-grant"),
        pytest.param(InvalidScope("no"), 400, id="invalid-scope"),
        pytest.param(TemporarilyUnavailable("away"), 503, id="temporarily-unavailable"),
    ],
)
@pytest.mark.parametrize("path", [paths.TOKEN, paths.INTROSPECT, paths.REVOKE])
async def test_backend_errors_are_answered_as_starlette_answers_them(
    path: str, failure: Exception, status: int
) -> None:
    case = _svc(path, {**CC, "token": "at"})
    exchange, direct = await _both(case, _backend(failure))
    assert direct
    got, headers, body = _reply(exchange)
    assert (got, body["error"]) == (status, failure.error)  # type: ignore[attr-defined]
    assert (b"retry-after" in headers) == (status == 503)


@pytest.mark.parametrize("path", [paths.TOKEN, paths.INTROSPECT, paths.REVOKE])
async def test_an_unexpected_exception_is_a_server_error_then_raised(path: str) -> None:
    case = _svc(path, {**CC, "token": "at"})
    exchange, direct = await _both(case, _backend(RuntimeError(DETAIL)))
    assert direct
    assert exchange.raised == (RuntimeError, DETAIL)
    status, _, body = _reply(exchange)
    assert (status, body["error"]) == (500, "server_error")
    assert DETAIL not in json.dumps(body)


PASSED_ON = [
    pytest.param(_svc(paths.TOKEN, CC, headers={"origin": ORIGIN}), id="origin"),
    pytest.param(
        _svc(paths.INTROSPECT, {"token": "at"}, headers={"origin": ORIGIN}),
        id="origin-introspect",
    ),
    pytest.param(
        Case(
            paths.TOKEN,
            method="OPTIONS",
            headers={"origin": ORIGIN, "access-control-request-method": "POST"},
        ),
        id="preflight",
    ),
    pytest.param(Case(paths.TOKEN, method="GET"), id="get"),
    pytest.param(Case(paths.INTROSPECT, method="HEAD"), id="head"),
    pytest.param(Case(paths.REVOKE, method="PUT"), id="put"),
    pytest.param(_svc(paths.TOKEN + "/", CC), id="trailing-slash"),
    pytest.param(_svc("/oauth/Token", CC), id="other-case"),
    pytest.param(Case(paths.LOGIN, {"username": "a"}), id="login"),
    pytest.param(_svc("/auth" + paths.TOKEN, CC, root_path="/auth"), id="root-path"),
]


@pytest.mark.parametrize("cors", [pytest.param(True, id="cors"), pytest.param(False, id="no-cors")])
@pytest.mark.parametrize("case", PASSED_ON)
async def test_other_requests_are_passed_to_starlette(case: Case, cors: bool) -> None:
    exchange, direct = await _both(case, _backend(), cors=cors)
    assert not direct
    assert exchange.raised is None


async def test_an_origin_gets_its_cors_headers() -> None:
    case = _svc(paths.TOKEN, CC, headers={"origin": ORIGIN})
    exchange, _ = await _both(case, _backend())
    _, headers, _ = _reply(exchange)
    assert headers[b"access-control-allow-origin"] == ORIGIN.encode()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from([paths.TOKEN, paths.INTROSPECT, paths.REVOKE]),
    form=FORMS,
    content_type=CONTENT_TYPES,
    authorization=AUTHORIZATION,
)
def test_any_post_is_answered_as_starlette_answers_it(
    path: str, form: list[tuple[str, str]], content_type: str, authorization: str | None
) -> None:
    headers = {"authorization": authorization} if authorization is not None else {}
    case = Case(path, form, headers, content_type=content_type or None)
    _, direct = asyncio.run(_both(case, _backend()))
    assert direct


async def test_an_unexpected_exception_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config = GatewayConfig(client_id="g", client_secret="s", port=port)
    with caplog.at_level(logging.ERROR):
        async with (
            start_gateway(config, _backend(RuntimeError(DETAIL)), sock) as gateway,
            httpx.AsyncClient(base_url=gateway.url) as http,
        ):
            reply = await http.post(
                paths.INTROSPECT, data={"token": "at"}, headers={"authorization": SVC}
            )
    assert reply.status_code == 500
    assert reply.json() == {"error": "server_error", "error_description": "unexpected error"}
    assert reply.headers["cache-control"] == "no-store"
    logged = [record for record in caplog.records if record.exc_info]
    assert logged
    assert logged[0].exc_info[1].args == (DETAIL,)  # type: ignore[index]
