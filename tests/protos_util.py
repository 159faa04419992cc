"""Test-only protos: compiled with grpc_tools at test time, plus the connectors that implement them.

The ``rich`` service has a request with every kind of field the shim handles (nested, repeated,
map, enum, int64, bytes, double, JsonValue, defaults, allowed values, a secret, a SpiffContext),
and rpcs that sleep, block a thread, fail in every way, or map their result onto the envelope.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import importlib.util
import pathlib
import sys
import threading
import time
import types
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from grpc_tools import protoc
from spiff.connector.v1 import types_pb2 as pb2_types
from starlette.applications import Starlette

from rest_shim import Catalogue, create_app
from server import errors, log
from server._registry import Connector, load_connector
from server.app import create_server
from server.invocation import LocalInvoker
from tests.upstreams import upstream_to

PROTOS = pathlib.Path(__file__).resolve().parent.parent / "protos"
WELL_KNOWN = importlib.resources.files("grpc_tools") / "_proto"

RICH_PROTO = """
syntax = "proto3";

package spiff.connector.richtest.v1;

import "spiff/connector/v1/options.proto";
import "spiff/connector/v1/types.proto";

service RichService {
  option (spiff.connector.v1.connector) = {
    name: "rich"
    description: "A test-only connector with every kind of field."
    auths: {
      name: "OAuth"
      description: "A test OAuth handler."
      parameters: {id: "client_id" type: "str" required: true description: "The OAuth client id."}
      parameters: {id: "scopes"}
    }
  };

  rpc Echo(EchoRequest) returns (EchoResponse) {
    option (spiff.connector.v1.command) = {description: "Returns the request as the command received it."};
  }
  rpc Sleep(SleepRequest) returns (SleepResponse);
  rpc Nap(SleepRequest) returns (SleepResponse);
  rpc Fail(FailRequest) returns (FailResponse);
  rpc Shaped(ShapedRequest) returns (ShapedResponse);
}

enum Colour {
  COLOUR_UNSPECIFIED = 0;
  COLOUR_RED = 1;
  COLOUR_DARK_BLUE = 2;
}

message Inner {
  string label = 1 [(spiff.connector.v1.field) = {required: true}];
  int32 size = 2;
  repeated string tags = 3;
}

message EchoRequest {
  string name = 1 [(spiff.connector.v1.field) = {
    description: "Who is asking."
    required: true
    examples_json: "\\"ada\\""
  }];
  int32 count = 2 [(spiff.connector.v1.field) = {description: "How many."}];
  int64 big = 3;
  uint32 small = 4;
  bool flag = 5;
  double ratio = 6;
  bytes blob = 7;
  Colour colour = 8;
  Inner inner = 9;
  repeated int32 numbers = 10;
  repeated Inner items = 11;
  map<string, int32> scores = 12;
  spiff.connector.v1.JsonValue data = 13;
  optional string greeting = 14 [(spiff.connector.v1.field) = {default_json: "\\"hello\\""}];
  optional int32 retries = 15 [(spiff.connector.v1.field) = {default_json: "3"}];
  optional Colour shade = 16 [(spiff.connector.v1.field) = {default_json: "\\"COLOUR_DARK_BLUE\\""}];
  spiff.connector.v1.JsonValue extra = 17 [(spiff.connector.v1.field) = {default_json: "{\\"a\\": [1, 2]}"}];
  string mode = 18 [(spiff.connector.v1.field) = {allowed_values: "fast" allowed_values: "slow"}];
  string token = 19 [(spiff.connector.v1.field) = {secret: true description: "The API token."}];
  spiff.connector.v1.SpiffContext spiff = 20;
  Tree tree = 21;
}

message Tree {
  string name = 1 [(spiff.connector.v1.field) = {required: true}];
  repeated Tree children = 2;
}

message EchoResponse {
  EchoRequest request = 1;
}

message SleepRequest {
  double seconds = 1;
  string token = 2 [(spiff.connector.v1.field) = {secret: true}];
}

message SleepResponse {
  bool on_main_thread = 1;
  string thread_name = 2;
}

message FailRequest {
  string kind = 1 [(spiff.connector.v1.field) = {required: true}];
  string detail = 2;
  string token = 3 [(spiff.connector.v1.field) = {secret: true}];
}

message FailResponse {
  string detail = 1;
}

message ShapedRequest {
  spiff.connector.v1.JsonValue body = 1;
  int32 status = 2;
  string mimetype = 3;
  string raw = 4;
}

message ShapedResponse {
  spiff.connector.v1.JsonValue body = 1 [(spiff.connector.v1.field) = {role: ENVELOPE_ROLE_BODY}];
  int32 status = 2 [(spiff.connector.v1.field) = {role: ENVELOPE_ROLE_HTTP_STATUS}];
  map<string, string> headers = 3 [(spiff.connector.v1.field) = {role: ENVELOPE_ROLE_HEADERS}];
  string mimetype = 4 [(spiff.connector.v1.field) = {role: ENVELOPE_ROLE_MIMETYPE}];
  string note = 5;
}
"""

SECRET_TEXT = "secret-ish text"

_compiled: dict[str, tuple[types.ModuleType, types.ModuleType]] = {}


def compile_proto(out_dir: pathlib.Path, name: str, source: str) -> tuple[types.ModuleType, types.ModuleType]:
    """Compiles ``<name>.proto`` (messages and gRPC stubs) and imports it; once per session per name.

    ``name`` must be unique in the session: the generated module registers its file in the
    default descriptor pool, which cannot be undone.
    """
    if name in _compiled:
        return _compiled[name]
    proto = out_dir / f"{name}.proto"
    proto.write_text(source)
    args = [
        "grpc_tools.protoc",
        f"-I{out_dir}",
        f"-I{PROTOS}",
        f"-I{WELL_KNOWN}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        proto.name,
    ]
    if protoc.main(args) != 0:
        pytest.fail(f"protoc could not compile {name}.proto")
    modules = (_import(out_dir, f"{name}_pb2"), _import(out_dir, f"{name}_pb2_grpc"))
    _compiled[name] = modules
    return modules


def _import(directory: pathlib.Path, module_name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, directory / f"{module_name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # the _grpc module imports the messages by this name
    spec.loader.exec_module(module)
    return module


def connector_module(name: str, *classes: type) -> types.ModuleType:
    """A module defining exactly ``classes``, as a connector module would."""
    module = types.ModuleType(name)
    for cls in classes:
        cls.__module__ = name
        setattr(module, cls.__name__, cls)
    return module


def rich_servicer(pb2: types.ModuleType, pb2_grpc: types.ModuleType) -> type:
    """The servicer of the rich test service."""

    class RichService(pb2_grpc.RichServiceServicer):  # type: ignore[name-defined,misc]
        async def Echo(self, request: Any, context: Any) -> Any:
            log(f"echo for {request.name}")
            return pb2.EchoResponse(request=request)

        def Sleep(self, request: Any, context: Any) -> Any:
            # Synchronous on purpose: it must run in a worker thread, off the event loop.
            log(f"sleeping {request.seconds:g} s")
            time.sleep(request.seconds)
            current = threading.current_thread()
            return pb2.SleepResponse(
                on_main_thread=current is threading.main_thread(), thread_name=current.name
            )

        async def Nap(self, request: Any, context: Any) -> Any:
            log(f"sleeping {request.seconds:g} s")
            if request.token:
                log(f"holding token {request.token}")  # careless on purpose: the proxy must mask it
            await asyncio.sleep(request.seconds)
            return pb2.SleepResponse(on_main_thread=True, thread_name=threading.current_thread().name)

        async def Fail(self, request: Any, context: Any) -> Any:
            log(f"about to fail with {request.kind}")
            if request.token:
                # A careless connector: the secret goes into a log line, a message and a traceback.
                log(f"calling with token {request.token}")
                if request.kind == "RuntimeError":
                    msg = f"refused token {request.token}"
                    raise RuntimeError(msg)
                msg = f"token {request.token} was refused"
                raise errors.PermissionDenied(msg)
            if request.kind == "RuntimeError":
                raise RuntimeError(SECRET_TEXT)
            if request.kind == "abort":
                await context.abort(grpc.StatusCode.NOT_FOUND, "x")
            if request.kind == "result":
                text = "upstream said 404"
                detail = request.detail or "the upstream body"
                raise errors.NotFound(text, result=pb2.FailResponse(detail=detail))
            if request.kind == "custom_code":
                text = "try later"
                raise errors.Unavailable(text, error_code="UpstreamDown")
            text = f"failed with {request.kind}"
            raise getattr(errors, request.kind)(text)

        async def Shaped(self, request: Any, context: Any) -> Any:
            body = pb2_types.JsonValue(json=request.raw) if request.raw else request.body
            return pb2.ShapedResponse(
                body=body,
                status=request.status,
                headers={"X-Test": "yes"},
                mimetype=request.mimetype,
                note="extra key",
            )

    return RichService


def rich_connector(out_dir: pathlib.Path) -> Connector:
    pb2, pb2_grpc = compile_proto(out_dir, "rich_test", RICH_PROTO)
    return load_connector(connector_module("tests.rich_connector", rich_servicer(pb2, pb2_grpc)))


def rich_modules() -> tuple[types.ModuleType, types.ModuleType]:
    """The compiled rich modules (after ``rich_connector`` has compiled them)."""
    return _compiled["rich_test"]


AppFactory = Callable[..., Starlette]


@contextlib.asynccontextmanager
async def shim_factory(connectors: list[Connector], path: str) -> AsyncIterator[AppFactory]:
    """The shim over ``connectors``: in-process (``local``) or through a real gRPC server (``remote``)."""
    if path == "local":
        factory_catalogue = Catalogue(c.service for c in connectors)
        invoker: Any = LocalInvoker(connectors)

        def local_factory(**kwargs: Any) -> Starlette:
            return create_app(factory_catalogue, invoker, **kwargs)

        yield local_factory
        return
    server, port = await create_server(connectors, "127.0.0.1:0")
    try:
        async with upstream_to(f"127.0.0.1:{port}") as remote:
            catalogue = Catalogue(remote.services)

            def remote_factory(**kwargs: Any) -> Starlette:
                return create_app(catalogue, remote, **kwargs)

            yield remote_factory
    finally:
        await server.stop(None)
