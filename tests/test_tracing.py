"""OpenTelemetry traces (connector_proxy._tracing), recorded with the SDK's in-memory exporter:
one trace from the REST request through a remote upstream's server, a caller's ``traceparent``
continued, ``traceparent`` sent with outbound HTTP and job callbacks, jobs in the trace that
accepted them, no secret on any span; and, with tracing off, nothing installed at all."""

from __future__ import annotations

import contextlib
import gzip
import http.server
import itertools
import json
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent import futures
from typing import Any

import anyio
import grpc
import httpx
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import SpanKind
from spiff.connector.example.v1 import example_pb2, example_pb2_grpc
from starlette.applications import Starlette

from connector_proxy._processes import build_proxy_app
from connector_proxy._tracing import requested, start_tracing
from rest_shim import Catalogue, create_app
from server._registry import Connector
from server.app import create_server
from server.settings import Settings
from server.upstreams import Federation, Upstream, UpstreamConfig
from tests.connectors.http_target import HttpTarget
from tests.jobs.broker import InProcessBroker
from tests.jobs.fake_spiff import FakeSpiff
from tests.ports import free_port
from tests.processes import ROOT, process, stop, wait_for_http
from tests.upstreams import proxy_fronting

pytestmark = pytest.mark.anyio

API_KEY = "proxy-key-5b1e9d-never-on-a-span"
CALLBACK_KEY = "cb-key-0c4f7a-never-on-a-span"
PASSWORD = "pw-9e2d1f-never-on-a-span"
URL_PASSWORD = "pw-51c7e0-never-on-a-span"
QUERY_TOKEN = "tok-3a8b6c-never-on-a-span"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
OTEL_SETTINGS = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)


class _Switch(Sampler):
    """Samples while a test's ``spans`` fixture runs, and nothing in the other tests."""

    on = False

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: Any = None,
        attributes: Any = None,
        *args: Any,
    ) -> SamplingResult:
        if not self.on:
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)  # a sampler passes them on

    def get_description(self) -> str:
        return "on while a tracing test runs"


@pytest.fixture(scope="session")
def recorder() -> tuple[TracerProvider, InMemorySpanExporter, _Switch]:
    """One SDK tracer provider for the whole session, made global: OpenTelemetry lets a process set
    its global provider once, and the job spans (jobs/) come from the global one."""
    switch = _Switch()
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=switch)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider, "another test set the global tracer provider"
    return provider, exporter, switch


@pytest.fixture
def spans(recorder: tuple[TracerProvider, InMemorySpanExporter, _Switch]) -> Iterator[InMemorySpanExporter]:
    """Tracing on, as the proxy installs it, with spans recorded in memory; undone afterwards."""
    provider, exporter, switch = recorder
    exporter.clear()
    switch.on = True
    installed = start_tracing(provider=provider)
    assert installed is not None
    try:
        yield exporter
    finally:
        installed.close()
        switch.on = False
        exporter.clear()


@pytest.fixture
def no_otel_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_SETTINGS:
        monkeypatch.delenv(name, raising=False)


def by_name(recorded: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [span for span in recorded if span.name == name]
    assert len(found) == 1, f"{name}: {[span.name for span in recorded]}"
    return found[0]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def started(span: ReadableSpan) -> int:
    return span.start_time or 0


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def trace_id_of(span: ReadableSpan) -> str:
    return trace.format_trace_id(span.context.trace_id)


def sent_by(span: ReadableSpan) -> str:
    """The ``traceparent`` a client span sends, without its flags (sampled, random trace id)."""
    return f"00-{trace_id_of(span)}-{trace.format_span_id(span.context.span_id)}"


def without_flags(traceparent: str) -> str:
    return traceparent.rsplit("-", 1)[0]


def everything_recorded(recorded: Sequence[ReadableSpan]) -> str:
    """Every name, attribute, status and event of ``recorded`` as text, to search for secrets."""
    return json.dumps([json.loads(span.to_json()) for span in recorded])


async def wait_for_spans(
    exporter: InMemorySpanExporter, timeout: float = 10.0, **counts: int
) -> list[ReadableSpan]:
    """The finished spans once there are ``counts[name]`` of each name (jobs end after the answer);
    names are given with ``_`` for spaces."""
    wanted = {name.replace("_", " "): count for name, count in counts.items()}
    deadline = time.monotonic() + timeout
    while True:
        recorded = list(exporter.get_finished_spans())
        names = [span.name for span in recorded]
        if all(names.count(name) >= count for name, count in wanted.items()):
            return recorded
        if time.monotonic() > deadline:
            pytest.fail(f"not {wanted} among {names}")
        await anyio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://proxy.test")
    async with app.router.lifespan_context(app), client:
        yield client


def proxy_app(tmp_path: pathlib.Path, connectors: Sequence[Connector], **env: str) -> Starlette:
    settings = Settings.from_env({"CONNECTOR_PROXY_JOBS_DB": str(tmp_path / "jobs.sqlite3"), **env})
    return build_proxy_app(settings, connectors, serve_grpc=False)


async def test_a_call_through_a_remote_upstream_is_one_trace(spans, connectors, tmp_path):
    server, port = await create_server(connectors, "127.0.0.1:0")  # made with tracing on: instrumented
    try:
        async with proxy_fronting(f"up=127.0.0.1:{port}", tmp_path) as client:
            response = await client.post("/v1/do/example/Example", json={"message": "hi"})
            assert response.status_code == 200, response.text
    finally:
        await server.stop(None)

    recorded = spans.get_finished_spans()
    request = by_name(recorded, "POST /v1/do/{connector}/{command}")
    invoke = by_name(recorded, "invoke example/Example")
    method = "/spiff.connector.example.v1.ExampleService/Example"
    client_call = next(span for span in recorded if span.name == method and span.kind is SpanKind.CLIENT)
    served = next(span for span in recorded if span.name == method and span.kind is SpanKind.SERVER)
    assert request.kind is SpanKind.SERVER
    assert attrs(request)["http.route"] == "/v1/do/{connector}/{command}"
    assert request.parent is None
    assert parent_of(invoke) == request.context.span_id
    assert parent_of(client_call) == invoke.context.span_id
    assert parent_of(served) == client_call.context.span_id
    assert served.parent is not None
    assert served.parent.is_remote  # through the metadata, not in-process
    assert {trace_id_of(span) for span in (request, invoke, client_call, served)} == {trace_id_of(request)}
    assert attrs(invoke)["spiff.command"] == "example/Example"
    assert attrs(invoke)["spiff.upstream"] == "up"
    assert attrs(invoke)["spiff.request_id"] == response.headers["x-request-id"]
    # The upstream's discovery and health watch are housekeeping, not calls anyone made.
    assert not [span.name for span in recorded if "grpc.health" in span.name or "Reflection" in span.name]


async def test_a_call_passed_through_the_grpc_port_is_one_trace(spans, connectors, tmp_path):
    upstream_server, port = await create_server(connectors, "127.0.0.1:0")
    federation = Federation([], [Upstream(UpstreamConfig(name="up", target=f"127.0.0.1:{port}"))])
    await federation.start()
    proxy_server, proxy_port = await create_server([], "127.0.0.1:0", federation=federation)
    try:
        # A caller's own channel, made with tracing on: it sends its traceparent, which the proxy
        # must replace with its own (not pass on beside it).
        async with grpc.aio.insecure_channel(f"127.0.0.1:{proxy_port}") as channel:
            stub = example_pb2_grpc.ExampleServiceStub(channel)  # type: ignore[no-untyped-call]
            answer = await stub.Example(example_pb2.ExampleRequest(message="hi"), timeout=5)
        assert answer.message == "hi"
    finally:
        await proxy_server.stop(None)
        await federation.close()
        await upstream_server.stop(None)

    method = "/spiff.connector.example.v1.ExampleService/Example"
    calls = sorted((span for span in spans.get_finished_spans() if span.name == method), key=started)
    assert [span.kind for span in calls] == [
        SpanKind.CLIENT,
        SpanKind.SERVER,
        SpanKind.CLIENT,
        SpanKind.SERVER,
    ]
    assert calls[0].parent is None
    for parent, child in itertools.pairwise(calls):
        assert parent_of(child) == parent.context.span_id
    assert {trace_id_of(span) for span in calls} == {trace_id_of(calls[0])}


async def test_a_callers_traceparent_is_continued(spans, connectors, tmp_path):
    app = proxy_app(tmp_path, connectors, CONNECTOR_PROXY_PATH_PREFIX="/standard")
    async with running(app) as client:
        response = await client.post(
            "/standard/v1/do/example/Example",
            json={"message": "hi"},
            headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
        )
        assert response.status_code == 200, response.text
        for probe in ("/standard/liveness", "/standard/readiness", "/standard/metrics"):
            assert (await client.get(probe)).status_code == 200
        assert (await client.get("/standard/v1/commands")).status_code == 200

    names = sorted(span.name for span in spans.get_finished_spans())
    assert names == [
        "GET /standard/v1/commands",
        "POST /standard/v1/do/{connector}/{command}",
        "invoke example/Example",
    ]
    request = by_name(spans.get_finished_spans(), "POST /standard/v1/do/{connector}/{command}")
    assert trace_id_of(request) == TRACE_ID
    assert request.parent is not None
    assert trace.format_span_id(request.parent.span_id) == PARENT_ID
    invoke = by_name(spans.get_finished_spans(), "invoke example/Example")
    assert trace_id_of(invoke) == TRACE_ID
    assert "spiff.upstream" not in attrs(invoke)  # local: no upstream


async def test_outbound_http_carries_the_trace_and_no_span_holds_a_secret(spans, connectors, tmp_path):
    app = proxy_app(tmp_path, connectors, CONNECTOR_PROXY_API_KEY=API_KEY)
    with HttpTarget() as target:
        echo = target.url(f"/echo?token={QUERY_TOKEN}")
        calls = [
            {
                "url": echo,
                "basic_auth_username": "alice",
                "basic_auth_password": PASSWORD,
            },  # a secret parameter
            {"url": echo.replace("http://", f"http://bob:{URL_PASSWORD}@")},  # credentials in the URL
        ]
        # aiohttp's error for too many redirects quotes the first URL, query included.
        looping = {"url": target.url(f"/loop?token={QUERY_TOKEN}")}
        async with running(app) as client:
            answers = [
                await client.post(
                    "/v1/do/http/GetRequestV2", json=body, headers={"spiff-connector-proxy-api-key": API_KEY}
                )
                for body in [*calls, looping]
            ]
    assert answers.pop().json()["error"]["error_code"] == "TooManyRedirects"
    recorded = spans.get_finished_spans()
    requests = sorted(
        (span for span in recorded if span.name == "POST /v1/do/{connector}/{command}"),
        key=started,
    )
    invokes = sorted(
        (span for span in recorded if span.name == "invoke http/GetRequestV2"),
        key=started,
    )
    outbound = sorted((span for span in recorded if span.name == "GET"), key=started)
    failed = outbound.pop()  # the redirect loop's request
    (event,) = failed.events
    assert event.name == "exception"
    assert dict(event.attributes or {})["exception.message"] == "TooManyRedirects"
    assert failed.status.description == "TooManyRedirects"
    requests, invokes = requests[:2], invokes[:2]
    assert len(requests) == len(invokes) == len(outbound) == 2
    for answer, request, invoke, get in zip(answers, requests, invokes, outbound, strict=True):
        assert answer.status_code == 200, answer.text
        echoed = answer.json()["command_response"]["body"]
        headers = {name.lower(): value for name, value in echoed["headers"].items()}
        assert get.kind is SpanKind.CLIENT
        assert parent_of(get) == invoke.context.span_id
        assert parent_of(invoke) == request.context.span_id
        assert trace_id_of(get) == trace_id_of(request)
        assert without_flags(headers["traceparent"]) == sent_by(get)
        assert attrs(get)["http.url"] == target.url("/echo")  # no user, password or query
        assert attrs(get)["http.status_code"] == 200
    text = everything_recorded(recorded)
    for secret in (API_KEY, PASSWORD, URL_PASSWORD, QUERY_TOKEN):
        assert secret not in text


def job_app(
    backend: str, tmp_path: pathlib.Path, connectors: Sequence[Connector], spiff: FakeSpiff
) -> Starlette:
    """The proxy with a job backend calling back ``spiff``: embedded as ``build_proxy_app`` makes it,
    or the broker mode (RabbitMQ and Redis, a worker in this process) assembled the same way."""
    if backend == "embedded":
        return proxy_app(
            tmp_path,
            connectors,
            CONNECTOR_PROXY_CALLBACK_BASE_URL=spiff.url,
            CONNECTOR_PROXY_CALLBACK_API_KEY=CALLBACK_KEY,
            CONNECTOR_PROXY_CALLBACK_BACKOFF_BASE="0.01",
        )
    tracing = start_tracing()
    assert tracing is not None
    federation = Federation(connectors, [])
    jobs = InProcessBroker({"base_url": spiff.url, "api_key": CALLBACK_KEY, "backoff_base": 0.01})
    app = create_app(Catalogue(federation.services), tracing.traced(federation), jobs=jobs)
    tracing.instrument_app(app)
    return app


@pytest.mark.parametrize("backend", ["embedded", "broker"])
async def test_a_job_runs_and_calls_back_in_the_trace_that_accepted_it(spans, connectors, tmp_path, backend):
    with FakeSpiff() as spiff:
        spiff.script("500")  # the first callback is retried: two attempts
        app = job_app(backend, tmp_path, connectors, spiff)
        task_id = "6c1b3a52-0d7e-4f0e-9a4b-2f5d8e7c9a10"
        async with running(app) as client:
            response = await client.post(
                "/v1/do/example/Delay",
                json={
                    "seconds": 0,
                    "spiff__task_id": task_id,
                    "spiff__callback_url": f"http://localhost:7000/v1.0/tasks/42/{task_id}/callback",
                },
            )
            assert response.status_code == 202, response.text
            job_id = response.json()["command_response"]["body"]["job_id"]
            calls = await anyio.to_thread.run_sync(spiff.wait_for, 2, 10.0)
            recorded = await wait_for_spans(spans, job_callback=2, PUT=2)

    request = by_name(recorded, "POST /v1/do/{connector}/{command}")
    run = by_name(recorded, "job run example/Delay")
    invoke = by_name(recorded, "invoke example/Delay")
    attempts = sorted(
        (span for span in recorded if span.name == "job callback"),
        key=lambda span: attrs(span)["spiff.callback.attempt"],
    )
    puts = [span for span in recorded if span.name == "PUT"]
    assert {trace_id_of(span) for span in recorded} == {trace_id_of(request)}
    assert run.kind is SpanKind.CONSUMER
    assert parent_of(run) == request.context.span_id
    assert attrs(run)["spiff.job.id"] == job_id
    assert attrs(run)["spiff.job.attempt"] == 1
    assert parent_of(invoke) == run.context.span_id
    assert [attrs(span)["spiff.callback.outcome"] for span in attempts] == ["retry", "delivered"]
    assert [parent_of(span) for span in attempts] == [request.context.span_id] * 2
    assert sorted(parent_of(span) or 0 for span in puts) == sorted(span.context.span_id for span in attempts)
    for call, put in zip(calls, sorted(puts, key=started), strict=True):
        assert without_flags(call.headers["traceparent"]) == sent_by(put)
    assert CALLBACK_KEY not in everything_recorded(recorded)


@pytest.mark.usefixtures("no_otel_settings")
async def test_with_tracing_off_the_app_is_assembled_unwrapped(connectors, tmp_path):
    app = proxy_app(tmp_path, connectors)
    assert app.user_middleware == []
    assert type(app.state.endpoints.invoker) is Federation
    assert start_tracing() is None


def test_with_tracing_off_no_sdk_or_instrumentation_is_imported():
    code = (
        "from server._registry import discover; from connector_proxy._processes import build_proxy_app; "
        "from server.settings import Settings; "
        "build_proxy_app(Settings.from_env({}), discover(['connectors'])); import sys; "
        "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith(('opentelemetry.sdk', "
        "'opentelemetry.instrumentation', 'opentelemetry.exporter'))}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_without_otel(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        pytest.param({}, None, id="nothing"),
        pytest.param({"OTEL_SERVICE_NAME": "proxy"}, None, id="a service name alone"),
        pytest.param({"OTEL_TRACES_EXPORTER": "otlp"}, "OTEL_TRACES_EXPORTER=otlp", id="an exporter"),
        pytest.param({"OTEL_TRACES_EXPORTER": "console"}, "OTEL_TRACES_EXPORTER=console", id="console"),
        pytest.param({"OTEL_TRACES_EXPORTER": "none"}, None, id="exporter none"),
        pytest.param(
            {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"},
            None,
            id="exporter none beats an endpoint",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, "OTEL_EXPORTER_OTLP_ENDPOINT", id="an endpoint"
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"},
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            id="a traces endpoint",
        ),
        pytest.param({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4317"}, None, id="a metrics endpoint"),
        pytest.param(
            {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, None, id="the SDK disabled"
        ),
        pytest.param(
            {"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"},
            "OTEL_TRACES_EXPORTER=otlp",
            id="the SDK not disabled",
        ),
    ],
)
def test_which_settings_turn_tracing_on(settings, reason):
    assert requested(settings) == reason


def test_settings_asking_for_traces_without_the_extra_warn_and_trace_nothing():
    # A fresh interpreter where the extra cannot be imported (None in sys.modules fails the import).
    code = (
        "import logging, sys; sys.modules['opentelemetry.instrumentation.asgi'] = None; "
        "logging.basicConfig(level='INFO', format='%(levelname)s %(message)s'); "
        "from connector_proxy._tracing import start_tracing; print(start_tracing())"
    )
    env = {**_without_otel(), "OTEL_TRACES_EXPORTER": "otlp"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"
    assert (
        "WARNING OTEL_TRACES_EXPORTER=otlp asks for traces, but the otel extra is not installed"
        in result.stderr
    )
    assert "pip install 'spiff-connector-proxy[otel]'" in result.stderr


def _without_otel() -> dict[str, str]:
    import os

    return {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}


class _Collector:
    """An OTLP receiver on loopback, over gRPC or HTTP/protobuf: keeps every span it is sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.lock = threading.Lock()

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def spans(self) -> list[tuple[str, str]]:
        """(service name, span name) of every span received."""
        with self.lock:
            found = []
            for request in self.requests:
                for resource_spans in request.resource_spans:
                    service = next(
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    )
                    for scope in resource_spans.scope_spans:
                        found += [(service, span.name) for span in scope.spans]
            return found


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, collector: _Collector) -> None:
        self.collector = collector

    def Export(self, request: Any, context: Any) -> trace_service_pb2.ExportTraceServiceResponse:
        self.collector.add(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@contextlib.contextmanager
def otlp_receiver(protocol: str) -> Iterator[tuple[_Collector, str]]:
    """A collector and the OTLP traces endpoint to give the proxy for ``protocol``."""
    collector = _Collector()
    if protocol == "grpc":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(collector), server)  # type: ignore[no-untyped-call]
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            yield collector, f"http://127.0.0.1:{port}"
        finally:
            server.stop(None)
        return

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            collector.add(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    http_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=http_server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield collector, f"http://127.0.0.1:{http_server.server_address[1]}/v1/traces"
    finally:
        http_server.shutdown()
        http_server.server_close()
        thread.join()


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_the_proxy_process_exports_its_spans_over_otlp(tmp_path, protocol):
    """The settings alone, in a real process: the SDK's own configuration, the OTLP exporter (its
    protobuf code on this project's protobuf 7) and a collector on loopback."""
    port, grpc_port = free_port(), free_port()
    log = tmp_path / "proxy.log"
    with otlp_receiver(protocol) as (collector, endpoint):
        env = {
            **{name: "" for name in OTEL_SETTINGS},
            "CONNECTOR_PROXY_PORT": str(port),
            "CONNECTOR_PROXY_GRPC_PORT": str(grpc_port),
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": protocol,
            "OTEL_SERVICE_NAME": "connector-proxy-under-test",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
        with process(["-m", "connector_proxy"], env, log) as proc:
            base_url = f"http://127.0.0.1:{port}"
            wait_for_http(base_url, proc, log)
            response = httpx.post(f"{base_url}/v1/do/example/Example", json={"message": "hi"}, timeout=5)
            assert response.status_code == 200
            stop(proc, log)  # the provider flushes at exit
        received = collector.spans()
    assert ("connector-proxy-under-test", "POST /v1/do/{connector}/{command}") in received
    assert ("connector-proxy-under-test", "invoke example/Example") in received
    assert not [name for _, name in received if "liveness" in name]
    assert (
        "tracing on (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT): service connector-proxy-under-test"
        in log.read_text()
    )
