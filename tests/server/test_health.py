"""Health on the gRPC port: Check, Watch, and a drain that lets a watched server stop at once."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.app import create_server
from server.health import Health

pytestmark = pytest.mark.anyio

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_a_drained_server_ends_its_watches_and_stops_without_waiting_out_the_grace(connectors):
    health = Health()
    server, port = await create_server(connectors, "127.0.0.1:0", health=health)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        assert (await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)).status == SERVING
        unknown = stub.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unknown
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert (await watch.read()).status == SERVING
        started = time.monotonic()
        await health.drain()
        await health.set("", SERVING)  # ignored: a draining server stays NOT_SERVING
        assert (await watch.read()).status == NOT_SERVING
        assert await watch.read() is grpc.aio.EOF
        assert await watch.code() == grpc.StatusCode.OK
        await server.stop(10)
    assert time.monotonic() - started < 2
