"""The grpc.aio server over a real channel: stubs, reflection, health, rich errors, deadlines, shutdown."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from spiff.connector.example.v1 import example_pb2, example_pb2_grpc

from server._registry import Connector
from server.app import create_server
from server.wire import LOG_METADATA_KEY, STATUS_DETAILS_KEY
from tests.protos_util import SECRET_TEXT, rich_modules

pytestmark = pytest.mark.anyio

EXAMPLE_SERVICE = "spiff.connector.example.v1.ExampleService"
RICH_SERVICE = "spiff.connector.richtest.v1.RichService"


@pytest.fixture
def rich(rich_connector: Connector) -> Any:
    return rich_modules()[0]


@pytest.fixture
def rich_stub(rich_channel: grpc.aio.Channel, rich_connector: Connector) -> Any:
    return rich_modules()[1].RichServiceStub(rich_channel)


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    values = [v for k, v in error.trailing_metadata() or () if k == STATUS_DETAILS_KEY]
    assert len(values) == 1, "exactly one google.rpc.Status in the trailers"
    return status_pb2.Status.FromString(values[0])


def unpack(status: status_pb2.Status, message_class: Any) -> list[Any]:
    found = []
    for detail in status.details:
        if detail.Is(message_class.DESCRIPTOR):
            message = message_class()
            detail.Unpack(message)
            found.append(message)
    return found


def logs_of(metadata: Any) -> list[str]:
    return [v.decode() for k, v in metadata or () if k == LOG_METADATA_KEY]


async def test_generated_stub_calls_the_example(grpc_channel):
    stub = example_pb2_grpc.ExampleServiceStub(grpc_channel)  # type: ignore[no-untyped-call]
    response = await stub.Example(example_pb2.ExampleRequest(message="hi"), timeout=5)
    assert response == example_pb2.ExampleResponse(
        connector_response="You passed the example connector: 'hi'. Have a good day!", message="hi"
    )


def _reflected_services(target: str) -> tuple[list[str], list[str]]:
    with grpc.insecure_channel(target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = list(database.get_services())
        example_file = database.FindFileContainingSymbol(EXAMPLE_SERVICE)
        return services, [m.name for m in example_file.message_type]


async def test_reflection_lists_the_services(grpc_server):
    services, example_messages = await asyncio.to_thread(_reflected_services, grpc_server[1])
    assert EXAMPLE_SERVICE in services
    assert "grpc.health.v1.Health" in services
    assert "grpc.reflection.v1alpha.ServerReflection" in services
    assert example_messages == ["ExampleRequest", "ExampleResponse", "DelayRequest", "DelayResponse"]


@pytest.mark.parametrize("service", ["", EXAMPLE_SERVICE])
async def test_health_check_is_serving(grpc_channel, service):
    stub = health_pb2_grpc.HealthStub(grpc_channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_check_of_an_unknown_service_is_not_found(grpc_channel):
    stub = health_pb2_grpc.HealthStub(grpc_channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_missing_required_field_is_invalid_argument_with_details(grpc_channel):
    stub = example_pb2_grpc.ExampleServiceStub(grpc_channel)  # type: ignore[no-untyped-call]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Example(example_pb2.ExampleRequest(), timeout=5)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "message" in (error.details() or "")
    status = rich_status(error)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    [info] = unpack(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("InvalidParameters", "spiff.connector")
    [bad_request] = unpack(status, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [("message", "is required")]


async def test_unknown_method_is_unimplemented(grpc_channel):
    call = grpc_channel.unary_unary(
        f"/{EXAMPLE_SERVICE}/NoSuchMethod",
        request_serializer=example_pb2.ExampleRequest.SerializeToString,
        response_deserializer=example_pb2.ExampleResponse.FromString,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(example_pb2.ExampleRequest(message="hi"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_defaults_and_logs_for_grpc_callers(rich, rich_stub):
    call = rich_stub.Echo(rich.EchoRequest(name="ada"), timeout=5)
    response = await call
    assert (response.request.greeting, response.request.retries, response.request.shade) == (
        "hello",
        3,
        rich.COLOUR_DARK_BLUE,
    )
    assert logs_of(await call.trailing_metadata()) == ["echo for ada"]


async def test_nested_required_fields_are_checked_for_grpc_callers(rich, rich_stub):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rich_stub.Echo(
            rich.EchoRequest(name="a", items=[rich.Inner(label="x"), rich.Inner()]), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [bad_request] = unpack(rich_status(caught.value), error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["items[1].label"]


async def test_unexpected_exception_is_internal_and_leaks_nothing(rich, rich_stub):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rich_stub.Fail(rich.FailRequest(kind="RuntimeError"), timeout=5)
    error = caught.value
    assert error.code() == grpc.StatusCode.INTERNAL
    assert SECRET_TEXT not in (error.details() or "")
    [info] = unpack(rich_status(error), error_details_pb2.ErrorInfo)
    assert info.reason == "Internal"
    assert logs_of(error.trailing_metadata()) == ["about to fail with RuntimeError"]


async def test_direct_abort_keeps_its_code_and_carries_error_info_and_logs(rich, rich_stub, caplog):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rich_stub.Fail(rich.FailRequest(kind="abort"), timeout=5)
    error = caught.value
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "x")
    [info] = unpack(rich_status(error), error_details_pb2.ErrorInfo)
    assert info.reason == "NotFound"
    assert logs_of(error.trailing_metadata()) == ["about to fail with abort"]
    assert "Abort already called" not in caplog.text


async def test_partial_result_travels_in_the_status(rich, rich_stub):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rich_stub.Fail(rich.FailRequest(kind="result"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert unpack(rich_status(caught.value), rich.FailResponse) == [
        rich.FailResponse(detail="the upstream body")
    ]


async def test_sync_method_runs_off_the_event_loop(rich, rich_stub):
    response = await rich_stub.Sleep(rich.SleepRequest(seconds=0), timeout=5)
    assert response.on_main_thread is False


async def test_client_deadline_shorter_than_the_command(rich, rich_stub):
    start = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rich_stub.Nap(rich.SleepRequest(seconds=2), timeout=0.2)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - start < 1.5


async def test_stop_with_grace_lets_an_in_flight_call_finish(rich, rich_connector):
    server, port = await create_server([rich_connector], "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = rich_modules()[1].RichServiceStub(channel)
            in_flight = asyncio.ensure_future(stub.Nap(rich.SleepRequest(seconds=0.4), timeout=5))
            await asyncio.sleep(0.15)
            assert not in_flight.done()
            start = time.monotonic()
            await server.stop(5)
            assert time.monotonic() - start < 2, "stop returns once the in-flight call is done"
            response = await in_flight
            assert response.on_main_thread is True
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Nap(rich.SleepRequest(seconds=0), timeout=1)
    finally:
        await server.stop(None)


async def test_a_port_that_cannot_be_bound_fails_loudly(rich_connector, grpc_server):
    taken = grpc_server[1]
    with pytest.raises(OSError, match="could not bind"):
        await create_server([rich_connector], taken, extra_options=[("grpc.so_reuseport", 0)])
