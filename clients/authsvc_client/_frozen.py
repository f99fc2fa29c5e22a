"""Read-only JSON values, for the claims of a verified token.

Verifiers cache what they verified, so one token's `Claims.raw` reaches every call that presents
it, in every handler, until the token expires. A handler that changed it (added a claim of its
own, popped one it had read) would change what the next call with that token is told was signed.
So the signed claims are frozen once, when they are parsed.

`FrozenDict` and `FrozenList` subclass `dict` and `list`: `json.dumps`, equality with plain values,
`isinstance` checks, pickling and copying work as before, and every method of theirs that would
change them raises `TypeError` (only calling `dict`'s or `list`'s own methods on them directly
gets past that). `dict(value)`, `list(value)` and `value.copy()` give plain copies of the top
level, whose nested objects and arrays stay frozen; `json.loads(json.dumps(value))` thaws all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

__all__ = ["FrozenDict", "FrozenList", "freeze"]

_REFUSAL = "verified claims are read-only; change a copy: dict(claims.raw) or list(value)"


def _refuse(*_args: object, **_kwargs: object) -> NoReturn:
    raise TypeError(_REFUSAL)


class FrozenDict(dict[str, Any]):
    """A JSON object that cannot be changed once built."""

    __slots__ = ()

    def __new__(cls, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> FrozenDict:
        frozen = super().__new__(cls)
        dict.update(frozen, items)
        return frozen

    def __init__(self, *_args: object) -> None:
        """Built in `__new__`: `__init__`, called again, must not refill it."""

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[type[FrozenDict], tuple[dict[str, Any]]]:
        # dict's own reduction rebuilds by item assignment, which is refused.
        return (FrozenDict, (dict(self),))


class FrozenList(list[Any]):
    """A JSON array that cannot be changed once built."""

    __slots__ = ()

    def __new__(cls, items: Iterable[Any] = ()) -> FrozenList:
        frozen = super().__new__(cls)
        list.extend(frozen, items)
        return frozen

    def __init__(self, *_args: object) -> None:
        """Built in `__new__`: list's `__init__` would empty it and refill it."""

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = clear = extend = insert = pop = remove = reverse = sort = _refuse

    def __reduce__(self) -> tuple[type[FrozenList], tuple[list[Any]]]:
        return (FrozenList, (list(self),))


def freeze(value: Any) -> Any:
    """`value`, as `json.loads` returned it, with every object and array in it made read-only.

    Recursive: a caller that parsed `value` under the interpreter's recursion limit should expect
    `RecursionError` for nesting near it.
    """
    if isinstance(value, dict):
        return FrozenDict({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list):
        return FrozenList([freeze(item) for item in value])
    return value
