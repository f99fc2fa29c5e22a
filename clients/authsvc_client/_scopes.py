"""Which scopes each gRPC method needs, and which methods are public.

Scopes come from a mapping given in code and from the `authsvc.v1.required_scopes` method option
in the service's own proto, read from the registered descriptors. When both name scopes for a
method, the token needs all of them. A method with neither needs a valid token and no scope, as
authsvc's own API does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from google.protobuf import descriptor_pool

from .v1 import authsvc_pb2

__all__ = ["DEFAULT_PUBLIC_SERVICES", "MethodScopes"]

#: Services reachable without a token: health checks (grpc.health.v1) and server reflection.
DEFAULT_PUBLIC_SERVICES = (
    "/grpc.health.v1.Health/*",
    "/grpc.reflection.v1.ServerReflection/*",
    "/grpc.reflection.v1alpha.ServerReflection/*",
)


#: How many methods' rules are remembered. Without proto options every name called is a method as
#: far as the rules know, and a server with a catch-all handler is called with names made up by
#: anyone: beyond this many the rest are computed per call instead (0.5 us, not 0.04).
MAX_REMEMBERED_RULES = 4096


class MethodScopes:
    """The access rule of every method, by its gRPC path (`/package.Service/Method`).

    `required` maps a method path, or a whole service as `/package.Service/*`, to the scopes its
    callers' tokens must all carry. `public` lists methods or services that need no token at all,
    on top of `DEFAULT_PUBLIC_SERVICES`. With `read_proto_options` the `authsvc.v1.required_scopes`
    option of each method in `pool` (the default descriptor pool, where generated code registers
    itself) adds to the mapping.
    """

    def __init__(
        self,
        required: Mapping[str, Iterable[str]] | None = None,
        *,
        public: Iterable[str] = (),
        read_proto_options: bool = True,
        pool: descriptor_pool.DescriptorPool | None = None,
    ) -> None:
        self._required = {_checked_path(path): frozenset(s) for path, s in (required or {}).items()}
        self._public = frozenset(
            _checked_path(path) for path in (*DEFAULT_PUBLIC_SERVICES, *public)
        )
        clash = sorted(
            p
            for p, scopes in self._required.items()
            if scopes and (p in self._public or _service_wildcard(p) in self._public)
        )
        if clash:
            raise ValueError(f"methods both public and scoped: {', '.join(clash)}")
        self._pool = (pool or descriptor_pool.Default()) if read_proto_options else None
        self._from_options: dict[str, frozenset[str]] = {}
        self._rules: dict[str, tuple[bool, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def rule(self, method: str) -> tuple[bool, frozenset[str]]:
        """`is_public(method)` and `required_for(method)` at once, remembered per method once
        the method is known (to the descriptor pool, or always without proto options), for at most
        `MAX_REMEMBERED_RULES` methods: made-up names are not kept, and a method whose proto is
        imported later is read then."""
        rule = self._rules.get(method)
        if rule is not None:
            return rule
        rule = (self.is_public(method), self.required_for(method))
        known = self._pool is None or method in self._from_options
        if known and len(self._rules) < MAX_REMEMBERED_RULES:
            with self._lock:
                self._rules[method] = rule
        return rule

    def is_public(self, method: str) -> bool:
        """Whether `method` may be called without a token: listed as public, itself or its
        service, and no scope named for the method itself (its proto option; the mapping is
        checked when it is given), which wins over the listing, failing closed. A scope named
        for the whole service yields to the method's own public listing."""
        listed = method in self._public or _service_wildcard(method) in self._public
        return listed and not (self._required.get(method) or self._option_scopes(method))

    def required_for(self, method: str) -> frozenset[str]:
        """Every scope a caller of `method` must hold."""
        scopes = self._required.get(method, frozenset())
        wildcard = self._required.get(_service_wildcard(method))
        if wildcard:
            scopes = scopes | wildcard
        return scopes | self._option_scopes(method)

    def _option_scopes(self, method: str) -> frozenset[str]:
        if self._pool is None:
            return frozenset()
        cached = self._from_options.get(method)
        if cached is not None:
            return cached
        scopes = _read_option(self._pool, method)
        if scopes is None:
            # Unknown to the pool: not cached, so made-up method names cannot grow the table.
            return frozenset()
        with self._lock:
            self._from_options[method] = scopes
        return scopes


def _read_option(pool: descriptor_pool.DescriptorPool, method: str) -> frozenset[str] | None:
    service, _, name = method.lstrip("/").partition("/")
    if not service or not name:
        return None
    try:
        descriptor = pool.FindMethodByName(f"{service}.{name}")
    except KeyError:
        return None
    options = descriptor.GetOptions()
    # The generated .pyi types the extension as a plain FieldDescriptor.
    return frozenset(options.Extensions[authsvc_pb2.required_scopes])  # type: ignore[index]


def _checked_path(path: str) -> str:
    service, slash, name = path.removeprefix("/").partition("/")
    if not path.startswith("/") or not slash or not service or not name or "/" in name:
        raise ValueError(f"{path!r} is not a gRPC method path like '/package.Service/Method'")
    return path


def _service_wildcard(method: str) -> str:
    service, _, _ = method.lstrip("/").partition("/")
    return f"/{service}/*"
