"""The generated code in clients/ is what protos/generate.py makes from the proto, byte for byte."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from authsvc_client.v1 import authsvc_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "clients" / "authsvc_client" / "v1"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "protos_generate", ROOT / "protos" / "generate.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_does_not_drift(tmp_path: Path) -> None:
    written = _generator().generate(tmp_path)
    names = sorted(path.name for path in written)
    assert names == ["authsvc_pb2.py", "authsvc_pb2.pyi", "authsvc_pb2_grpc.py"]
    for name in names:
        fresh, committed = (tmp_path / name).read_bytes(), (GENERATED / name).read_bytes()
        assert fresh == committed, f"clients/authsvc_client/v1/{name} drifted: run `make protos`"


def test_generated_code_never_imports_the_server_package() -> None:
    for path in GENERATED.glob("*_pb2*.py"):
        assert "from authsvc." not in path.read_text(), path.name


# What the proto's `required_scopes` options say, as the caller-authorization tests rely on.
REQUIRED_SCOPES = {
    "TokenService.IssueTokenPair": ["authsvc:issue"],
    "TokenService.Rotate": ["authsvc:issue"],
    "TokenService.Verify": [],
    "TokenService.Introspect": ["authsvc:introspect"],
    "TokenService.RevokeFamily": ["authsvc:revoke"],
    "TokenService.PublishKeys": [],
    "TokenService.ClientCredentials": [],
    "TokenService.Revoke": ["authsvc:revoke"],
    "TokenService.RevokeSubject": ["authsvc:revoke"],
    "TokenService.RevokeClient": ["authsvc:admin"],
    "TokenService.ListSessions": ["authsvc:sessions"],
    "TokenService.WatchRevocations": [],
    "TokenService.RotateKeys": ["authsvc:admin"],
    "AuthorizationService.AuthenticateClient": ["authsvc:gateway"],
    "AuthorizationService.GetClient": ["authsvc:gateway"],
    "AuthorizationService.AuthenticateUser": ["authsvc:gateway"],
    "AuthorizationService.CreateAuthorizationCode": ["authsvc:gateway"],
    "AuthorizationService.DenyAuthorization": ["authsvc:gateway"],
    "AuthorizationService.ExchangeAuthorizationCode": ["authsvc:gateway"],
}


def test_the_scope_table_names_every_method() -> None:
    methods = {
        f"{service.name}.{method.name}"
        for service in pb.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert set(REQUIRED_SCOPES) == methods


@pytest.mark.parametrize(
    ("method", "scopes"), [pytest.param(m, s, id=m) for m, s in REQUIRED_SCOPES.items()]
)
def test_required_scopes_option(method: str, scopes: list[str]) -> None:
    service, name = method.split(".")
    descriptor = pb.DESCRIPTOR.services_by_name[service].methods_by_name[name]
    assert list(descriptor.GetOptions().Extensions[pb.required_scopes]) == scopes
