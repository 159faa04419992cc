"""The generated code matches the installed runtime and the protos it came from."""

from __future__ import annotations

import pathlib

import grpc
from spiff.connector.example.v1 import example_pb2_grpc

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3])


def test_grpc_runtime_is_not_older_than_the_generator():
    assert _version(grpc.__version__) >= _version(example_pb2_grpc.GRPC_GENERATED_VERSION)


def test_every_proto_has_generated_python():
    protos = sorted(p.relative_to(ROOT / "protos") for p in (ROOT / "protos").rglob("*.proto"))
    assert protos
    for proto in protos:
        stem = ROOT / "clients" / "python" / proto.with_suffix("")
        generated = stem.with_name(stem.name + "_pb2.py")
        assert generated.exists(), f"{proto} has no generated module; run make gen"
        assert generated.stat().st_mtime >= (ROOT / "protos" / proto).stat().st_mtime, f"{generated} is stale"
