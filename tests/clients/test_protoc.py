"""`python -m authsvc_client.protoc`: code generation for protos that use required_scopes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import EXAMPLES

GENERATED = ("notes_pb2.py", "notes_pb2.pyi", "notes_pb2_grpc.py")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "authsvc_client.protoc",
            f"-I{EXAMPLES / 'protos'}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(EXAMPLES / "protos" / "notes.proto"),
        ],
        check=True,
        capture_output=True,
    )
    return out


@pytest.mark.parametrize("name", GENERATED)
def test_the_examples_generated_code_is_what_the_tool_writes(generated: Path, name: str) -> None:
    assert (generated / name).read_text() == (EXAMPLES / name).read_text()


def test_the_authsvc_import_points_at_the_clients_package(generated: Path) -> None:
    text = (generated / "notes_pb2.py").read_text()
    assert "from authsvc_client.v1 import authsvc_pb2" in text
    assert "from authsvc.v1 import" not in text


def test_protoc_errors_are_reported(tmp_path: Path) -> None:
    broken = tmp_path / "broken.proto"
    broken.write_text('syntax = "proto3";\nmessage {')
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "authsvc_client.protoc",
            f"-I{tmp_path}",
            f"--python_out={tmp_path}",
            str(broken),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0
    assert "broken.proto" in run.stderr
