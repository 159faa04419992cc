"""What the security tests share: following an upstream without requiring it to come up, and
calling ExampleService on any channel or upstream."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from spiff.connector.example.v1 import example_pb2, example_pb2_grpc

from server.upstreams import Upstream, UpstreamConfig

EXAMPLE_SERVICE = "spiff.connector.example.v1.ExampleService"
EXAMPLE_METHOD = f"/{EXAMPLE_SERVICE}/Example"
EXPECTED = example_pb2.ExampleResponse(
    connector_response="You passed the example connector: 'hi'. Have a good day!", message="hi"
)
Metadata = Sequence[tuple[str, str]] | None


@contextlib.asynccontextmanager
async def following(config: UpstreamConfig, *, wait: float = 10.0) -> AsyncIterator[Upstream]:
    """A started upstream after its first discovery, whether it succeeded or not."""
    upstream = Upstream(config)
    await upstream.start()
    try:
        await upstream.first_attempt(wait)
        yield upstream
    finally:
        await upstream.close()


async def call_example(channel: grpc.aio.Channel, metadata: Metadata = None) -> Any:
    stub = example_pb2_grpc.ExampleServiceStub(channel)  # type: ignore[no-untyped-call]
    return await stub.Example(example_pb2.ExampleRequest(message="hi"), metadata=metadata, timeout=5)


async def invoke_example(upstream: Upstream) -> example_pb2.ExampleResponse:
    """Calls Example through the upstream; its response, as the generated class."""
    reply = await upstream.invoke(EXAMPLE_METHOD, example_pb2.ExampleRequest(message="hi"), timeout=5)
    assert reply.failure is None, reply.failure
    assert reply.response is not None
    return example_pb2.ExampleResponse.FromString(reply.response.SerializeToString())


async def list_services(channel: grpc.aio.Channel, metadata: Metadata = None) -> list[str]:
    """The services a server lists by reflection, asked with ``metadata``."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata, timeout=5
    )
    names: list[str] = []
    async for response in call:
        names += [s.name for s in response.list_services_response.service]
    return names
