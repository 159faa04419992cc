"""TLS to upstreams and on the proxy's own gRPC port, with real servers and certificates from a
throwaway CA (trustme): verification against a private CA, host names, client certificates
(mTLS), and the metadata an upstream is configured with, directly and through the proxy's port."""

from __future__ import annotations

import contextlib
import pathlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import grpc
import pytest
import trustme
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from spiff.connector.example.v1 import example_pb2, example_pb2_grpc

from server._registry import Connector
from server.app import create_server
from server.security import server_credentials
from server.settings import Settings
from server.upstreams import (
    UNAVAILABLE_ERROR_CODE,
    Federation,
    Upstream,
    UpstreamConfig,
    UpstreamState,
    parse_upstreams,
)
from server.wire import API_KEY_METADATA
from tests.certificates import Files, certificate_files, client_credentials, issue
from tests.security.helpers import EXAMPLE_METHOD, EXPECTED, call_example, following, invoke_example

pytestmark = pytest.mark.anyio

REFLECTION_METHOD = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
WATCH_METHOD = "/grpc.health.v1.Health/Watch"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def other_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def files(tmp_path: pathlib.Path, ca: trustme.CA, other_ca: trustme.CA) -> Files:
    return certificate_files(tmp_path, ca, other_ca)


@contextlib.asynccontextmanager
async def serving(
    connectors: list[Connector], credentials: grpc.ServerCredentials | None
) -> AsyncIterator[int]:
    """The connectors' gRPC server on 127.0.0.1 (TLS with ``credentials``); yields its port."""
    server, port = await create_server(connectors, "127.0.0.1:0", credentials=credentials)
    try:
        yield port
    finally:
        await server.stop(None)


def tls_to(port: int, host: str = "127.0.0.1", *, name: str = "tls", **config: Any) -> UpstreamConfig:
    return UpstreamConfig(name=name, target=f"{host}:{port}", tls=True, **config)


async def assert_unavailable(upstream: Upstream, *reasons: str) -> None:
    """The upstream could not connect, says why, and its calls fail at once without reaching it."""
    assert upstream.state is UpstreamState.UNAVAILABLE
    assert upstream.last_error is not None
    assert upstream.last_error.startswith("UNAVAILABLE")
    for reason in reasons:
        assert reason in upstream.last_error
    assert upstream.services == ()
    reply = await upstream.invoke(EXAMPLE_METHOD, example_pb2.ExampleRequest(message="hi"), timeout=5)
    assert reply.failure is not None
    assert reply.failure.error_code == UNAVAILABLE_ERROR_CODE
    assert "is not available: UNAVAILABLE" in reply.failure.message


# -- (a) an upstream over TLS ------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_an_upstream_over_tls_trusts_its_ca_file(connectors, files, host):
    async with serving(connectors, server_credentials(files.server.cert, files.server.key)) as port:
        [config] = parse_upstreams(
            {
                "CONNECTOR_PROXY_GRPC_TARGETS": f"node=grpcs://{host}:{port}",
                "CONNECTOR_PROXY_UPSTREAM_NODE_CA_FILE": files.ca,
            }
        )
        assert config == tls_to(port, host, name="node", ca_file=files.ca)
        async with following(config) as upstream:
            assert upstream.state is UpstreamState.READY, upstream.last_error
            assert await invoke_example(upstream) == EXPECTED


async def test_without_a_ca_file_the_system_roots_refuse_a_private_ca(connectors, files):
    async with (
        serving(connectors, server_credentials(files.server.cert, files.server.key)) as port,
        following(tls_to(port)) as upstream,
    ):
        await assert_unavailable(upstream, "CERTIFICATE_VERIFY_FAILED")


async def test_a_server_certificate_from_another_ca_is_refused(connectors, files, other_ca, tmp_path):
    impostor = issue(other_ca, tmp_path, "impostor", "localhost", "127.0.0.1")
    async with (
        serving(connectors, server_credentials(impostor.cert, impostor.key)) as port,
        following(tls_to(port, ca_file=files.ca)) as upstream,
    ):
        await assert_unavailable(upstream, "CERTIFICATE_VERIFY_FAILED")


async def test_the_server_name_is_verified_and_may_be_set(connectors, files, ca, tmp_path):
    """A certificate for another name is refused; ``SERVER_NAME`` says which name to expect."""
    named = issue(ca, tmp_path, "named", "connectors.internal")
    async with serving(connectors, server_credentials(named.cert, named.key)) as port:
        async with following(tls_to(port, ca_file=files.ca)) as upstream:
            await assert_unavailable(upstream, "Hostname Verification")
        async with following(tls_to(port, ca_file=files.ca, server_name="elsewhere.internal")) as upstream:
            await assert_unavailable(upstream, "Hostname Verification")
        async with following(tls_to(port, ca_file=files.ca, server_name="connectors.internal")) as upstream:
            assert upstream.state is UpstreamState.READY, upstream.last_error
            assert await invoke_example(upstream) == EXPECTED


async def test_plaintext_and_tls_never_mix(connectors, files):
    """No silent downgrade: a plaintext upstream cannot talk to a TLS port, nor a TLS one to a
    plaintext port."""
    async with (
        serving(connectors, server_credentials(files.server.cert, files.server.key)) as tls_port,
        following(UpstreamConfig(name="plain", target=f"127.0.0.1:{tls_port}")) as upstream,
    ):
        await assert_unavailable(upstream)
    async with (
        serving(connectors, None) as plain_port,
        following(tls_to(plain_port, ca_file=files.ca)) as upstream,
    ):
        await assert_unavailable(upstream)


async def test_an_unreadable_certificate_file_stops_the_start(tmp_path, files):
    missing = str(tmp_path / "missing.pem")
    for config, what in [
        (tls_to(1, ca_file=missing), "CA file"),
        (
            tls_to(1, ca_file=files.ca, cert_file=missing, key_file=files.client.key),
            "client certificate file",
        ),
        (tls_to(1, ca_file=files.ca, cert_file=files.client.cert, key_file=missing), "client key file"),
    ]:
        upstream = Upstream(config)
        with pytest.raises(ValueError, match=f"cannot read the {what} {missing}"):
            await upstream.start()
        await upstream.close()
    for args, what in [
        ((missing, files.server.key), "TLS certificate file"),
        ((files.server.cert, missing), "TLS key file"),
        ((files.server.cert, files.server.key, missing), "client CA file"),
    ]:
        with pytest.raises(ValueError, match=f"cannot read the {what} {missing}"):
            server_credentials(*args)


# -- (b) mutual TLS ----------------------------------------------------------------------------


@pytest.fixture
async def mtls_port(connectors: list[Connector], files: Files) -> AsyncIterator[int]:
    """The gRPC port as ``CONNECTOR_PROXY_GRPC_TLS_*`` configure it: callers need a certificate
    from the CA."""
    settings = Settings.from_env(
        {
            "CONNECTOR_PROXY_GRPC_TLS_CERT_FILE": files.server.cert,
            "CONNECTOR_PROXY_GRPC_TLS_KEY_FILE": files.server.key,
            "CONNECTOR_PROXY_GRPC_TLS_CLIENT_CA_FILE": files.ca,
        }
    )
    assert settings.grpc_tls_cert_file is not None
    assert settings.grpc_tls_key_file is not None
    credentials = server_credentials(
        settings.grpc_tls_cert_file, settings.grpc_tls_key_file, settings.grpc_tls_client_ca_file
    )
    async with serving(connectors, credentials) as port:
        yield port


async def test_mtls_with_a_client_certificate_from_the_ca(mtls_port, files):
    [config] = parse_upstreams(
        {
            "CONNECTOR_PROXY_GRPC_TARGETS": f"node=grpcs://127.0.0.1:{mtls_port}",
            "CONNECTOR_PROXY_UPSTREAM_CA_FILE": files.ca,
            "CONNECTOR_PROXY_UPSTREAM_NODE_CERT_FILE": files.client.cert,
            "CONNECTOR_PROXY_UPSTREAM_NODE_KEY_FILE": files.client.key,
        }
    )
    async with following(config) as upstream:
        assert upstream.state is UpstreamState.READY, upstream.last_error
        assert await invoke_example(upstream) == EXPECTED


@pytest.mark.parametrize("client", ["none", "stranger"])
async def test_mtls_refuses_a_caller_without_a_certificate_from_the_ca(mtls_port, files, client):
    pair = files.stranger if client == "stranger" else None
    config = tls_to(
        mtls_port,
        ca_file=files.ca,
        cert_file=pair.cert if pair else None,
        key_file=pair.key if pair else None,
    )
    async with following(config) as upstream:
        await assert_unavailable(upstream)
    # A plain gRPC client fares no better: nothing reaches the connectors.
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{mtls_port}", client_credentials(files.ca, pair)
    ) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call_example(channel)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


# -- (c) metadata ------------------------------------------------------------------------------


class Recorder(grpc.aio.ServerInterceptor):
    """Notes the method and the metadata of every call the server receives."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[tuple[str, str | bytes], ...]]] = []

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        metadata = tuple(handler_call_details.invocation_metadata or ())
        self.calls.append((handler_call_details.method, metadata))
        return await continuation(handler_call_details)

    def metadata(self, method: str) -> list[dict[str, list[str | bytes]]]:
        """Each call of ``method``: its metadata, every value of a key in order."""
        found = []
        for called, metadata in self.calls:
            if called == method:
                values: dict[str, list[str | bytes]] = {}
                for key, value in metadata:
                    values.setdefault(key, []).append(value)
                found.append(values)
        return found

    async def wait_for(self, method: str, timeout: float = 10.0) -> list[dict[str, list[str | bytes]]]:
        deadline = time.monotonic() + timeout
        while not self.metadata(method):
            assert time.monotonic() < deadline, f"no call of {method} within {timeout} s"
            await anyio.sleep(0.01)
        return self.metadata(method)


class Echo(example_pb2_grpc.ExampleServiceServicer):
    async def Example(self, request: Any, context: Any) -> example_pb2.ExampleResponse:
        return example_pb2.ExampleResponse(
            connector_response=EXPECTED.connector_response, message=request.message
        )


@pytest.fixture
async def recorded(files: Files) -> AsyncIterator[tuple[Recorder, int]]:
    """A connector server in another language, as far as the proxy can tell: ExampleService,
    reflection and health over TLS, behind an interceptor that records what arrives."""
    recorder = Recorder()
    server = grpc.aio.server(interceptors=[recorder], options=[("grpc.so_reuseport", 0)])
    example_pb2_grpc.add_ExampleServiceServicer_to_server(Echo(), server)  # type: ignore[no-untyped-call]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    example = example_pb2.DESCRIPTOR.services_by_name["ExampleService"].full_name
    reflection.enable_server_reflection([example, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(files.server.cert, files.server.key))
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        yield recorder, port
    finally:
        await server.stop(None)


CONFIGURED = (("authorization", "Bearer x"), ("x-tenant", "acme"))


async def test_configured_metadata_reaches_the_upstream_on_every_call(recorded, files):
    recorder, port = recorded
    [config] = parse_upstreams(
        {
            "CONNECTOR_PROXY_GRPC_TARGETS": f"node=grpcs://127.0.0.1:{port}",
            "CONNECTOR_PROXY_UPSTREAM_CA_FILE": files.ca,
            "CONNECTOR_PROXY_UPSTREAM_NODE_METADATA_AUTHORIZATION": "Bearer x",
            "CONNECTOR_PROXY_UPSTREAM_METADATA_X_TENANT": "acme",
        }
    )
    assert config.metadata == CONFIGURED
    async with following(config) as upstream:
        assert upstream.state is UpstreamState.READY, upstream.last_error
        assert await invoke_example(upstream) == EXPECTED
        # Discovery, the health watch and the command: each carries the metadata.
        for method in (REFLECTION_METHOD, WATCH_METHOD, EXAMPLE_METHOD):
            for metadata in await recorder.wait_for(method):
                assert metadata["authorization"] == ["Bearer x"], method
                assert metadata["x-tenant"] == ["acme"], method
                assert API_KEY_METADATA not in metadata, method


@pytest.mark.parametrize("upstream_key", [None, "upstream-key"])
async def test_the_proxy_passes_configured_metadata_on_but_not_its_callers_key(recorded, files, upstream_key):
    recorder, port = recorded
    configured = CONFIGURED + (((API_KEY_METADATA, upstream_key),) if upstream_key else ())
    upstream = Upstream(tls_to(port, ca_file=files.ca, metadata=configured))
    federation = Federation([], [upstream])
    await federation.start(wait=10)
    try:
        assert upstream.state is UpstreamState.READY, upstream.last_error
        server, proxy_port = await create_server(
            [], "127.0.0.1:0", api_key="proxy-key", federation=federation
        )
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{proxy_port}") as channel:
                caller = (
                    (API_KEY_METADATA, "proxy-key"),
                    ("authorization", "Bearer caller"),
                    ("x-request-id", "r-1"),
                )
                assert await call_example(channel, caller) == EXPECTED
        finally:
            await server.stop(None)
    finally:
        await federation.close()
    [forwarded] = recorder.metadata(EXAMPLE_METHOD)
    if upstream_key is None:
        assert API_KEY_METADATA not in forwarded
    else:
        assert forwarded[API_KEY_METADATA] == [upstream_key]  # the configured key, once
    assert forwarded["authorization"] == ["Bearer x"]  # the configured value replaces the caller's
    assert forwarded["x-tenant"] == ["acme"]
    assert forwarded["x-request-id"] == ["r-1"]  # the caller's own metadata passes on
    assert not [v for values in forwarded.values() for v in values if v == "proxy-key"]
