"""The Node.js server's API key and TLS (``CONNECTOR_PROXY_API_KEY``, ``CONNECTOR_PROXY_GRPC_TLS_*``),
held to what server/security.py does for the Python server: every call but health needs the key
(reflection and unknown methods too), TLS with a private CA, client certificates (mTLS), the
proxy in front of a keyed server, and settings that stop the start."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import grpc
import httpx
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from spiff.connector.jsonata.v1 import jsonata_pb2

from server import json_values
from server.upstreams import Upstream, UpstreamConfig, UpstreamState, read_schema
from server.wire import API_KEY_METADATA
from tests.certificates import Files, certificate_files, client_credentials
from tests.node.calls import evaluate
from tests.node.conftest import NODE, SERVER, NodeServer, node_server, open_channel
from tests.security.helpers import following, list_services
from tests.upstreams import proxy_fronting

SERVICE = "spiff.connector.jsonata.v1.JsonataService"
EVALUATE = f"/{SERVICE}/Evaluate"
KEY = "node-s3cret-key"
WITH_KEY = ((API_KEY_METADATA, KEY),)
WITHOUT_THE_KEY = [
    pytest.param(None, id="none"),
    pytest.param(((API_KEY_METADATA, "wrong"),), id="wrong"),
    pytest.param(((API_KEY_METADATA, KEY + "x"),), id="longer"),
    pytest.param(((API_KEY_METADATA, KEY[:-1]),), id="shorter"),
    pytest.param(((API_KEY_METADATA, KEY.upper()),), id="other-case"),
    pytest.param(((API_KEY_METADATA, ""),), id="empty"),
    pytest.param((("authorization", KEY),), id="elsewhere"),
    pytest.param((("x-" + API_KEY_METADATA, KEY),), id="other-name"),
]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeServer]:
    """The Node.js server with ``CONNECTOR_PROXY_API_KEY``."""
    log = tmp_path_factory.mktemp("node-keyed") / "server.log"
    with node_server({"CONNECTOR_PROXY_API_KEY": KEY}, log) as server:
        yield server


@pytest.fixture
async def channel(keyed: NodeServer, anyio_backend: str) -> AsyncIterator[grpc.aio.Channel]:
    async with open_channel(keyed.target) as opened:
        yield opened


def assert_unauthenticated(code: grpc.StatusCode, details: str) -> None:
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert details == f"this server needs its API key in the {API_KEY_METADATA} metadata"


def evaluate_request() -> jsonata_pb2.EvaluateRequest:
    request = jsonata_pb2.EvaluateRequest(expression="a + b")
    request.input.CopyFrom(json_values.dump({"a": 1, "b": 2}))
    return request


async def evaluate_with(channel: grpc.aio.Channel, metadata: Any) -> tuple[grpc.StatusCode, str, Any]:
    """jsonata/Evaluate of ``a + b`` with ``metadata``: the code, the details, the result."""
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(EVALUATE)
    try:
        response = await call(evaluate_request().SerializeToString(), metadata=metadata, timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or "", None
    result = jsonata_pb2.EvaluateResponse.FromString(response).result
    return grpc.StatusCode.OK, "", json_values.loads(result.json)


# -- the API key -------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("metadata", WITHOUT_THE_KEY)
async def test_evaluate_without_the_key_is_unauthenticated(channel, metadata):
    code, details, _ = await evaluate_with(channel, metadata)
    assert_unauthenticated(code, details)


@pytest.mark.anyio
async def test_evaluate_with_the_key_is_answered(channel):
    assert await evaluate_with(channel, WITH_KEY) == (grpc.StatusCode.OK, "", 3)
    assert await evaluate_with(channel, (("x-other", "1"), *WITH_KEY)) == (grpc.StatusCode.OK, "", 3)


@pytest.mark.anyio
@pytest.mark.parametrize("metadata", WITHOUT_THE_KEY[:4])
async def test_reflection_is_closed_without_the_key(channel, metadata):
    """Both versions, and as the proxy reads the schema."""
    for version in ("v1", "v1alpha"):
        call = channel.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call(iter([b"\x3a\x00"]), metadata=metadata, timeout=5):  # list_services
                pass
        assert_unauthenticated(caught.value.code(), caught.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await list_services(channel, metadata)
    assert_unauthenticated(caught.value.code(), caught.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read_schema(channel, metadata=metadata or (), timeout=5)
    assert_unauthenticated(caught.value.code(), caught.value.details() or "")


@pytest.mark.anyio
async def test_reflection_with_the_key_lists_and_describes_the_service(channel):
    assert SERVICE in await list_services(channel, WITH_KEY)
    schema = await read_schema(channel, metadata=WITH_KEY, timeout=5)
    assert schema.service_names == (SERVICE,)


@pytest.mark.anyio
@pytest.mark.parametrize("metadata", [None, ((API_KEY_METADATA, "wrong"),)])
@pytest.mark.parametrize("service", ["", SERVICE])
async def test_health_check_and_watch_need_no_key(channel, metadata, service):
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=service)
    checked = await stub.Check(request, metadata=metadata, timeout=5)
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    watch = stub.Watch(request, metadata=metadata, timeout=5)
    try:
        first = await watch.read()
    finally:
        watch.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.anyio
@pytest.mark.parametrize("method", [f"/{SERVICE}/NoSuchMethod", "/no.such.v1.Service/Method"])
async def test_unknown_methods_are_unimplemented_only_for_callers_with_the_key(channel, method):
    """Without the key, nobody learns which methods exist: a unary or a streaming call of an
    unknown method is refused as a known one is."""
    unary, streaming = channel.unary_unary(method), channel.stream_stream(method)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await unary(b"", metadata=WITH_KEY, timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert caught.value.details() == f"The server does not implement the method {method}"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in streaming(iter([b""]), metadata=WITH_KEY, timeout=5):
            pass
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    for metadata in (None, ((API_KEY_METADATA, "wrong"),)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unary(b"", metadata=metadata, timeout=5)
        assert_unauthenticated(caught.value.code(), caught.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in streaming(iter([b""]), metadata=metadata, timeout=5):
                pass
        assert_unauthenticated(caught.value.code(), caught.value.details() or "")


@pytest.mark.anyio
async def test_without_a_key_the_server_stays_open(jsonata_server: NodeServer):
    async with open_channel(jsonata_server.target) as opened:
        assert await evaluate_with(opened, None) == (grpc.StatusCode.OK, "", 3)
        assert SERVICE in await list_services(opened)
        unknown: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = opened.unary_unary(
            "/no.such.v1.Service/Method"
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unknown(b"", timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "TLS off, no API key" in jsonata_server.log_text()


def test_the_start_line_says_a_key_is_required_but_not_which(keyed: NodeServer):
    log = keyed.log_text()
    assert "TLS off, API key required (health open)" in log
    assert KEY not in log


# -- the proxy in front of the keyed server ----------------------------------------------------


async def do_evaluate(proxy: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    response = await proxy.post(
        "/v1/do/jsonata/Evaluate", json={"expression": "a + b", "input": {"a": 1, "b": 2}}
    )
    payload: dict[str, Any] = response.json()
    return response.status_code, payload


async def upstream_state(proxy: httpx.AsyncClient) -> dict[str, Any]:
    [described] = (await proxy.get("/v1/upstreams")).json()["upstreams"]
    state: dict[str, Any] = described
    return state


@pytest.mark.anyio
async def test_the_proxy_with_the_upstreams_key_serves_the_command(keyed, tmp_path):
    async with proxy_fronting(
        f"node={keyed.target}", tmp_path, CONNECTOR_PROXY_UPSTREAM_NODE_API_KEY=KEY
    ) as proxy:
        status, payload = await do_evaluate(proxy)
        assert (status, payload["error"]) == (200, None)
        assert payload["command_response"]["body"] == 3
        assert (await upstream_state(proxy))["state"] == "ready"


@pytest.mark.anyio
@pytest.mark.parametrize("env", [{}, {"CONNECTOR_PROXY_UPSTREAM_NODE_API_KEY": "wrong"}])
async def test_a_proxy_without_the_key_never_learns_the_command(keyed, tmp_path, env):
    """Reflection is closed, so the command is never discovered: /v1/upstreams says why, and
    the call is an unknown command."""
    async with proxy_fronting(f"node={keyed.target}", tmp_path, **env) as proxy:
        described = await upstream_state(proxy)
        assert described["state"] == "unavailable"
        assert described["last_error"].startswith("UNAUTHENTICATED")
        assert described["commands"] == []
        status, payload = await do_evaluate(proxy)
        assert (status, payload["error"]["error_code"]) == (404, "command_not_found")


@pytest.mark.anyio
@pytest.mark.slow
async def test_a_server_that_starts_requiring_a_key_is_connector_unavailable(tmp_path):
    """The command was discovered; the server comes back requiring a key the proxy lacks: its
    command answers 503 ConnectorUnavailable, naming the refusal."""
    async with contextlib.AsyncExitStack() as stack:
        open_server = stack.enter_context(node_server({}, tmp_path / "open.log"))
        port = open_server.target.rsplit(":", 1)[1]
        proxy = await stack.enter_async_context(proxy_fronting(f"node={open_server.target}", tmp_path))
        assert (await do_evaluate(proxy))[0] == 200
        open_server.process.terminate()
        assert open_server.process.wait(5) == 0
        with node_server(
            {"CONNECTOR_PROXY_API_KEY": KEY, "CONNECTOR_NODE_PORT": port}, tmp_path / "keyed.log"
        ):
            deadline = time.monotonic() + 10
            while not ((await upstream_state(proxy))["last_error"] or "").startswith("UNAUTHENTICATED"):
                assert time.monotonic() < deadline, await upstream_state(proxy)
                await anyio.sleep(0.05)
            status, payload = await do_evaluate(proxy)
        assert status == 503
        assert payload["error"]["error_code"] == "ConnectorUnavailable"
        assert "UNAUTHENTICATED" in payload["error"]["message"]
        assert KEY not in str(payload)


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return certificate_files(tmp_path_factory.mktemp("certificates"), trustme.CA(), trustme.CA())


def tls_env(files: Files, *, client_ca: bool = False) -> dict[str, str]:
    env = {
        "CONNECTOR_PROXY_GRPC_TLS_CERT_FILE": files.server.cert,
        "CONNECTOR_PROXY_GRPC_TLS_KEY_FILE": files.server.key,
    }
    if client_ca:
        env["CONNECTOR_PROXY_GRPC_TLS_CLIENT_CA_FILE"] = files.ca
    return env


@pytest.fixture(scope="module")
def tls_server(files: Files, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeServer]:
    with node_server(tls_env(files), tmp_path_factory.mktemp("node-tls") / "server.log") as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(files: Files, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeServer]:
    log = tmp_path_factory.mktemp("node-mtls") / "server.log"
    with node_server(tls_env(files, client_ca=True), log) as server:
        yield server


def tls_to(server: NodeServer, **config: Any) -> UpstreamConfig:
    return UpstreamConfig(name="node", target=server.target, tls=True, **config)


async def evaluate_through(upstream: Upstream) -> Any:
    """jsonata/Evaluate of ``a + b`` as the proxy invokes it: the result."""
    reply = await upstream.invoke(EVALUATE, evaluate_request(), timeout=5)
    assert reply.failure is None, reply.failure
    assert reply.response is not None
    response = jsonata_pb2.EvaluateResponse.FromString(reply.response.SerializeToString())
    return json_values.loads(response.result.json)


async def assert_unavailable(upstream: Upstream, *reasons: str) -> None:
    """The upstream could not connect, says why, and its calls fail at once."""
    assert upstream.state is UpstreamState.UNAVAILABLE
    assert upstream.last_error is not None
    assert upstream.last_error.startswith("UNAVAILABLE"), upstream.last_error
    for reason in reasons:
        assert reason in upstream.last_error
    reply = await upstream.invoke(EVALUATE, evaluate_request(), timeout=5)
    assert reply.failure is not None
    assert reply.failure.error_code == "ConnectorUnavailable"


@pytest.mark.anyio
async def test_tls_with_the_ca_file_works(tls_server, files):
    async with following(tls_to(tls_server, ca_file=files.ca)) as upstream:
        assert upstream.state is UpstreamState.READY, upstream.last_error
        assert await evaluate_through(upstream) == 3
    assert "TLS on, no API key" in tls_server.log_text()


@pytest.mark.anyio
async def test_tls_without_the_ca_file_is_refused(tls_server):
    """The system roots do not know the private CA."""
    async with following(tls_to(tls_server)) as upstream:
        await assert_unavailable(upstream, "CERTIFICATE_VERIFY_FAILED")


@pytest.mark.anyio
async def test_a_plaintext_caller_cannot_reach_the_tls_port(tls_server):
    async with following(UpstreamConfig(name="node", target=tls_server.target)) as upstream:
        await assert_unavailable(upstream)
    async with open_channel(tls_server.target) as opened:
        code, _, _ = await evaluate_with(opened, None)
    assert code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.anyio
async def test_mtls_with_a_client_certificate_from_the_ca(mtls_server, files):
    config = tls_to(mtls_server, ca_file=files.ca, cert_file=files.client.cert, key_file=files.client.key)
    async with following(config) as upstream:
        assert upstream.state is UpstreamState.READY, upstream.last_error
        assert await evaluate_through(upstream) == 3
    assert "TLS on, client certificates required, no API key" in mtls_server.log_text()


@pytest.mark.anyio
@pytest.mark.parametrize("client", ["none", "stranger"])
async def test_mtls_refuses_a_caller_without_a_certificate_from_the_ca(mtls_server, files, client):
    pair = files.stranger if client == "stranger" else None
    config = tls_to(
        mtls_server,
        ca_file=files.ca,
        cert_file=pair.cert if pair else None,
        key_file=pair.key if pair else None,
    )
    async with following(config) as upstream:
        await assert_unavailable(upstream)
    # A plain gRPC client fares no better, health included: nothing gets past the handshake.
    async with grpc.aio.secure_channel(mtls_server.target, client_credentials(files.ca, pair)) as opened:
        code, _, _ = await evaluate_with(opened, None)
        assert code == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_pb2_grpc.HealthStub(opened).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.anyio
async def test_tls_and_the_key_together(files, tmp_path):
    """Both are checked: a caller with the CA but without the key is refused the command."""
    with node_server({**tls_env(files), "CONNECTOR_PROXY_API_KEY": KEY}, tmp_path / "server.log") as server:
        async with following(tls_to(server, ca_file=files.ca, metadata=WITH_KEY)) as upstream:
            assert upstream.state is UpstreamState.READY, upstream.last_error
            assert await evaluate_through(upstream) == 3
        async with grpc.aio.secure_channel(server.target, client_credentials(files.ca, None)) as opened:
            code, details, _ = await evaluate_with(opened, None)
            assert_unauthenticated(code, details)
            answer = await evaluate(opened, "1 + 1")
            assert answer.code == grpc.StatusCode.UNAUTHENTICATED
        log = server.log_text()
    assert "TLS on, API key required (health open)" in log
    assert KEY not in log


# -- settings that stop the start --------------------------------------------------------------


CERT, KEY_FILE, CLIENT_CA = (
    "CONNECTOR_PROXY_GRPC_TLS_CERT_FILE",
    "CONNECTOR_PROXY_GRPC_TLS_KEY_FILE",
    "CONNECTOR_PROXY_GRPC_TLS_CLIENT_CA_FILE",
)
# The settings (values are templates: {cert}, {key}, {ca}, {client_key}, {missing}, {not_pem})
# and what the server says.
REFUSALS = [
    pytest.param({"CONNECTOR_PROXY_API_KEY": ""}, "CONNECTOR_PROXY_API_KEY is set but empty", id="empty-key"),
    pytest.param(
        {"CONNECTOR_PROXY_API_KEY": "  "}, "CONNECTOR_PROXY_API_KEY is set but empty", id="blank-key"
    ),
    pytest.param({CERT: "{cert}"}, f"{CERT} and {KEY_FILE} go together", id="cert-without-key"),
    pytest.param({KEY_FILE: "{key}"}, f"{CERT} and {KEY_FILE} go together", id="key-without-cert"),
    pytest.param({CLIENT_CA: "{ca}"}, f"{CLIENT_CA} needs {CERT} and _KEY_FILE", id="client-ca-without-cert"),
    pytest.param(
        {CLIENT_CA: "{ca}", KEY_FILE: "{key}"},
        f"{CERT} and {KEY_FILE} go together",
        id="client-ca-and-key-without-cert",
    ),
    pytest.param(
        {CERT: "{missing}", KEY_FILE: "{key}"},
        "cannot read the TLS certificate file {missing}: ENOENT: no such file or directory",
        id="missing-cert",
    ),
    pytest.param(
        {CERT: "{cert}", KEY_FILE: "{missing}"}, "cannot read the TLS key file {missing}", id="missing-key"
    ),
    pytest.param(
        {CERT: "{cert}", KEY_FILE: "{key}", CLIENT_CA: "{missing}"},
        "cannot read the client CA file {missing}",
        id="missing-client-ca",
    ),
    pytest.param(
        {CERT: "{not_pem}", KEY_FILE: "{key}"},
        f"{CERT} and _KEY_FILE must hold a PEM certificate and its key",
        id="cert-not-pem",
    ),
    pytest.param(
        {CERT: "{cert}", KEY_FILE: "{client_key}"},
        f"{CERT} and _KEY_FILE must hold a PEM certificate and its key",
        id="key-of-another-certificate",
    ),
    pytest.param(
        {CERT: "{cert}", KEY_FILE: "{key}", CLIENT_CA: "{not_pem}"},
        f"{CLIENT_CA} must hold PEM certificates",
        id="client-ca-not-pem",
    ),
]


@pytest.mark.parametrize(("env", "message"), REFUSALS)
def test_bad_security_settings_stop_the_server_naming_them(files, tmp_path, env, message) -> None:
    if NODE is None:
        pytest.skip("node is not on PATH (the Node.js connector server needs Node.js 20+)")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    paths = {
        "cert": files.server.cert,
        "key": files.server.key,
        "ca": files.ca,
        "client_key": files.client.key,
        "missing": str(tmp_path / "missing.pem"),
        "not_pem": str(not_pem),
    }
    done = subprocess.run(
        [NODE, str(SERVER)],
        env={"CONNECTOR_NODE_PORT": "0", **{name: value.format(**paths) for name, value in env.items()}},
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert (done.returncode, done.stdout) == (2, b""), done.stderr
    assert done.stderr.decode().startswith(f"connector server: {message.format(**paths)}"), done.stderr
