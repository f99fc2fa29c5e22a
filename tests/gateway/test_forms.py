"""Strict form parsing: RFC 6749 §3.1 (no repeats, empty means absent) and the body limits."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from authsvc_gateway.errors import InvalidRequest
from authsvc_gateway.forms import (
    FORM_MEDIA_TYPE,
    MAX_FIELDS,
    header,
    media_type,
    parse_form,
    parse_params,
    read_body,
    read_form,
)
from starlette.requests import Request
from starlette.types import Message


def test_values_are_decoded() -> None:
    form = parse_form("a=1&b=x+y&c=%C3%A9%26")
    assert form.single("a") == "1"
    assert form.single("b") == "x y"
    assert form.single("c") == "é&"


def test_an_empty_value_counts_as_absent() -> None:
    form = parse_form("a=&b")
    assert form.single("a") is None
    assert form.single("b") is None
    with pytest.raises(InvalidRequest, match="a is required"):
        form.require("a")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("a=1&a=2", id="twice"),
        pytest.param("a=1&a=", id="second-empty"),
        pytest.param("a=&a=1", id="first-empty"),
    ],
)
def test_repeats_are_refused(body: str) -> None:
    with pytest.raises(InvalidRequest, match="repeated"):
        parse_form(body)


def test_resource_may_repeat() -> None:
    assert parse_form("resource=a&resource=b").every("resource") == ("a", "b")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"a=%ff", id="bad-percent-utf8"),
        pytest.param(b"a=\xff", id="bad-raw-utf8"),
        pytest.param("&".join(f"k{i}=v" for i in range(MAX_FIELDS + 1)), id="too-many-fields"),
        pytest.param("client_id=app%00", id="nul-in-a-value"),
        pytest.param("user%00name=alice", id="nul-in-a-name"),
    ],
)
def test_undecodable_input_is_invalid_request(body: bytes | str) -> None:
    with pytest.raises(InvalidRequest):
        parse_params(body)


def test_parse_params_keeps_repeats_for_the_caller_to_judge() -> None:
    params = parse_params("a=1&a=2")
    assert params.count("a") == 2
    assert params.repeated() == ["a"]
    with pytest.raises(InvalidRequest):
        params.single("a")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(
            "application/x-www-form-urlencoded", "application/x-www-form-urlencoded", id="plain"
        ),
        pytest.param(
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
            "application/x-www-form-urlencoded",
            id="case-and-utf8",
        ),
        pytest.param(
            'application/x-www-form-urlencoded; charset="utf-8"',
            "application/x-www-form-urlencoded",
            id="quoted",
        ),
        pytest.param("application/x-www-form-urlencoded; charset=iso-8859-1", "", id="latin1"),
        pytest.param("application/json", "application/json", id="json"),
        pytest.param("", "", id="absent"),
    ],
)
def test_media_type(header: str, expected: str) -> None:
    assert media_type(header) == expected


def _request(headers: list[tuple[bytes, bytes]], messages: Sequence[Message] = ()) -> Request:
    incoming = list(messages)

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    return Request({"type": "http", "headers": headers}, receive)


@pytest.mark.parametrize(
    ("headers", "name"),
    [
        pytest.param([(b"content-type", b"a/b")], b"content-type", id="present"),
        pytest.param([(b"accept", b"*/*")], b"content-type", id="absent"),
        pytest.param([(b"authorization", "é".encode())], b"authorization", id="latin1"),
        pytest.param([(b"Authorization", b"x")], b"authorization", id="names-as-given"),
    ],
)
def test_a_header_is_what_starlette_reads(headers: list[tuple[bytes, bytes]], name: bytes) -> None:
    request = _request(headers)
    assert header(request, name) == request.headers.get(name.decode())


@pytest.mark.parametrize("name", [b"authorization", b"content-type"])
def test_a_repeated_header_is_refused_not_read_by_its_first_value(name: bytes) -> None:
    # Which of the two is meant is ambiguous; a proxy in front may have acted on the other.
    request = _request([(name, b"x"), (b"accept", b"*/*"), (name, b"y")])
    with pytest.raises(InvalidRequest, match=f"send one {name.decode()} header"):
        header(request, name)


def _part(body: bytes, more: bool = True) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param([_part(b"a=1", more=False)], id="one"),
        pytest.param([_part(b"a="), _part(b""), _part(b"1", more=False)], id="several"),
        pytest.param([_part(b"a=1"), _part(b"", more=False)], id="empty-last"),
        pytest.param([{"type": "http.request"}], id="no-body"),
        pytest.param(
            [_part(b"a="), {"type": "http.other"}, _part(b"1", more=False)], id="other-type"
        ),
    ],
)
async def test_a_body_is_what_starlette_reads(messages: list[Message]) -> None:
    assert await read_body(_request([], messages)) == await _request([], messages).body()


@pytest.mark.parametrize(
    ("headers", "messages", "message"),
    [
        pytest.param(
            [(b"content-length", b"17")], [_part(b"x" * 17, more=False)], "too large", id="declared"
        ),
        pytest.param(
            [(b"content-length", b"-1")],
            [_part(b"", more=False)],
            "too large",
            id="malformed-length",
        ),
        pytest.param(
            [], [_part(b"x" * 9), _part(b"x" * 8, more=False)], "too large", id="streamed"
        ),
        pytest.param([], [_part(b"x" * 9)], "went away", id="disconnect"),
    ],
)
async def test_a_body_is_refused(
    headers: list[tuple[bytes, bytes]], messages: list[Message], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        await read_body(_request(headers, messages), limit=16)


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param(FORM_MEDIA_TYPE, id="exact"),
        pytest.param(FORM_MEDIA_TYPE + "; charset=UTF-8", id="charset"),
        pytest.param("Application/X-WWW-Form-Urlencoded", id="case"),
    ],
)
async def test_a_form_is_read(content_type: str) -> None:
    request = _request([(b"content-type", content_type.encode())], [_part(b"a=1", more=False)])
    assert (await read_form(request)).single("a") == "1"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([(b"content-type", b"application/json")], id="json"),
        pytest.param(
            [(b"content-type", FORM_MEDIA_TYPE.encode() + b"; charset=latin1")], id="latin1"
        ),
        pytest.param([], id="absent"),
    ],
)
async def test_anything_but_a_form_is_refused(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(InvalidRequest, match="must be"):
        await read_form(_request(headers, [_part(b"a=1", more=False)]))


def test_a_parsed_form_keeps_its_values_out_of_repr() -> None:
    secrets = ("correct horse battery", "asc_" + "s" * 43, "asrt_" + "r" * 43, "v" * 64)
    form = parse_form(
        f"username=alice&password={secrets[0]}&client_secret={secrets[1]}"
        f"&refresh_token={secrets[2]}&code_verifier={secrets[3]}"
    )
    text = repr(form)
    assert [s for s in secrets if s in text] == []
    assert "password" in text  # the names are there, for whoever debugs
