"""NoStoreReply is the Starlette Response it stands for, byte for byte."""

from __future__ import annotations

import pytest
from authsvc_gateway.client_auth import BASIC_CHALLENGE
from authsvc_gateway.replies import JSON, NO_STORE, NoStoreReply
from starlette.responses import Response
from starlette.types import Message

BODY = b'{"error": "invalid_client"}'


def _starlette(content: bytes, status: int, headers: dict[str, str], json: bool) -> Response:
    return Response(
        content,
        status_code=status,
        headers={**NO_STORE, **headers},
        media_type=JSON if json else None,
    )


async def _sent(reply: Response) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    await reply({"type": "http"}, receive, send)
    return sent


@pytest.mark.parametrize(
    ("content", "status", "headers", "json"),
    [
        pytest.param(b'{"access_token": "x"}', 200, {}, True, id="json-200"),
        pytest.param(BODY, 401, {"WWW-Authenticate": BASIC_CHALLENGE}, True, id="challenge"),
        pytest.param(BODY, 503, {"Retry-After": "5"}, True, id="retry-after"),
        pytest.param(b"", 200, {}, False, id="empty-200"),
        pytest.param(b"", 204, {}, False, id="204-has-no-length"),
        pytest.param(b"", 304, {}, True, id="304-has-no-length"),
        pytest.param("é".encode(), 400, {}, True, id="utf8"),
    ],
)
async def test_a_reply_is_the_starlette_response_it_stands_for(
    content: bytes, status: int, headers: dict[str, str], json: bool
) -> None:
    reply = NoStoreReply(content, status, headers=headers, json=json)
    expected = _starlette(content, status, headers, json)
    assert (reply.status_code, reply.raw_headers, reply.body) == (
        expected.status_code,
        expected.raw_headers,
        expected.body,
    )
    assert await _sent(reply) == await _sent(expected)


async def test_a_reply_can_be_adjusted_like_a_response() -> None:
    reply, expected = NoStoreReply(BODY, 400), _starlette(BODY, 400, {}, True)
    for response in (reply, expected):
        response.status_code = 405
        response.headers.update({"Allow": "POST"})
    assert await _sent(reply) == await _sent(expected)
    # Each reply has a header list of its own.
    assert (b"allow", b"POST") not in NoStoreReply(BODY, 400).raw_headers
