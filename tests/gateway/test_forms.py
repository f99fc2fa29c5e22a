"""Strict form parsing: RFC 6749 §3.1 (no repeats, empty means absent) and the body limits."""

from __future__ import annotations

import pytest
from authsvc_gateway.errors import InvalidRequest
from authsvc_gateway.forms import MAX_FIELDS, media_type, parse_form, parse_params


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
