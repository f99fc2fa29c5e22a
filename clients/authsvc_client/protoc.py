"""Generate Python code for a service whose proto uses `authsvc.v1.required_scopes`.

    python -m authsvc_client.protoc -I protos --python_out=. --grpc_python_out=. protos/notes.proto

Takes protoc's own arguments (grpcio-tools must be installed, as for any gRPC codegen) and adds
two things: `authsvc/v1/authsvc.proto` is importable without a copy of it (its descriptor ships
in this package), and the generated `from authsvc.v1 import authsvc_pb2` becomes
`from authsvc_client.v1 import authsvc_pb2`, where that module lives once installed.
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from google.protobuf import descriptor_pb2, timestamp_pb2

from .v1 import authsvc_pb2

__all__ = ["main"]

_IMPORT = re.compile(r"^from authsvc\.v1 import ", re.MULTILINE)
_OUTPUT_FLAGS = ("--python_out=", "--grpc_python_out=", "--pyi_out=")
_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def main(argv: Sequence[str] | None = None) -> int:
    """Run protoc with `argv` (protoc's arguments); return its exit status."""
    # grpcio-tools: a codegen tool, not a runtime dependency (and untyped).
    from grpc_tools import protoc  # type: ignore[import-untyped]

    args = list(sys.argv[1:] if argv is None else argv)
    includes = [a[2:] for a in args if a.startswith("-I") and len(a) > 2]
    grpc_include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as scratch:
        descriptors = Path(scratch) / "authsvc.pb"
        descriptors.write_bytes(_descriptor_set())
        status = protoc.main(
            ["protoc", f"--descriptor_set_in={descriptors}", *args, f"-I{grpc_include}"]
        )
    if status == 0:
        for path in _generated(args, includes):
            _rewrite(path)
    return int(status)


def _descriptor_set() -> bytes:
    files = descriptor_pb2.FileDescriptorSet()
    for module in (descriptor_pb2, timestamp_pb2, authsvc_pb2):
        module.DESCRIPTOR.CopyToProto(files.file.add())
    return files.SerializeToString()


def _generated(args: list[str], includes: list[str]) -> list[Path]:
    outputs = {a.split("=", 1)[1] for a in args if a.startswith(_OUTPUT_FLAGS)}
    protos = [Path(a) for a in args if a.endswith(".proto") and not a.startswith("-")]
    paths: list[Path] = []
    for proto in protos:
        relative = _relative_to_include(proto, includes)
        stem = relative.with_suffix("")
        for out in outputs:
            paths.extend(Path(out) / f"{stem}{suffix}" for suffix in _SUFFIXES)
    return [p for p in paths if p.is_file()]


def _relative_to_include(proto: Path, includes: list[str]) -> Path:
    for include in includes:
        if proto.resolve().is_relative_to(Path(include).resolve()):
            return proto.resolve().relative_to(Path(include).resolve())
    return proto


def _rewrite(path: Path) -> None:
    text = path.read_text()
    fixed = _IMPORT.sub("from authsvc_client.v1 import ", text)
    if fixed != text:
        path.write_text(fixed)


if __name__ == "__main__":
    sys.exit(main())
