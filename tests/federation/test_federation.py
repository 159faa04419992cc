"""Local connectors and upstreams as one proxy, in-process with real gRPC servers: one catalogue
kept current, who owns a connector name, and ``GET /v1/upstreams``."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from spiff.connector.example.v1 import example_pb2, example_pb2_grpc

from connector_proxy._processes import federation_for
from server._registry import Connector
from server.admission import Admission
from server.app import create_server
from server.settings import Settings
from server.upstreams import UpstreamState
from server.wire import LOG_METADATA_KEY, STATUS_DETAILS_KEY
from tests.busy import one_call_at_a_time
from tests.conftest import until
from tests.ports import free_port
from tests.upstreams import proxy_fronting

pytestmark = pytest.mark.anyio


def by_name(connectors: list[Connector], *names: str) -> list[Connector]:
    return [c for c in connectors if c.name in names]


async def test_a_late_upstream_joins_the_catalogue_and_a_clash_keeps_the_first_owner(
    connectors, tmp_path, caplog
):
    port = free_port()
    target = f"127.0.0.1:{port}"
    async with proxy_fronting(f"up={target}", tmp_path, by_name(connectors, "example")) as client:
        before = (await client.get("/v1/commands")).json()
        assert {c["id"] for c in before} == {"example/Example", "example/Delay"}
        assert (await client.get("/v1/upstreams")).json()["upstreams"][0]["state"] == "unavailable"

        # The upstream comes up offering example (already local) and typeahead.
        server, _ = await create_server(by_name(connectors, "example", "typeahead"), target)
        try:
            with caplog.at_level(logging.ERROR):

                async def listed() -> set[str]:
                    return {c["id"] for c in (await client.get("/v1/commands")).json()}

                deadline = time.monotonic() + 10
                while "typeahead/Search" not in await listed():
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
            upstream = (await client.get("/v1/upstreams")).json()["upstreams"][0]
            assert upstream["state"] == "ready"
            assert upstream["refused"] == ["example"]
            assert upstream["commands"] == ["typeahead/Search"]
            assert "offered by both the local connectors and upstream up" in caplog.text
            assert "the local connectors keeps it" in caplog.text
            # The local example still answers, in-process; typeahead goes to the upstream.
            echo = await client.post("/v1/do/example/Example", json={"message": "local"})
            assert echo.json()["command_response"]["body"]["message"] == "local"
            found = await client.get("/v1/typeahead/countries", params={"prefix": "Fra"})
            assert found.status_code == 200
            assert any(item.get("name") == "France" for item in found.json())
            # The OpenAPI document follows the catalogue.
            paths = (await client.get("/openapi.json")).json()["paths"]
            assert "/v1/do/typeahead/Search" in paths
        finally:
            await server.stop(None)


async def test_upstreams_need_the_api_key(connectors, tmp_path):
    target = f"up=127.0.0.1:{free_port()}"
    async with proxy_fronting(target, tmp_path, CONNECTOR_PROXY_API_KEY="key") as client:
        assert (await client.get("/v1/upstreams")).status_code == 401
        answer = await client.get("/v1/upstreams", headers={"Spiff-Connector-Proxy-Api-Key": "key"})
        assert answer.status_code == 200
        assert answer.json()["upstreams"][0]["name"] == "up"


async def test_a_dead_upstream_answers_at_once_and_recovers_without_a_restart(connectors, tmp_path):
    port = free_port()
    target = f"127.0.0.1:{port}"
    server, _ = await create_server(by_name(connectors, "typeahead"), target)
    settings = Settings.from_env({"CONNECTOR_PROXY_GRPC_TARGETS": f"up={target}"})
    federation = federation_for(settings, [])
    await federation.start()
    try:
        (upstream,) = federation.upstreams
        assert upstream.state is UpstreamState.READY
        await server.stop(None)
        await until(lambda: upstream.state is UpstreamState.UNAVAILABLE, 2)
        method = "/spiff.connector.typeahead.v1.TypeaheadService/Search"
        request_class = next(iter(upstream.services)).methods_by_name["Search"].input_type
        request = message_factory.GetMessageClass(request_class)(category="countries", prefix="Fr")
        started = time.monotonic()
        reply = await federation.invoke(method, request, 5.0)
        assert time.monotonic() - started < 0.1
        assert reply.failure is not None
        assert reply.failure.code == grpc.StatusCode.UNAVAILABLE
        assert reply.failure.error_code == "ConnectorUnavailable"
        assert "up (grpc://127.0.0.1:" in reply.failure.message
        # Back on the same port: the same call succeeds, the federation untouched.
        server, _ = await create_server(by_name(connectors, "typeahead"), target)
        await until(lambda: upstream.state is UpstreamState.READY, 10)
        reply = await federation.invoke(method, request, 5.0)
        assert reply.failure is None
    finally:
        await federation.close(None)
        await server.stop(None)


async def test_the_grpc_port_passes_an_upstreams_failure_through_unchanged(connectors, tmp_path):
    """A failing upstream command called on the proxy's gRPC port: the same code, message,
    ErrorInfo, BadRequest and log lines as from the upstream itself."""
    upstream_server, upstream_port = await create_server(by_name(connectors, "example"), "127.0.0.1:0")
    settings = Settings.from_env({"CONNECTOR_PROXY_GRPC_TARGETS": f"up=127.0.0.1:{upstream_port}"})
    federation = federation_for(settings, [])
    await federation.start()
    proxy_server, proxy_port = await create_server([], "127.0.0.1:0", federation=federation)
    try:
        failures = []
        for port in (upstream_port, proxy_port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = example_pb2_grpc.ExampleServiceStub(channel)  # type: ignore[no-untyped-call]
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.Delay(example_pb2.DelayRequest(seconds=-1, message="m"), timeout=5)
            failures.append(caught.value)
        direct, forwarded = failures
        assert forwarded.code() == direct.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert forwarded.details() == direct.details()

        def kept(error: grpc.aio.AioRpcError) -> list[tuple[str, Any]]:
            return [
                (k, v)
                for k, v in error.trailing_metadata() or ()
                if k in (STATUS_DETAILS_KEY, LOG_METADATA_KEY)
            ]

        assert kept(forwarded) == kept(direct)
        assert any(k == STATUS_DETAILS_KEY for k, _ in kept(forwarded))
    finally:
        await proxy_server.stop(None)
        await federation.close(None)
        await upstream_server.stop(None)


async def test_the_grpc_port_admits_passed_through_calls_like_its_own(connectors):
    """A call passed through to an upstream holds a place of the proxy's admission until it is
    answered; beyond the limit the proxy refuses it itself: UNAVAILABLE, ProxyBusy, RetryInfo."""
    upstream_server, upstream_port = await create_server(by_name(connectors, "example"), "127.0.0.1:0")
    settings = Settings.from_env({"CONNECTOR_PROXY_GRPC_TARGETS": f"up=127.0.0.1:{upstream_port}"})
    federation = federation_for(settings, [])
    await federation.start()
    admission = Admission(max_calls=1, max_bytes=1 << 20)
    proxy_server, proxy_port = await create_server(
        [], "127.0.0.1:0", federation=federation, admission=admission
    )
    try:
        await one_call_at_a_time(proxy_port, admission)
    finally:
        await proxy_server.stop(None)
        await federation.close(None)
        await upstream_server.stop(None)
    assert (admission.calls, admission.bytes) == (0, 0)
