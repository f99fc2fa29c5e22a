"""The read-only JSON values that verified claims are made of (`authsvc_client._frozen`)."""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable
from typing import Any

import pytest
from authsvc_client._frozen import FrozenDict, FrozenList, freeze

CLAIMS: dict[str, Any] = {
    "sub": "alice",
    "aud": ["notes", "orders"],
    "exp": 1_700_000_600,
    "act": {"sub": "gateway", "chain": [{"sub": "edge"}]},
    "admin": False,
    "extra": None,
}


def frozen() -> Any:
    return freeze(copy.deepcopy(CLAIMS))


DICT_CHANGES: list[tuple[str, Callable[[Any], object]]] = [
    ("set", lambda d: d.__setitem__("sub", "mallory")),
    ("delete", lambda d: d.__delitem__("sub")),
    ("clear", lambda d: d.clear()),
    ("pop", lambda d: d.pop("sub")),
    ("popitem", lambda d: d.popitem()),
    ("setdefault", lambda d: d.setdefault("scope", "admin")),
    ("update", lambda d: d.update(scope="admin")),
    ("in-place or", lambda d: d.__ior__({"scope": "admin"})),
    ("nested dict", lambda d: d["act"].__setitem__("sub", "mallory")),
    ("dict in a list", lambda d: d["act"]["chain"][0].pop("sub")),
]

LIST_CHANGES: list[tuple[str, Callable[[Any], object]]] = [
    ("set", lambda v: v.__setitem__(0, "billing")),
    ("set a slice", lambda v: v.__setitem__(slice(0, 1), ["billing"])),
    ("delete", lambda v: v.__delitem__(0)),
    ("append", lambda v: v.append("billing")),
    ("extend", lambda v: v.extend(["billing"])),
    ("insert", lambda v: v.insert(0, "billing")),
    ("pop", lambda v: v.pop()),
    ("remove", lambda v: v.remove("notes")),
    ("clear", lambda v: v.clear()),
    ("sort", lambda v: v.sort(reverse=True)),
    ("reverse", lambda v: v.reverse()),
    ("in-place add", lambda v: v.__iadd__(["billing"])),
    ("in-place multiply", lambda v: v.__imul__(0)),
]


@pytest.mark.parametrize(("change"), [c for _, c in DICT_CHANGES], ids=[n for n, _ in DICT_CHANGES])
def test_no_object_in_the_claims_can_be_changed(change: Callable[[Any], object]) -> None:
    claims = frozen()
    with pytest.raises(TypeError, match="read-only"):
        change(claims)
    assert claims == CLAIMS


@pytest.mark.parametrize(("change"), [c for _, c in LIST_CHANGES], ids=[n for n, _ in LIST_CHANGES])
def test_no_array_in_the_claims_can_be_changed(change: Callable[[Any], object]) -> None:
    claims = frozen()
    with pytest.raises(TypeError, match="read-only"):
        change(claims["aud"])
    assert claims == CLAIMS


def test_frozen_claims_read_as_plain_json() -> None:
    claims = frozen()
    assert isinstance(claims, dict)
    assert isinstance(claims["aud"], list)
    assert type(claims["act"]["chain"][0]) is FrozenDict
    assert type(claims["aud"]) is FrozenList
    assert claims == CLAIMS
    assert claims["aud"] == ["notes", "orders"]
    assert json.dumps(claims, sort_keys=True) == json.dumps(CLAIMS, sort_keys=True)
    assert claims | {"scope": "x"} == {**CLAIMS, "scope": "x"}
    assert claims["aud"] + ["billing"] == ["notes", "orders", "billing"]


def test_a_copy_is_plain_and_may_be_changed() -> None:
    claims = frozen()
    mine = dict(claims)
    mine["sub"] = "bob"
    audiences = list(claims["aud"])
    audiences.append("billing")
    also_mine = claims.copy()
    also_mine.pop("sub")
    assert (mine["sub"], audiences[-1], "sub" in also_mine) == ("bob", "billing", False)
    assert claims == CLAIMS


@pytest.mark.parametrize(
    "duplicate",
    [
        copy.copy,
        copy.deepcopy,
        lambda value: pickle.loads(pickle.dumps(value)),  # noqa: S301 - our own bytes
    ],
    ids=["copy", "deepcopy", "pickle"],
)
def test_copies_and_pickles_stay_frozen_and_equal(duplicate: Callable[[Any], Any]) -> None:
    claims = duplicate(frozen())
    assert claims == CLAIMS
    assert type(claims) is FrozenDict
    with pytest.raises(TypeError, match="read-only"):
        claims["sub"] = "mallory"


def test_values_other_than_objects_and_arrays_are_kept_as_they_are() -> None:
    for value in ("text", 1, 1.5, True, None):
        assert freeze(value) is value


def test_calling_init_again_changes_nothing() -> None:
    claims = frozen()
    claims.__init__({"sub": "mallory"})  # type: ignore[misc]
    claims["aud"].__init__()  # type: ignore[misc]
    assert claims == CLAIMS


def test_a_copy_of_the_top_level_keeps_nested_values_frozen_and_json_thaws_all() -> None:
    claims = frozen()
    with pytest.raises(TypeError, match="read-only"):
        dict(claims)["aud"].append("billing")
    thawed = json.loads(json.dumps(claims))
    thawed["aud"].append("billing")
    thawed["act"]["chain"][0]["sub"] = "other"
    assert claims == CLAIMS
