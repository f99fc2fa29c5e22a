"""MethodScopes: scopes from a mapping and from the authsvc.v1.required_scopes proto option."""

from __future__ import annotations

import notes_pb2  # noqa: F401 - registers notes.v1 (and its options) in the default pool
import pytest
from authsvc_client import DEFAULT_PUBLIC_SERVICES, MethodScopes
from authsvc_client._scopes import MAX_REMEMBERED_RULES

READ = "/notes.v1.Notes/ReadNote"
DELETE = "/notes.v1.Notes/DeleteNote"


def test_the_proto_option_is_read_from_the_registered_descriptors() -> None:
    scopes = MethodScopes()
    assert scopes.required_for(READ) == {"notes:read"}
    assert scopes.required_for("/notes.v1.Notes/WriteNote") == {"notes:write"}
    assert scopes.required_for(DELETE) == set()


def test_authsvcs_own_api_declares_its_scopes_the_same_way() -> None:
    scopes = MethodScopes()
    assert scopes.required_for("/authsvc.v1.TokenService/RevokeFamily") == {"authsvc:revoke"}


def test_the_mapping_adds_to_the_option() -> None:
    scopes = MethodScopes({READ: ["notes:audit"], DELETE: ["notes:write"]})
    assert scopes.required_for(READ) == {"notes:read", "notes:audit"}
    assert scopes.required_for(DELETE) == {"notes:write"}


def test_a_service_wildcard_applies_to_every_method() -> None:
    scopes = MethodScopes({"/notes.v1.Notes/*": ["notes:any"]}, read_proto_options=False)
    assert scopes.required_for(READ) == {"notes:any"}
    assert scopes.required_for("/other.v1.Other/Call") == set()


def test_options_can_be_ignored() -> None:
    assert MethodScopes(read_proto_options=False).required_for(READ) == set()


def test_health_and_reflection_are_public_by_default() -> None:
    scopes = MethodScopes()
    assert len(DEFAULT_PUBLIC_SERVICES) == 3
    assert scopes.is_public("/grpc.health.v1.Health/Check")
    assert scopes.is_public("/grpc.health.v1.Health/Watch")
    assert scopes.is_public("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert not scopes.is_public(READ)


def test_listed_methods_and_services_are_public() -> None:
    scopes = MethodScopes(public=["/notes.v1.Notes/Ping", "/status.v1.Status/*"])
    assert scopes.is_public("/notes.v1.Notes/Ping")
    assert scopes.is_public("/status.v1.Status/Get")
    assert not scopes.is_public("/notes.v1.Notes/WhoAmI")


def test_made_up_method_names_are_not_remembered() -> None:
    scopes = MethodScopes()
    for i in range(100):
        assert scopes.required_for(f"/attacker.v1.X/M{i}") == set()
    assert scopes.required_for(READ) == {"notes:read"}
    assert list(scopes._from_options) == [READ]


@pytest.mark.parametrize(
    "method",
    [
        pytest.param(READ, id="option"),
        pytest.param(DELETE, id="mapping"),
        pytest.param("/notes.v1.Notes/Ping", id="public"),
        pytest.param("/grpc.health.v1.Health/Check", id="health"),
        pytest.param("/status.v1.Status/Get", id="wildcard"),
        pytest.param("/attacker.v1.X/M", id="made-up"),
    ],
)
def test_a_methods_rule_is_its_publicity_and_its_scopes(method: str) -> None:
    scopes = MethodScopes(
        {DELETE: ["notes:write"], "/status.v1.Status/*": ["status:read"]},
        public=["/notes.v1.Notes/Ping"],
    )
    for _ in range(2):  # computed, then remembered
        assert scopes.rule(method) == (scopes.is_public(method), scopes.required_for(method))


def test_made_up_method_names_get_no_remembered_rule() -> None:
    scopes = MethodScopes()
    for i in range(100):
        assert scopes.rule(f"/attacker.v1.X/M{i}") == (False, set())
    assert scopes.rule(READ) == (False, {"notes:read"})
    assert list(scopes._rules) == [READ]


def test_without_proto_options_a_flood_of_names_is_remembered_only_up_to_the_bound() -> None:
    # A server with a catch-all handler sees whatever method names its callers make up.
    scopes = MethodScopes({DELETE: ["notes:write"]}, read_proto_options=False)
    assert scopes.rule(DELETE) == (False, {"notes:write"})
    for i in range(MAX_REMEMBERED_RULES + 100):
        assert scopes.rule(f"/attacker.v1.X/M{i}") == (False, set())
    assert len(scopes._rules) == MAX_REMEMBERED_RULES
    assert scopes.rule(DELETE) == (False, {"notes:write"})  # remembered before the flood
    assert scopes.rule("/attacker.v1.X/Late") == (False, set())  # still answered, not kept
    assert "/attacker.v1.X/Late" not in scopes._rules


@pytest.mark.parametrize(
    "path",
    [
        "notes.v1.Notes/ReadNote",
        "/notes.v1.Notes",
        "/notes.v1.Notes/",
        "//ReadNote",
        "/notes.v1.Notes/Read/Note",
    ],
)
def test_a_path_that_is_not_a_grpc_method_is_refused(path: str) -> None:
    with pytest.raises(ValueError, match="gRPC method path"):
        MethodScopes({path: ["x"]})


def test_a_method_cannot_be_both_public_and_scoped() -> None:
    with pytest.raises(ValueError, match="both public and scoped"):
        MethodScopes({"/notes.v1.Notes/Ping": ["x"]}, public=["/notes.v1.Notes/Ping"])


def test_a_public_service_cannot_hide_a_scope_named_for_one_of_its_methods() -> None:
    with pytest.raises(ValueError, match="both public and scoped"):
        MethodScopes({DELETE: ["notes:admin"]}, public=["/notes.v1.Notes/*"])


def test_a_proto_option_scope_wins_over_a_public_listing() -> None:
    # ReadNote names notes:read in its proto: listing it, or its service, as public fails closed.
    for public in (READ, "/notes.v1.Notes/*"):
        scopes = MethodScopes(public=[public])
        assert scopes.rule(READ) == (False, {"notes:read"})
    assert MethodScopes(public=["/notes.v1.Notes/*"]).is_public(DELETE)  # it names no scope


def test_a_method_listed_as_public_yields_no_scope_to_its_services_wildcard() -> None:
    scopes = MethodScopes({"/notes.v1.Notes/*": ["notes:any"]}, public=[DELETE])
    assert scopes.is_public(DELETE)
    assert not scopes.is_public("/notes.v1.Notes/WhoAmI")
