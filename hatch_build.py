"""Generates the Python gRPC client code from protos/ into clients/python/ at build time."""

from __future__ import annotations

import importlib.resources
import pathlib
import sys
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent
PROTOS = ROOT / "protos"
OUT = ROOT / "clients" / "python"


def generate() -> None:
    """Compile every .proto under protos/ with grpcio-tools (messages, stubs and .pyi)."""
    from grpc_tools import protoc

    OUT.mkdir(parents=True, exist_ok=True)
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={OUT}",
        f"--pyi_out={OUT}",
        f"--grpc_python_out={OUT}",
        *sources,
    ]
    if protoc.main(args) != 0:
        msg = "protoc failed; see the messages above"
        raise RuntimeError(msg)


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # pragma: no cover - only `python hatch_build.py` runs without hatchling
    BuildHookInterface = object


class CustomBuildHook(BuildHookInterface):  # type: ignore[misc]
    """Runs the generator before hatchling builds a wheel or an editable install."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        generate()


if __name__ == "__main__":
    generate()
    sys.exit(0)
