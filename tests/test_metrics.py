"""``GET /metrics``: Prometheus' text format, parsed; the metrics move as calls, failures,
upstream outages, jobs and gRPC calls happen, and their labels stay bounded."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from spiff.connector.example.v1 import example_pb2, example_pb2_grpc

from server._registry import Connector
from server.app import create_server
from tests.federation.test_federation import by_name
from tests.jobs.fake_spiff import FakeSpiff
from tests.ports import free_port
from tests.processes import process, stop, wait_for_grpc
from tests.prometheus import Samples, parse, value
from tests.upstreams import proxy_fronting

pytestmark = pytest.mark.anyio

KEY = "metrics-test-key"
HEADERS = {"Spiff-Connector-Proxy-Api-Key": KEY}
DO_ROUTE = "/v1/do/{connector}/{command}"


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics", headers=HEADERS)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
async def proxy(connectors: list[Connector], tmp_path) -> AsyncIterator[httpx.AsyncClient]:
    async with proxy_fronting(
        "", tmp_path, by_name(connectors, "example", "http"), CONNECTOR_PROXY_API_KEY=KEY
    ) as client:
        yield client


async def test_metrics_need_the_api_key(proxy):
    assert (await proxy.get("/metrics")).status_code == 401
    samples = await scrape(proxy)
    assert any(name == "spiff_connector_proxy_http_requests_total" for name, _ in samples)


async def test_command_answers_by_command_status_and_error_code(proxy):
    before = await scrape(proxy)
    ok = await proxy.post("/v1/do/example/Example", json={"message": "hi"}, headers=HEADERS)
    assert ok.status_code == 200
    invalid = await proxy.post("/v1/do/example/Example", json={"message": {"no": 1}}, headers=HEADERS)
    assert invalid.status_code == 400
    missing = await proxy.post(f"/v1/do/nope-{time.time_ns()}/Nothing", json={}, headers=HEADERS)
    assert missing.status_code == 404
    refused = await proxy.post("/v1/do/example/Example", json={"message": "hi"})
    assert refused.status_code == 401
    after = await scrape(proxy)

    answers = "spiff_connector_proxy_command_answers_total"
    assert moved(before, after, answers, command="example/Example", status="200", error_code="") == 1
    assert (
        moved(before, after, answers, command="example/Example", status="400", error_code="InvalidParameters")
        == 1
    )
    assert moved(before, after, answers, command="unknown", status="404", error_code="command_not_found") == 1
    assert (
        moved(before, after, answers, command="example/Example", status="401", error_code="Unauthorized") == 1
    )
    count = "spiff_connector_proxy_command_duration_seconds_count"
    assert moved(before, after, count, command="example/Example") == 3
    requests = "spiff_connector_proxy_http_requests_total"
    assert moved(before, after, requests, route=DO_ROUTE, method="POST", status="200") == 1
    assert moved(before, after, requests, route=DO_ROUTE, method="POST", status="404") == 1
    # The scrape itself counts, once the previous one has finished.
    assert moved(before, after, requests, route="/metrics", method="GET", status="200") == 1
    assert value(after, "spiff_connector_proxy_http_requests_in_flight") == 1  # this scrape


async def test_labels_stay_bounded(proxy):
    before = await scrape(proxy)
    for n in range(5):
        await proxy.post(f"/v1/do/random-{n}/Cmd{n}", json={}, headers=HEADERS)
        await proxy.get(f"/no/such/path/{n}")
        await proxy.request("BREW", "/liveness")
    after = await scrape(proxy)
    labels = {
        dict(label)["command"] for name, label in after if name.startswith("spiff_connector_proxy_command")
    }
    assert not [command for command in labels if command.startswith("random-")]
    requests = "spiff_connector_proxy_http_requests_total"
    assert moved(before, after, requests, route="unmatched", method="GET", status="404") == 5
    assert moved(before, after, requests, route="/liveness", method="other", status="405") == 5
    routes = {dict(label).get("route") for name, label in after if name == requests}
    assert not [route for route in routes if route and "/no/such" in route]


async def test_upstream_state_and_calls(connectors, tmp_path):
    port = free_port()
    server, _ = await create_server(by_name(connectors, "example"), f"127.0.0.1:{port}")
    try:
        async with proxy_fronting(f"up=127.0.0.1:{port}", tmp_path, CONNECTOR_PROXY_API_KEY=KEY) as proxy:
            before = await scrape(proxy)
            assert value(before, "spiff_connector_proxy_upstream_state", upstream="up", state="ready") == 1
            ok = await proxy.post("/v1/do/example/Example", json={"message": "there"}, headers=HEADERS)
            assert ok.status_code == 200
            await server.stop(None)
            deadline = time.monotonic() + 5
            while (
                await proxy.post("/v1/do/example/Example", json={"message": "x"}, headers=HEADERS)
            ).status_code != 503:
                assert time.monotonic() < deadline
            after = await scrape(proxy)
            calls = "spiff_connector_proxy_upstream_calls_total"
            assert moved(before, after, calls, upstream="up", code="OK") == 1
            assert moved(before, after, calls, upstream="up", code="UNAVAILABLE") >= 1
            assert value(after, "spiff_connector_proxy_upstream_state", upstream="up", state="ready") == 0
            assert (
                value(after, "spiff_connector_proxy_upstream_state", upstream="up", state="unavailable") == 1
            )
            answers = "spiff_connector_proxy_command_answers_total"
            assert (
                moved(
                    before,
                    after,
                    answers,
                    command="example/Example",
                    status="503",
                    error_code="ConnectorUnavailable",
                )
                >= 1
            )
    finally:
        await server.stop(None)


async def test_jobs_and_their_callbacks(connectors, tmp_path):
    with FakeSpiff() as spiff:
        async with proxy_fronting(
            "",
            tmp_path,
            by_name(connectors, "example"),
            CONNECTOR_PROXY_API_KEY=KEY,
            CONNECTOR_PROXY_CALLBACK_BASE_URL=spiff.url,
            CONNECTOR_PROXY_CALLBACK_API_KEY="callback-key",
        ) as proxy:
            before = await scrape(proxy)
            body = {
                "seconds": 0,
                "message": "later",
                "spiff__task_id": "task-metrics",
                "spiff__callback_url": f"{spiff.url}/v1.0/tasks/1/task-metrics/callback",
            }
            accepted = await proxy.post("/v1/do/example/Delay", json=body, headers=HEADERS)
            assert accepted.status_code == 202, accepted.text
            job_id = accepted.json()["command_response"]["body"]["job_id"]
            deadline = time.monotonic() + 10
            while (await proxy.get(f"/v1/jobs/{job_id}", headers=HEADERS)).json()["state"] != "delivered":
                assert time.monotonic() < deadline
            after = await scrape(proxy)
    assert value(after, "spiff_connector_proxy_jobs", state="delivered") == 1
    assert value(after, "spiff_connector_proxy_jobs", state="queued") == 0
    attempts = "spiff_connector_proxy_job_callback_attempts_total"
    assert moved(before, after, attempts, outcome="delivered") == 1
    assert moved(before, after, "spiff_connector_proxy_job_callback_duration_seconds_count") == 1
    answers = "spiff_connector_proxy_command_answers_total"
    assert moved(before, after, answers, command="example/Delay", status="202", error_code="") == 1


async def test_grpc_calls_by_method_and_code(connectors, proxy):
    server, port = await create_server(by_name(connectors, "example"), "127.0.0.1:0")
    method = "/spiff.connector.example.v1.ExampleService/Example"
    try:
        before = await scrape(proxy)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = example_pb2_grpc.ExampleServiceStub(channel)  # type: ignore[no-untyped-call]
            await stub.Example(example_pb2.ExampleRequest(message="over grpc"), timeout=5)
            unknown: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/no.Such/Method")
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await unknown(b"", timeout=5)
            assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED
        after = await scrape(proxy)
    finally:
        await server.stop(None)
    handled = "spiff_connector_proxy_grpc_server_handled_total"
    assert moved(before, after, handled, method=method, code="OK") == 1
    assert moved(before, after, handled, method="unknown", code="UNIMPLEMENTED") == 1


async def test_prometheus_bearer_credentials_are_the_api_key(proxy):
    bearer = await proxy.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})
    assert bearer.status_code == 200
    assert b"spiff_connector_proxy_http_requests_total" in bearer.content
    assert (await proxy.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
    assert (await proxy.get("/metrics", headers={"Authorization": f"Basic {KEY}"})).status_code == 401


async def test_openmetrics_when_asked(proxy):
    response = await proxy.get(
        "/metrics", headers={**HEADERS, "Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


async def test_a_metrics_port_of_its_own_needs_no_key(connectors, tmp_path):
    metrics_port = free_port()
    async with proxy_fronting(
        "",
        tmp_path,
        by_name(connectors, "example"),
        CONNECTOR_PROXY_API_KEY=KEY,
        CONNECTOR_PROXY_METRICS_PORT=str(metrics_port),
    ) as proxy:
        ok = await proxy.post("/v1/do/example/Example", json={"message": "hi"}, headers=HEADERS)
        assert ok.status_code == 200
        async with httpx.AsyncClient() as scraper:
            response = await scraper.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        names = {family.name for family in text_string_to_metric_families(response.text)}
        assert {"spiff_connector_proxy_command_answers", "spiff_connector_proxy_jobs"} <= names
    async with httpx.AsyncClient() as scraper:
        with pytest.raises(httpx.ConnectError):  # closed with the proxy
            await scraper.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2)


@pytest.mark.slow
def test_the_grpc_server_alone_serves_its_metrics_port(tmp_path):
    grpc_port, metrics_port = free_port(), free_port()
    env = {"CONNECTOR_PROXY_GRPC_PORT": str(grpc_port), "CONNECTOR_PROXY_METRICS_PORT": str(metrics_port)}
    log = tmp_path / "grpc.log"
    with process(["-m", "connector_proxy", "--grpc-only"], env, log) as proc:
        wait_for_grpc(f"127.0.0.1:{grpc_port}", proc, log)  # health Checks, counted
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = example_pb2_grpc.ExampleServiceStub(channel)  # type: ignore[no-untyped-call]
            stub.Example(example_pb2.ExampleRequest(message="counted"), timeout=5)
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        samples = parse(text)
        method = "/spiff.connector.example.v1.ExampleService/Example"
        assert (
            value(samples, "spiff_connector_proxy_grpc_server_handled_total", method=method, code="OK") == 1
        )
        health = "/grpc.health.v1.Health/Check"
        assert (
            value(samples, "spiff_connector_proxy_grpc_server_handled_total", method=health, code="OK") >= 1
        )
        stop(proc, log)
