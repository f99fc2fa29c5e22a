"""Where a handler finds the verified claims of the call it is serving."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TypeVar, overload

from ._verification import Claims

__all__ = ["current_claims"]

_T = TypeVar("_T")
_MISSING = object()

CURRENT_CLAIMS: ContextVar[Claims | None] = ContextVar("authsvc_client_claims", default=None)


@overload
def current_claims() -> Claims: ...
@overload
def current_claims(default: _T) -> Claims | _T: ...
def current_claims(default: object = _MISSING) -> object:
    """The verified claims of the access token of the call being served.

    Call it from a handler behind `AuthInterceptor` or `AsyncAuthInterceptor`. Public methods
    (health, reflection, the ones you list) run without a token: there it returns `default`, or
    raises `LookupError` when no default is given.

        claims = current_claims()
        if claims.sub != note.owner: ...
    """
    claims = CURRENT_CLAIMS.get()
    if claims is not None:
        return claims
    if default is _MISSING:
        raise LookupError("no verified access token in this call (public method or no interceptor)")
    return default
