"""Strict parsing of form-encoded requests and query strings.

RFC 6749 §3.1 and §3.2: parameters are `application/x-www-form-urlencoded`, appear at most once,
and a parameter sent without a value is treated as omitted; unknown parameters are ignored. A body
that is not form-encoded, too large, or not UTF-8 is refused with invalid_request before anything
else looks at it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final
from urllib.parse import parse_qsl

from starlette.requests import Request

from authsvc_gateway.errors import InvalidRequest

FORM_MEDIA_TYPE: Final = "application/x-www-form-urlencoded"
#: Far above any legitimate OAuth request (tokens here are < 1 KiB), far below anything costly.
MAX_BODY_BYTES: Final = 16 * 1024
MAX_QUERY_BYTES: Final = 8 * 1024
MAX_FIELDS: Final = 64
#: RFC 8707 §2: `resource` is the one parameter that may be repeated.
MULTI_VALUED: Final = frozenset({"resource"})


@dataclass(frozen=True)
class Params:
    """Parameters as received, each name with every value it was given, in order."""

    values: Mapping[str, tuple[str, ...]]

    def __repr__(self) -> str:
        # The values are passwords, client secrets, codes and tokens: only the names show.
        return f"Params(names={sorted(self.values)!r})"

    def count(self, name: str) -> int:
        """How many times `name` was sent (with or without a value)."""
        return len(self.values.get(name, ()))

    def repeated(self) -> list[str]:
        """The names sent more than once that are not allowed to be (RFC 6749 §3.1)."""
        return sorted(
            name for name, got in self.values.items() if len(got) > 1 and name not in MULTI_VALUED
        )

    def single(self, name: str) -> str | None:
        """The value of a parameter sent at most once; None when absent or empty."""
        got = self.values.get(name, ())
        if len(got) > 1:
            raise InvalidRequest(f"parameter {name} is repeated")
        return got[0] if got and got[0] else None

    def require(self, name: str) -> str:
        """The value of a required parameter; invalid_request when absent, empty or repeated."""
        value = self.single(name)
        if value is None:
            raise InvalidRequest(f"parameter {name} is required")
        return value

    def every(self, name: str) -> tuple[str, ...]:
        """Every non-empty value of a multi-valued parameter."""
        return tuple(value for value in self.values.get(name, ()) if value)


#: No parameters at all.
NO_PARAMS: Final = Params(MappingProxyType({}))


def parse_params(encoded: bytes | str) -> Params:
    """Decode `application/x-www-form-urlencoded` text strictly: UTF-8 only, at most MAX_FIELDS."""
    return _grouped(_pairs(encoded))


def parse_form(encoded: bytes | str) -> Params:
    """Like `parse_params`, then refuse any repeated parameter (RFC 6749 §3.1)."""
    pairs = _pairs(encoded)
    once = {name: (value,) for name, value in pairs}
    if len(once) == len(pairs):  # no name twice: the usual request, grouped in one step
        return Params(MappingProxyType(once))
    params = _grouped(pairs)
    repeated = params.repeated()
    if repeated:
        raise InvalidRequest(f"parameter {repeated[0]} is repeated")
    return params


def parse_query(request: Request) -> Params:
    """The query string of a request, decoded strictly but with repetitions kept."""
    raw: bytes = request.scope.get("query_string", b"")
    if len(raw) > MAX_QUERY_BYTES:
        raise InvalidRequest("the query string is too long")
    return parse_params(raw)


async def read_form(request: Request) -> Params:
    """The form body of a POST, refused with invalid_request unless it is a small, strict form."""
    content_type = header(request, b"content-type") or ""
    # The exact media type, as nearly every client sends it, needs no parsing.
    if content_type != FORM_MEDIA_TYPE and media_type(content_type) != FORM_MEDIA_TYPE:
        raise InvalidRequest(f"the body must be {FORM_MEDIA_TYPE}")
    return parse_form(await read_body(request))


def header(request: Request, name: bytes) -> str | None:
    """The value of the header `name` (lower case), None when the request has none, without
    building the request's `Headers`.

    A request that repeats it is refused (invalid_request) rather than read by its first value:
    which of two Authorization or Content-Type headers is meant is ambiguous, and a proxy in
    front may have acted on the other one (authsvc's own bearer header is refused the same way).
    """
    found: bytes | None = None
    for key, value in request.scope["headers"]:
        if key == name:
            if found is not None:
                raise InvalidRequest(f"send one {name.decode()} header, not several")
            found = value
    return None if found is None else found.decode("latin-1")


def media_type(content_type: str) -> str:
    """The media type of a Content-Type header, lower case, when its charset (if any) is UTF-8.

    Anything else (another charset, a malformed header) answers the empty string.
    """
    kind, _, rest = content_type.partition(";")
    for parameter in rest.split(";"):
        name, _, value = parameter.strip().partition("=")
        if name.lower() == "charset" and value.strip('"').lower() not in {"utf-8", "utf8"}:
            return ""
    return kind.strip().lower()


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused once it grows past `limit` bytes without reading the rest.

    Read from the ASGI messages as `Request.stream` reads them, without its async generator
    (and without marking the request's stream as read: read a body once).
    """
    declared = header(request, b"content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise InvalidRequest("the body is too large")
    body = b""
    while True:
        message = await request.receive()
        if message["type"] == "http.request":
            chunk: bytes = message.get("body", b"")
            body += chunk
            if len(body) > limit:
                raise InvalidRequest("the body is too large")
            if not message.get("more_body", False):
                return body
        elif message["type"] == "http.disconnect":
            raise InvalidRequest("the client went away mid-request")


def _pairs(encoded: bytes | str) -> list[tuple[str, str]]:
    """The decoded name-value pairs; InvalidRequest for anything but form-encoded UTF-8, and for a
    NUL character (`%00`), which no OAuth parameter may hold and PostgreSQL cannot store."""
    try:
        text = encoded.decode("utf-8") if isinstance(encoded, bytes) else encoded
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except ValueError as exc:  # UnicodeDecodeError is a ValueError, and so is too many fields
        raise InvalidRequest("the parameters are not valid form-encoded UTF-8") from exc
    if any("\x00" in name or "\x00" in value for name, value in pairs):
        raise InvalidRequest("a parameter contains a NUL character")
    return pairs


def _grouped(pairs: Iterable[tuple[str, str]]) -> Params:
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return Params(MappingProxyType({name: tuple(got) for name, got in grouped.items()}))
