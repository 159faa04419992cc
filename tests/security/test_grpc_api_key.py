"""The API key on the gRPC port (``create_server(api_key=...)``): every call but health needs
``spiff-connector-proxy-api-key``; an upstream configured with the key reaches a keyed server,
and a keyed proxy in front of a keyed server uses its own key, not its caller's."""

from __future__ import annotations

import contextlib
import logging
import pathlib
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from spiff.connector.example.v1 import example_pb2
from spiff.proxy.v1 import jobs_pb2, jobs_pb2_grpc

from jobs import embedded_jobs, jobs_service
from rest_shim import Catalogue
from server._registry import Connector
from server.app import create_server
from server.invocation import LocalInvoker
from server.security import ApiKeyInterceptor
from server.settings import Settings
from server.upstreams import (
    UNAVAILABLE_ERROR_CODE,
    Federation,
    Upstream,
    UpstreamState,
    parse_upstreams,
    read_schema,
)
from server.wire import API_KEY_METADATA
from tests.security.helpers import (
    EXAMPLE_SERVICE,
    EXPECTED,
    call_example,
    following,
    invoke_example,
    list_services,
)

pytestmark = pytest.mark.anyio

KEY = "k"
PROXY_KEY = "proxy-key"
WITH_KEY = ((API_KEY_METADATA, KEY),)
JOBS_SERVICE = "spiff.proxy.v1.JobsService"
WITHOUT_THE_KEY = [
    pytest.param(None, id="none"),
    pytest.param(((API_KEY_METADATA, "wrong"),), id="wrong"),
    pytest.param(((API_KEY_METADATA, "kk"),), id="longer"),
    pytest.param(((API_KEY_METADATA, "K"),), id="other-case"),
    pytest.param(((API_KEY_METADATA, ""),), id="empty"),
    pytest.param((("authorization", KEY),), id="elsewhere"),
    pytest.param((("x-" + API_KEY_METADATA, KEY),), id="other-name"),
]


@pytest.fixture
async def keyed(connectors: list[Connector], tmp_path: pathlib.Path) -> AsyncIterator[str]:
    """The gRPC server as the proxy runs it with ``CONNECTOR_PROXY_API_KEY=k``: the connectors and
    JobsService (embedded jobs)."""
    jobs = embedded_jobs(Settings.from_env({"CONNECTOR_PROXY_JOBS_DB": str(tmp_path / "j.sqlite3")}))
    await jobs.start(Catalogue(c.service for c in connectors), LocalInvoker(connectors))
    try:
        server, port = await create_server(
            connectors, "127.0.0.1:0", api_key=KEY, services=[jobs_service(jobs)]
        )
        try:
            yield f"127.0.0.1:{port}"
        finally:
            await server.stop(None)
    finally:
        await jobs.close()


@pytest.fixture
async def channel(keyed: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(keyed) as opened:
        yield opened


def assert_unauthenticated(error: grpc.aio.AioRpcError) -> None:
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert API_KEY_METADATA in (error.details() or "")


# -- the keyed server --------------------------------------------------------------------------


@pytest.mark.parametrize("metadata", WITHOUT_THE_KEY)
async def test_a_connector_call_without_the_key_is_unauthenticated(channel, metadata):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_example(channel, metadata)
    assert_unauthenticated(caught.value)


async def test_a_connector_call_with_the_key_is_answered(channel):
    assert await call_example(channel, WITH_KEY) == EXPECTED
    assert await call_example(channel, (("x-other", "1"), *WITH_KEY)) == EXPECTED


@pytest.mark.parametrize("metadata", WITHOUT_THE_KEY[:3])
async def test_reflection_is_closed_without_the_key(channel, metadata):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await list_services(channel, metadata)
    assert_unauthenticated(caught.value)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read_schema(channel, metadata=metadata or (), timeout=5)
    assert_unauthenticated(caught.value)


async def test_reflection_with_the_key_lists_and_describes_the_services(channel):
    services = await list_services(channel, WITH_KEY)
    assert {EXAMPLE_SERVICE, JOBS_SERVICE, "grpc.health.v1.Health"} <= set(services)
    schema = await read_schema(channel, metadata=WITH_KEY, timeout=5)
    assert EXAMPLE_SERVICE in schema.service_names
    assert JOBS_SERVICE not in schema.service_names  # not a connector
    [example] = [s for s in schema.services() if s.full_name == EXAMPLE_SERVICE]
    assert [m.name for m in example.methods] == ["Example", "Delay"]


@pytest.mark.parametrize("metadata", WITHOUT_THE_KEY[:2])
async def test_jobs_service_needs_the_key(channel, metadata):
    stub = jobs_pb2_grpc.JobsServiceStub(channel)  # type: ignore[no-untyped-call]
    for call in (
        stub.GetJob(jobs_pb2.GetJobRequest(id="no-such-job"), metadata=metadata, timeout=5),
        stub.ListJobs(jobs_pb2.ListJobsRequest(), metadata=metadata, timeout=5),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert_unauthenticated(caught.value)


async def test_jobs_service_with_the_key_reaches_the_jobs(channel):
    stub = jobs_pb2_grpc.JobsServiceStub(channel)  # type: ignore[no-untyped-call]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetJob(jobs_pb2.GetJobRequest(id="no-such-job"), metadata=WITH_KEY, timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # answered by JobsService itself
    listed = await stub.ListJobs(jobs_pb2.ListJobsRequest(), metadata=WITH_KEY, timeout=5)
    assert list(listed.jobs) == []


@pytest.mark.parametrize("service", ["", EXAMPLE_SERVICE, JOBS_SERVICE])
async def test_health_needs_no_key(channel, service):
    stub = health_pb2_grpc.HealthStub(channel)
    checked = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=5)
    try:
        first = await watch.read()
    finally:
        watch.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING


async def test_unknown_methods_are_unimplemented_only_for_callers_with_the_key(channel):
    call = channel.unary_unary(f"/{EXAMPLE_SERVICE}/NoSuchMethod")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(b"", metadata=WITH_KEY, timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # Without the key, nobody learns which methods exist.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(b"", timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_empty_key_is_refused(connectors):
    with pytest.raises(ValueError, match="empty API key"):
        ApiKeyInterceptor("")
    with pytest.raises(ValueError, match="empty API key"):
        await create_server(connectors, "127.0.0.1:0", api_key="")


async def test_without_a_key_the_server_is_open(grpc_channel):
    assert await call_example(grpc_channel) == EXPECTED
    assert EXAMPLE_SERVICE in await list_services(grpc_channel)


# -- an upstream to the keyed server -----------------------------------------------------------


def keyed_upstream(target: str, **env: str) -> Upstream:
    [config] = parse_upstreams({"CONNECTOR_PROXY_GRPC_TARGETS": f"keyed={target}", **env})
    return Upstream(config)


async def test_an_upstream_with_the_key_reaches_ready_and_calls(keyed):
    [config] = parse_upstreams(
        {"CONNECTOR_PROXY_GRPC_TARGETS": f"keyed={keyed}", "CONNECTOR_PROXY_UPSTREAM_KEYED_API_KEY": KEY}
    )
    assert config.metadata == WITH_KEY
    async with following(config) as upstream:
        assert upstream.state is UpstreamState.READY, upstream.last_error
        names = [s.full_name for s in upstream.services]
        assert EXAMPLE_SERVICE in names
        assert JOBS_SERVICE not in names
        assert await invoke_example(upstream) == EXPECTED


@pytest.mark.parametrize("env", [{}, {"CONNECTOR_PROXY_UPSTREAM_API_KEY": "wrong-s3cret"}])
async def test_an_upstream_without_the_key_is_unavailable(keyed, env, caplog):
    caplog.set_level(logging.DEBUG)
    [config] = parse_upstreams({"CONNECTOR_PROXY_GRPC_TARGETS": f"keyed={keyed}", **env})
    async with following(config) as upstream:
        assert upstream.state is UpstreamState.UNAVAILABLE
        assert upstream.last_error is not None
        assert "UNAUTHENTICATED" in upstream.last_error
        assert upstream.services == ()
        request = example_pb2.ExampleRequest(message="hi")
        reply = await upstream.invoke(f"/{EXAMPLE_SERVICE}/Example", request, timeout=5)
        assert reply.response is None
        assert reply.failure is not None
        assert (reply.failure.code, reply.failure.error_code) == (
            grpc.StatusCode.UNAVAILABLE,
            UNAVAILABLE_ERROR_CODE,
        )
        assert "UNAUTHENTICATED" in reply.failure.message
        shown = [upstream.last_error, reply.failure.message, repr(upstream), caplog.text]
    assert "is unavailable: UNAUTHENTICATED" in caplog.text
    assert not [text for text in shown if "s3cret" in text]


# -- a keyed proxy in front of the keyed server ------------------------------------------------


@contextlib.asynccontextmanager
async def proxy_for(*upstreams: Upstream) -> AsyncIterator[tuple[Federation, grpc.aio.Channel]]:
    """The proxy's gRPC port with ``CONNECTOR_PROXY_API_KEY=proxy-key``, fronting ``upstreams``."""
    federation = Federation([], upstreams)
    await federation.start(wait=10)
    try:
        server, port = await create_server([], "127.0.0.1:0", api_key=PROXY_KEY, federation=federation)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened:
                yield federation, opened
        finally:
            await server.stop(None)
    finally:
        await federation.close()


async def test_a_keyed_proxy_fronts_a_keyed_server_with_its_own_key(keyed):
    upstream = keyed_upstream(keyed, CONNECTOR_PROXY_UPSTREAM_KEYED_API_KEY=KEY)
    async with proxy_for(upstream) as (federation, proxy):
        assert upstream.state is UpstreamState.READY, upstream.last_error
        # The caller needs the proxy's key; the upstream's key is not a key to the proxy.
        for metadata in (None, WITH_KEY, ((API_KEY_METADATA, "wrong"),)):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call_example(proxy, metadata)
            assert_unauthenticated(caught.value)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await list_services(proxy, metadata)
            assert_unauthenticated(caught.value)
        # With it, the call reaches the keyed server, which only takes its own key: the proxy
        # sends the configured one in place of its caller's.
        assert await call_example(proxy, ((API_KEY_METADATA, PROXY_KEY),)) == EXPECTED
        assert EXAMPLE_SERVICE in await list_services(proxy, ((API_KEY_METADATA, PROXY_KEY),))
        [described] = federation.describe()
        assert (described["state"], described["last_error"]) == ("ready", None)
        assert "example/Example" in described["commands"]
        # Health stays open on the proxy too.
        checked = await health_pb2_grpc.HealthStub(proxy).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert checked.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_proxy_without_the_upstreams_key_shows_why_and_no_secret(keyed):
    upstream = keyed_upstream(keyed, CONNECTOR_PROXY_UPSTREAM_KEYED_API_KEY="wrong-s3cret")
    async with proxy_for(upstream) as (federation, proxy):
        [described] = federation.describe()
        assert described["state"] == "unavailable"
        assert "UNAUTHENTICATED" in described["last_error"]
        assert described["commands"] == []
        assert "s3cret" not in repr(described)
        # Nothing of the upstream is served: the command is unknown here.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call_example(proxy, ((API_KEY_METADATA, PROXY_KEY),))
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
