"""A connector whose proto changes between versions, served by ``python -m connector_proxy
--grpc-only`` in its own process: the upstream whose schema a proxy must follow.

Each version lives in a directory of its own (the compiled proto and the connector package), put
on the process's ``PYTHONPATH``; restarting the server with another version is a new deployment.
"""

from __future__ import annotations

import importlib.resources
import pathlib
import subprocess
import sys

PROTOS = pathlib.Path(__file__).resolve().parents[2] / "protos"
WELL_KNOWN = importlib.resources.files("grpc_tools") / "_proto"
CONNECTOR_PACKAGE = "evolving_connectors"

_PROTO = """
syntax = "proto3";

package spiff.connector.evolving.v1;

import "spiff/connector/v1/options.proto";

service EvolvingService {
  option (spiff.connector.v1.connector) = {name: "evolving"};

  rpc Greet(GreetRequest) returns (GreetResponse);
  %(more_rpcs)s
}

message GreetRequest {
  string name = 1 [(spiff.connector.v1.field) = {required: true}];
  %(more_fields)s
}

message GreetResponse {
  string greeting = 1;
}
"""

_CONNECTOR = """
from spiff.connector.evolving.v1 import evolving_pb2, evolving_pb2_grpc


class Evolving(evolving_pb2_grpc.EvolvingServiceServicer):
    async def Greet(self, request, context):
        return evolving_pb2.GreetResponse(greeting="hello " + request.name + %(suffix)s)
%(more_methods)s
"""

VERSIONS = {
    1: {"more_rpcs": "", "more_fields": "", "suffix": "''", "more_methods": ""},
    # Version 2 adds a parameter to Greet and a command.
    2: {
        "more_rpcs": "rpc Farewell(GreetRequest) returns (GreetResponse);",
        "more_fields": "string punctuation = 2;",
        "suffix": "request.punctuation",
        "more_methods": """
    async def Farewell(self, request, context):
        return evolving_pb2.GreetResponse(greeting="goodbye " + request.name)
""",
    },
}


def build(root: pathlib.Path, version: int) -> pathlib.Path:
    """Writes version ``version`` under ``root`` and returns the directory for ``PYTHONPATH``."""
    out = root / f"v{version}"
    source = out / "src" / "spiff" / "connector" / "evolving" / "v1"
    source.mkdir(parents=True)
    (source / "evolving.proto").write_text(_PROTO % VERSIONS[version])
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{out / 'src'}",
            f"-I{PROTOS}",
            f"-I{WELL_KNOWN}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "spiff/connector/evolving/v1/evolving.proto",
        ],
        check=True,
    )
    package = out / CONNECTOR_PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "evolving.py").write_text(_CONNECTOR % VERSIONS[version])
    return out
