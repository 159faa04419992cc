"""The Node.js server's gRPC surface besides the command: health, reflection (v1alpha as the
proxy reads it, and v1), keepalive pings, the memory limit, settings and shutdown."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from spiff.connector.v1 import options_pb2

from server.schema import command_options, connector_options, field_options
from server.upstreams import read_schema
from tests.node.calls import LONG_LOOP, assert_failure, evaluate
from tests.node.conftest import EXIT_SECONDS, NODE, SERVER, NodeServer, node_server, open_channel

SERVICE = "spiff.connector.jsonata.v1.JsonataService"
LISTED = {
    SERVICE,
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}


def test_health_reports_the_server_and_the_service_serving(jsonata_server: NodeServer) -> None:
    with grpc.insecure_channel(jsonata_server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE):
            response = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as raised:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()


def test_reflection_v1alpha_gives_the_service_with_its_spiff_options(jsonata_server: NodeServer) -> None:
    """As grpc_reflection's client builds a pool: the custom options survive."""
    with grpc.insecure_channel(jsonata_server.target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert set(database.get_services()) == LISTED
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName(SERVICE)
        connector = connector_options(service)
        assert connector.name == "jsonata"
        assert "JSONata" in connector.description
        assert {e.error_code for e in command_options(service.methods_by_name["Evaluate"]).errors} >= {
            "JsonataSyntaxError",
            "JsonataTimeLimit",
            "JsonataDepthLimit",
        }
        assert [s.name for s in connector.settings][:2] == [
            "CONNECTOR_PROXY_JSONATA_TIME_LIMIT_MS",
            "CONNECTOR_PROXY_JSONATA_MAX_DEPTH",
        ]
        request = service.methods_by_name["Evaluate"].input_type
        assert field_options(request.fields_by_name["expression"]).required
        assert not field_options(request.fields_by_name["input"]).required
        result = service.methods_by_name["Evaluate"].output_type.fields_by_name["result"]
        assert field_options(result).role == options_pb2.ENVELOPE_ROLE_BODY
        assert result.message_type is not None
        assert result.message_type.full_name == "spiff.connector.v1.JsonValue"


@pytest.mark.anyio
async def test_the_proxys_reflection_reader_builds_the_schema(jsonata_server: NodeServer) -> None:
    async with open_channel(jsonata_server.target) as channel:
        schema = await read_schema(channel)
    assert schema.service_names == (SERVICE,)
    (service,) = schema.services()
    assert [m.name for m in service.methods] == ["Evaluate"]
    names = {descriptor_pb2.FileDescriptorProto.FromString(raw).name for raw in schema.files}
    assert names == {
        "spiff/connector/jsonata/v1/jsonata.proto",
        "spiff/connector/v1/options.proto",
        "spiff/connector/v1/types.proto",
        "google/protobuf/descriptor.proto",
    }


@pytest.mark.anyio
async def test_reflection_v1_answers_every_kind_of_request(jsonata_server: NodeServer) -> None:
    """grpc.reflection.v1 has v1alpha's messages under another package name."""
    async with open_channel(jsonata_server.target) as channel:
        call = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )(timeout=10)

        async def ask(**fields: object) -> reflection_pb2.ServerReflectionResponse:
            request = reflection_pb2.ServerReflectionRequest(**fields)
            await call.write(request)
            response = await call.read()
            assert isinstance(response, reflection_pb2.ServerReflectionResponse)
            assert response.original_request == request
            return response

        def first_file(response: reflection_pb2.ServerReflectionResponse) -> str:
            raw = response.file_descriptor_response.file_descriptor_proto[0]
            return descriptor_pb2.FileDescriptorProto.FromString(raw).name

        listed = await ask(list_services="")
        assert [s.name for s in listed.list_services_response.service] == sorted(LISTED)
        field = await ask(file_containing_symbol="spiff.connector.jsonata.v1.EvaluateRequest.expression")
        assert first_file(field) == "spiff/connector/jsonata/v1/jsonata.proto"
        value = await ask(file_containing_symbol="spiff.connector.v1.ENVELOPE_ROLE_BODY")
        assert first_file(value) == "spiff/connector/v1/options.proto"
        by_name = await ask(file_by_filename="spiff/connector/v1/types.proto")
        assert first_file(by_name) == "spiff/connector/v1/types.proto"
        extension = await ask(
            file_containing_extension=reflection_pb2.ExtensionRequest(
                containing_type="google.protobuf.ServiceOptions", extension_number=51001
            )
        )
        assert first_file(extension) == "spiff/connector/v1/options.proto"
        numbers = await ask(all_extension_numbers_of_type="google.protobuf.FieldOptions")
        assert list(numbers.all_extension_numbers_response.extension_number) == [51003]
        unknown = await ask(file_containing_symbol="no.such.Symbol")
        assert (unknown.error_response.error_code, unknown.error_response.error_message) == (
            grpc.StatusCode.NOT_FOUND.value[0],
            "not found",
        )
        await call.done_writing()


@pytest.mark.slow
@pytest.mark.anyio
async def test_keepalive_pings_on_an_idle_connection_are_accepted(jsonata_server: NodeServer) -> None:
    """A gRPC core server with default settings answers these pings with GOAWAY too_many_pings
    within about 3 s, which drops the channel to IDLE."""
    options: list[tuple[str, int | str]] = [
        ("grpc.keepalive_time_ms", 100),
        ("grpc.keepalive_timeout_ms", 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    async with open_channel(jsonata_server.target, options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        states = set()
        started = time.monotonic()
        while time.monotonic() - started < 4:
            await asyncio.sleep(0.05)
            states.add(channel.get_state(try_to_connect=False))
        assert states == {grpc.ChannelConnectivity.READY}
        assert (await evaluate(channel, "1 + 1")).value == 2


@pytest.mark.anyio
async def test_running_out_of_memory_ends_the_call_not_the_server(tmp_path) -> None:
    env = {
        "CONNECTOR_PROXY_JSONATA_MAX_MEMORY_MB": "32",
        "CONNECTOR_PROXY_JSONATA_TIME_LIMIT_MS": "20000",
        "CONNECTOR_PROXY_JSONATA_WORKERS": "1",
    }
    with node_server(env, tmp_path / "server.log") as server:
        async with open_channel(server.target) as channel:
            # JSONata's $sort of many numbers needs far more than 32 MiB.
            answer = await evaluate(channel, "$count($sort([1..100000]))")
            assert_failure(answer, grpc.StatusCode.RESOURCE_EXHAUSTED, "JsonataMemoryLimit")
            assert "32 MiB" in answer.details
            assert (await evaluate(channel, "$sum([1, 2])")).value == 3
        assert server.process.poll() is None
        assert "ran out of memory" in server.log_text()


@pytest.mark.slow
@pytest.mark.anyio
async def test_sigterm_lets_a_call_in_flight_finish_then_exits(tmp_path) -> None:
    env = {"CONNECTOR_PROXY_JSONATA_TIME_LIMIT_MS": "1000", "CONNECTOR_PROXY_SHUTDOWN_GRACE": "5"}
    with node_server(env, tmp_path / "server.log") as server:
        async with open_channel(server.target) as channel:
            in_flight = asyncio.create_task(evaluate(channel, LONG_LOOP))
            await asyncio.sleep(0.3)
            server.process.send_signal(signal.SIGTERM)
            answer = await in_flight
        assert_failure(answer, grpc.StatusCode.DEADLINE_EXCEEDED, "JsonataTimeLimit")
        assert server.process.wait(EXIT_SECONDS) == 0
        assert "connector server: stopped" in server.log_text()


@pytest.mark.anyio
async def test_sigterm_cancels_calls_that_outlast_the_grace(tmp_path) -> None:
    env = {"CONNECTOR_PROXY_JSONATA_TIME_LIMIT_MS": "10000", "CONNECTOR_PROXY_SHUTDOWN_GRACE": "0.2"}
    with node_server(env, tmp_path / "server.log") as server:
        async with open_channel(server.target) as channel:
            in_flight = asyncio.create_task(evaluate(channel, LONG_LOOP))
            await asyncio.sleep(0.2)
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            answer = await in_flight
            assert time.monotonic() - signalled < 1.5
        assert answer.code in {grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE}
        assert server.process.wait(EXIT_SECONDS) == 0


def test_sigterm_tells_health_watchers_and_does_not_wait_for_their_streams(tmp_path) -> None:
    """A proxy keeps a health Watch open: shutdown must not wait out the grace for it."""
    with (
        node_server({"CONNECTOR_PROXY_SHUTDOWN_GRACE": "10"}, tmp_path / "server.log") as server,
        grpc.insecure_channel(server.target) as channel,
    ):
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE))
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert [r.status for r in watch] == [health_pb2.HealthCheckResponse.NOT_SERVING]
        assert server.process.wait(EXIT_SECONDS) == 0
        assert time.monotonic() - signalled < 2


def test_a_bad_setting_stops_the_server_naming_it() -> None:
    if NODE is None:
        pytest.skip("node is not on PATH (the Node.js connector server needs Node.js 20+)")
    done = subprocess.run(
        [NODE, str(SERVER)],
        env={"CONNECTOR_PROXY_JSONATA_TIME_LIMIT_MS": "soon", "CONNECTOR_NODE_PORT": "0"},
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == b""
    assert b"CONNECTOR_PROXY_JSONATA_TIME_LIMIT_MS must be an integer" in done.stderr
