"""The shim fronts any gRPC server that serves the protos with reflection, not only ours.

A connector written in another language is such a server: it knows nothing of this project's
server package (no ErrorInfo, no spiff-log trailers), so the shim must work from the status
and the descriptors alone. Here a bare grpc.aio server with the generated servicer plays it.
"""

from __future__ import annotations

import grpc
import pytest
from grpc_reflection.v1alpha import reflection
from spiff.connector.example.v1 import example_pb2, example_pb2_grpc

from rest_shim import Catalogue, create_app
from tests.conftest import client_for
from tests.upstreams import upstream_to

pytestmark = pytest.mark.anyio


class PlainExample(example_pb2_grpc.ExampleServiceServicer):
    async def Example(self, request, context):
        if request.message == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        return example_pb2.ExampleResponse(connector_response="plain", message=request.message.upper())


@pytest.fixture
async def foreign_proxy(anyio_backend):
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    example_pb2_grpc.add_ExampleServiceServicer_to_server(PlainExample(), server)  # type: ignore[no-untyped-call]
    service = example_pb2.DESCRIPTOR.services_by_name["ExampleService"].full_name
    reflection.enable_server_reflection([service, reflection.SERVICE_NAME], server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with upstream_to(f"127.0.0.1:{port}") as invoker:
            catalogue = Catalogue(invoker.services)
            async with client_for(create_app(catalogue, invoker)) as client:
                yield client
    finally:
        await server.stop(None)


async def test_catalogue_comes_from_reflection_with_the_schema_options(foreign_proxy):
    commands = (await foreign_proxy.get("/v1/commands")).json()
    assert [c["id"] for c in commands] == ["example/Example", "example/Delay"]
    assert commands[1]["long_running"] is True  # the command option travels by reflection too
    assert commands[0]["parameters"][0]["required"] is True
    assert commands[0]["parameters"][0]["description"] == "The text to echo."


async def test_success_is_the_v2_envelope(foreign_proxy):
    response = await foreign_proxy.post("/v1/do/example/Example", json={"message": "hi"})
    assert response.status_code == 200
    assert response.json()["command_response"]["body"] == {"connector_response": "plain", "message": "HI"}
    assert response.json()["spiff__logs"] == []


async def test_required_parameters_are_checked_by_the_shim(foreign_proxy):
    response = await foreign_proxy.post("/v1/do/example/Example", json={})
    assert response.status_code == 400
    assert response.json()["error"]["error_code"] == "InvalidParameters"


async def test_a_bare_grpc_status_becomes_an_error_code_named_after_it(foreign_proxy):
    response = await foreign_proxy.post("/v1/do/example/Example", json={"message": "missing"})
    assert response.status_code == 404
    assert response.json()["error"] == {"error_code": "NotFound", "message": "no such thing"}
    assert response.json()["command_response"]["http_status"] == 404
