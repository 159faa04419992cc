"""Connector discovery: one module per connector, one servicer per module; schema mistakes stop start-up."""

from __future__ import annotations

import sys
import textwrap
import types
from typing import Any

import pytest
from spiff.connector.example.v1 import example_pb2, example_pb2_grpc

from connectors.example import ExampleService
from server._registry import discover, load_connector
from server.schema import MessagePlan, connector_name
from tests.protos_util import compile_proto, connector_module

EXAMPLE_REQUEST: Any = example_pb2.ExampleRequest.DESCRIPTOR

BAD_PROTO = """
syntax = "proto3";

package spiff.connector.badtest.v1;

import "spiff/connector/v1/options.proto";
import "spiff/connector/v1/types.proto";

service NoPresenceService { rpc Go(NoPresenceRequest) returns (Done); }
service WrongTypeService { rpc Go(WrongTypeRequest) returns (Done); }
service BadEnumService { rpc Go(BadEnumRequest) returns (Done); }
service RepeatedService { rpc Go(RepeatedRequest) returns (Done); }
service NotJsonService { rpc Go(NotJsonRequest) returns (Done); }
service BoolForIntService { rpc Go(BoolForIntRequest) returns (Done); }
service NestedService { rpc Go(NestedRequest) returns (Done); }
service GoodService { rpc Go(GoodRequest) returns (Done); }

enum Level {
  LEVEL_UNSPECIFIED = 0;
  LEVEL_HIGH = 1;
}

message Done {}

message NoPresenceRequest {
  string text = 1 [(spiff.connector.v1.field) = {default_json: "\\"a\\""}];
}
message WrongTypeRequest {
  optional int32 count = 1 [(spiff.connector.v1.field) = {default_json: "\\"5\\""}];
}
message BadEnumRequest {
  optional Level level = 1 [(spiff.connector.v1.field) = {default_json: "\\"LEVEL_LOW\\""}];
}
message RepeatedRequest {
  repeated string tags = 1 [(spiff.connector.v1.field) = {default_json: "[]"}];
}
message NotJsonRequest {
  optional string text = 1 [(spiff.connector.v1.field) = {default_json: "a"}];
}
message BoolForIntRequest {
  optional int64 count = 1 [(spiff.connector.v1.field) = {default_json: "true"}];
}
message Inner {
  string text = 1 [(spiff.connector.v1.field) = {default_json: "\\"a\\""}];
}
message NestedRequest {
  Inner inner = 1;
}
message GoodInner {
  optional int32 size = 1 [(spiff.connector.v1.field) = {default_json: "7"}];
}
message GoodRequest {
  optional double ratio = 1 [(spiff.connector.v1.field) = {default_json: "1"}];
  optional Level level = 2 [(spiff.connector.v1.field) = {default_json: "\\"LEVEL_HIGH\\""}];
  spiff.connector.v1.JsonValue data = 3 [(spiff.connector.v1.field) = {default_json: "{\\"a\\": 1}"}];
  GoodInner inner = 4;
  repeated GoodInner inners = 5;
  map<string, GoodInner> by_name = 6;
  GoodInner unset = 7;
  spiff.connector.v1.JsonValue plain = 8;
}
"""

BAD_DEFAULTS = {
    "NoPresence": "needs a field with presence",
    "WrongType": "does not fit",
    "BadEnum": "is not a value of",
    "Repeated": "needs a field with presence",
    "NotJson": "Expecting value",
    "BoolForInt": "does not fit",
    "Nested": "needs a field with presence",
}


@pytest.fixture(scope="module")
def bad_protos(tmp_path_factory: pytest.TempPathFactory) -> tuple[types.ModuleType, types.ModuleType]:
    return compile_proto(tmp_path_factory.mktemp("protos"), "bad_defaults_test", BAD_PROTO)


def servicer_for(pb2_grpc: types.ModuleType, service: str) -> type:
    base = getattr(pb2_grpc, f"{service}ServiceServicer")

    async def go(self: Any, request: Any, context: Any) -> Any:
        raise NotImplementedError

    return type(f"{service}Service", (base,), {"Go": go})


def test_discovery_finds_the_example_connector():
    found = {c.name: c for c in discover(["connectors"])}
    assert "example" in found
    example = found["example"]
    assert example.service.full_name == "spiff.connector.example.v1.ExampleService"
    assert isinstance(example.servicer, ExampleService)
    assert [c.id for c in example.commands] == ["example/Example", "example/Delay"]
    command = example.commands[0]
    assert command.full_method == "/spiff.connector.example.v1.ExampleService/Example"
    assert command.request_class.DESCRIPTOR.full_name == "spiff.connector.example.v1.ExampleRequest"
    assert command.is_async


def test_module_without_a_servicer_fails():
    with pytest.raises(RuntimeError, match="exactly one servicer class, found 0"):
        load_connector(connector_module("tests.no_servicer"))


def test_module_with_two_servicers_fails():
    class One(example_pb2_grpc.ExampleServiceServicer):
        async def Example(self, request: Any, context: Any) -> Any:
            return example_pb2.ExampleResponse()

        async def Delay(self, request: Any, context: Any) -> Any:
            return example_pb2.DelayResponse()

    class Two(example_pb2_grpc.ExampleServiceServicer):
        async def Example(self, request: Any, context: Any) -> Any:
            return example_pb2.ExampleResponse()

        async def Delay(self, request: Any, context: Any) -> Any:
            return example_pb2.DelayResponse()

    with pytest.raises(RuntimeError, match="exactly one servicer class, found 2"):
        load_connector(connector_module("tests.two_servicers", One, Two))


def test_imported_servicer_classes_do_not_count():
    class Own(example_pb2_grpc.ExampleServiceServicer):
        def Example(self, request: Any, context: Any) -> Any:
            return example_pb2.ExampleResponse(message="own")

        def Delay(self, request: Any, context: Any) -> Any:
            return example_pb2.DelayResponse()

    module = connector_module("tests.imports_a_servicer", Own)
    module.ExampleService = ExampleService  # type: ignore[attr-defined]
    connector = load_connector(module)
    assert isinstance(connector.servicer, Own)
    assert not connector.commands[0].is_async


def test_unimplemented_rpc_fails():
    class Lazy(example_pb2_grpc.ExampleServiceServicer):
        pass

    with pytest.raises(RuntimeError, match="does not implement Example"):
        load_connector(connector_module("tests.unimplemented", Lazy))


@pytest.mark.parametrize(("service", "problem"), BAD_DEFAULTS.items(), ids=list(BAD_DEFAULTS))
def test_bad_default_fails_at_start_up(bad_protos, service, problem):
    _, pb2_grpc = bad_protos
    with pytest.raises(ValueError, match=problem):
        load_connector(
            connector_module(f"tests.bad_default_{service.lower()}", servicer_for(pb2_grpc, service))
        )


def test_good_defaults_load_and_apply(bad_protos):
    pb2, pb2_grpc = bad_protos
    connector = load_connector(connector_module("tests.good_defaults", servicer_for(pb2_grpc, "Good")))
    request = pb2.GoodRequest()
    connector.commands[0].plan.apply_defaults(request)
    assert request.ratio == 1.0
    assert request.level == pb2.LEVEL_HIGH
    assert request.data.json == '{"a":1}'


def test_nested_defaults_apply_inside_present_messages(bad_protos):
    pb2, pb2_grpc = bad_protos
    connector = load_connector(connector_module("tests.nested_defaults", servicer_for(pb2_grpc, "Good")))
    request = pb2.GoodRequest(
        inner=pb2.GoodInner(),
        inners=[pb2.GoodInner(), pb2.GoodInner(size=0)],
        by_name={"a": pb2.GoodInner()},
    )
    connector.commands[0].plan.apply_defaults(request)
    assert request.inner.size == 7
    assert [i.size for i in request.inners] == [7, 0]
    assert request.by_name["a"].size == 7
    assert not request.HasField("unset"), "absent messages are not created to hold defaults"


def test_plans_only_walk_nested_messages_with_something_to_check(bad_protos):
    pb2, _ = bad_protos
    plan = MessagePlan(pb2.GoodRequest.DESCRIPTOR)
    assert [field.name for field, _ in plan.nested] == ["inner", "inners", "by_name", "unset"]


def test_connector_name_defaults_to_the_package_segment_before_the_version(bad_protos):
    pb2, _ = bad_protos
    assert connector_name(pb2.DESCRIPTOR.services_by_name["GoodService"]) == "badtest"
    assert connector_name(example_pb2.DESCRIPTOR.services_by_name["ExampleService"]) == "example"


def test_required_without_presence_means_non_empty():
    plan = MessagePlan(EXAMPLE_REQUEST)
    assert [v.field for v in plan.missing(example_pb2.ExampleRequest())] == ["message"]
    assert plan.missing(example_pb2.ExampleRequest(message="x")) == []


@pytest.fixture
def connector_package(tmp_path, monkeypatch):
    """A throwaway connector package on sys.path; its modules are dropped from sys.modules afterwards."""
    name = f"pkg_{tmp_path.name.replace('-', '_')}"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, root
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[module]


SERVICER_SOURCE = textwrap.dedent(
    """
    from spiff.connector.example.v1 import example_pb2, example_pb2_grpc

    class Service(example_pb2_grpc.ExampleServiceServicer):
        async def Example(self, request, context):
            return example_pb2.ExampleResponse(message=__name__)

        async def Delay(self, request, context):
            return example_pb2.DelayResponse(message=__name__)
    """
)


def test_discover_skips_private_modules(connector_package):
    name, root = connector_package
    (root / "echo.py").write_text(SERVICER_SOURCE)
    (root / "_helpers.py").write_text("raise RuntimeError('private modules are never imported')\n")
    assert [c.name for c in discover([name])] == ["example"]


def test_discover_refuses_two_connectors_with_one_name(connector_package):
    name, root = connector_package
    (root / "first.py").write_text(SERVICER_SOURCE)
    (root / "second.py").write_text(SERVICER_SOURCE)
    with pytest.raises(RuntimeError, match="two services use the connector name 'example'"):
        discover([name])


def test_discover_refuses_a_module_without_a_servicer(connector_package):
    name, root = connector_package
    (root / "empty.py").write_text("X = 1\n")
    with pytest.raises(RuntimeError, match=rf"{name}\.empty must define exactly one servicer"):
        discover([name])


def test_a_connector_can_be_a_package_with_private_submodules(connector_package):
    name, root = connector_package
    package = root / "echo"
    package.mkdir()
    (package / "_service.py").write_text(SERVICER_SOURCE)
    (package / "__init__.py").write_text("from ._service import Service as Service\n")
    (connector,) = discover([name])
    assert connector.name == "example"
    assert type(connector.servicer).__module__ == f"{name}.echo._service"


def test_a_package_still_needs_exactly_one_servicer(connector_package):
    name, root = connector_package
    package = root / "echo"
    package.mkdir()
    (package / "__init__.py").write_text("X = 1\n")
    with pytest.raises(RuntimeError, match=rf"{name}\.echo must define exactly one servicer"):
        discover([name])
