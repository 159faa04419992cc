"""The pieces of the job runner on their own: Prefer parsing, proxy__ keys, callback URLs and
backoff, settings, and the gRPC JobsService."""

from __future__ import annotations

import json
from typing import Any

import anyio
import grpc
import pytest
from spiff.connector.example.v1 import example_pb2
from spiff.proxy.v1 import jobs_pb2, jobs_pb2_grpc

from jobs import (
    BrokerJobs,
    CallbackDelivery,
    EmbeddedJobs,
    NewJob,
    embedded_jobs,
    job_backend,
    jobs_service,
    prefers_async,
    run_job,
    split_proxy_options,
)
from rest_shim import Catalogue
from server import errors
from server.app import create_server
from server.invocation import LocalInvoker, Reply
from server.settings import Settings
from tests.jobs.conftest import CALLBACK_KEY, TASK_ID, callback_url, callbacks, job_in, running, spiff_body
from tests.upstreams import upstream_to


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (["respond-async"], True),
        (["Respond-Async"], True),
        (["return=minimal, respond-async; wait=10"], True),
        (["wait=5", "respond-async"], True),  # the header repeated
        ([' foo="a, respond-async", bar'], False),  # inside a quoted value
        (['foo="a \\" , respond-async"'], False),  # an escaped quote does not end it
        (["respond-asynchronously"], False),
        (["handling=lenient;respond-async"], False),  # a parameter, not a preference
        (["  RESPOND-ASYNC  =  1"], True),
        ([], False),
        ([""], False),
    ],
)
def test_prefer_header(headers, expected):
    assert prefers_async(headers) is expected


def test_proxy_options_are_removed_and_read():
    body = {"a": 1, "proxy__async": "True", "proxy__other": 2, "spiff__task_id": "t"}
    options = split_proxy_options(body)
    assert body == {"a": 1, "spiff__task_id": "t"}
    assert options.run_async is True
    assert options.problem is None
    assert options.logs == ["Ignored reserved parameter 'proxy__other': this proxy does not know it."]
    assert split_proxy_options({"proxy__async": None}).run_async is False
    assert split_proxy_options({"proxy__async": False}).run_async is False
    bad: object
    for bad in (1, "yes", [], {}):
        assert "proxy__async" in (split_proxy_options({"proxy__async": bad}).problem or "")


TASK_PATH = f"/v1.0/tasks/42/{TASK_ID}/callback"


@pytest.mark.parametrize(
    ("base", "url", "target"),
    [
        ("", callback_url(), callback_url()),
        ("http://backend:7000", callback_url(), f"http://backend:7000{TASK_PATH}"),
        ("http://backend:7000/", callback_url(), f"http://backend:7000{TASK_PATH}"),
        ("https://gw.example/spiff", callback_url(), f"https://gw.example/spiff{TASK_PATH}"),
        (
            "http://backend:7000",
            callback_url(base="http://localhost:7000/api"),
            f"http://backend:7000{TASK_PATH}",
        ),
        ("http://backend:7000", callback_url() + "?a=b", f"http://backend:7000{TASK_PATH}?a=b"),
        ("http://backend:7000/p", "http://old:1/hook/x?y=1", "http://backend:7000/p/hook/x?y=1"),
    ],
)
def test_callback_target(base, url, target):
    assert CallbackDelivery(base_url=base).target(url) == target


def test_callback_url_problems():
    open_delivery = CallbackDelivery()
    assert open_delivery.problem("http://anywhere:1/hook") is None
    assert open_delivery.problem("https://h/x") is None
    for bad in ("ftp://h/x", "h/x", "http:///x", ""):
        assert open_delivery.problem(bad), bad
    pinned = CallbackDelivery(base_url="http://backend:7000", api_key="k")
    assert pinned.problem(callback_url()) is None
    assert pinned.problem(callback_url(base="http://localhost:7000/api")) is None
    for bad in ("http://h/v1.0/tasks/42/t", "http://h/v1.0/process-instances/42", "http://h/hook"):
        assert pinned.problem(bad), bad


def test_a_credential_needs_a_base_url_and_only_one_kind():
    with pytest.raises(ValueError, match="base URL"):
        CallbackDelivery(api_key="k")
    with pytest.raises(ValueError, match="not both"):
        CallbackDelivery(base_url="http://b", api_key="k", bearer_token="t")
    delivery = CallbackDelivery(base_url="http://b", api_key=CALLBACK_KEY)
    assert CALLBACK_KEY not in repr(delivery)


def test_backoff_is_exponential_with_full_jitter_and_capped():
    delivery = CallbackDelivery(backoff_base=1.0, backoff_cap=60.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (500, 60.0)]:
        waits = [delivery.backoff(attempt) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling / 2  # spread over the range, not a fixed delay
    assert CallbackDelivery(backoff_base=0, backoff_cap=0).backoff(3) == 0


def test_settings_defaults_and_overrides(tmp_path):
    defaults = Settings.from_env({})
    assert defaults.jobs_db == "connector-proxy-jobs.sqlite3"
    assert (defaults.job_workers, defaults.job_timeout, defaults.callback_attempts) == (4, 3600.0, 10)
    assert (defaults.callback_backoff_base, defaults.callback_backoff_cap) == (1.0, 60.0)
    assert defaults.callback_base_url == ""
    assert defaults.callback_api_key is None
    settings = Settings.from_env(
        {
            "CONNECTOR_PROXY_JOBS_DB": str(tmp_path / "j.db"),
            "CONNECTOR_PROXY_JOB_WORKERS": "2",
            "CONNECTOR_PROXY_JOB_TIMEOUT": "7200",
            "CONNECTOR_PROXY_JOBS_RETENTION": "60",
            "CONNECTOR_PROXY_CALLBACK_BASE_URL": "http://backend:7000/",
            "CONNECTOR_PROXY_CALLBACK_API_KEY": "secret-key",
            "CONNECTOR_PROXY_CALLBACK_ATTEMPTS": "3",
            "CONNECTOR_PROXY_CALLBACK_BACKOFF_BASE": "0",
            "CONNECTOR_PROXY_CALLBACK_BACKOFF_CAP": "0.5",
            "CONNECTOR_PROXY_CALLBACK_TIMEOUT": "5",
        }
    )
    assert settings.callback_base_url == "http://backend:7000"
    assert (settings.job_workers, settings.job_timeout, settings.jobs_retention) == (2, 7200.0, 60.0)
    assert (settings.callback_attempts, settings.callback_backoff_cap, settings.callback_timeout) == (
        3,
        0.5,
        5,
    )
    assert "secret-key" not in repr(settings)
    jobs = embedded_jobs(settings)
    assert jobs.workers == 2
    assert jobs.delivery.attempts == 3
    assert jobs.delivery.credential


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"CONNECTOR_PROXY_CALLBACK_API_KEY": "k"}, "CONNECTOR_PROXY_CALLBACK_BASE_URL"),
        ({"CONNECTOR_PROXY_CALLBACK_BEARER_TOKEN": "t"}, "CONNECTOR_PROXY_CALLBACK_BASE_URL"),
        (
            {
                "CONNECTOR_PROXY_CALLBACK_API_KEY": "k",
                "CONNECTOR_PROXY_CALLBACK_BEARER_TOKEN": "t",
                "CONNECTOR_PROXY_CALLBACK_BASE_URL": "http://b",
            },
            "not both",
        ),
        ({"CONNECTOR_PROXY_CALLBACK_API_KEY": " "}, "CONNECTOR_PROXY_CALLBACK_API_KEY"),
        ({"CONNECTOR_PROXY_CALLBACK_BASE_URL": "backend:7000"}, "CONNECTOR_PROXY_CALLBACK_BASE_URL"),
        ({"CONNECTOR_PROXY_CALLBACK_BASE_URL": "http://b/?q=1"}, "CONNECTOR_PROXY_CALLBACK_BASE_URL"),
        ({"CONNECTOR_PROXY_JOB_WORKERS": "0"}, "CONNECTOR_PROXY_JOB_WORKERS"),
        ({"CONNECTOR_PROXY_JOB_TIMEOUT": "0"}, "CONNECTOR_PROXY_JOB_TIMEOUT"),
        ({"CONNECTOR_PROXY_CALLBACK_ATTEMPTS": "0"}, "CONNECTOR_PROXY_CALLBACK_ATTEMPTS"),
        ({"CONNECTOR_PROXY_CALLBACK_BACKOFF_BASE": "-1"}, "CONNECTOR_PROXY_CALLBACK_BACKOFF_BASE"),
        (
            {"CONNECTOR_PROXY_CALLBACK_BACKOFF_BASE": "5", "CONNECTOR_PROXY_CALLBACK_BACKOFF_CAP": "1"},
            "CONNECTOR_PROXY_CALLBACK_BACKOFF_CAP",
        ),
        ({"CONNECTOR_PROXY_JOB_RUN_ATTEMPTS": "0"}, "CONNECTOR_PROXY_JOB_RUN_ATTEMPTS"),
        ({"CONNECTOR_PROXY_JOBS_BROKER_URL": "redis://u:pw@h/0"}, "must be a amqp:// or amqps:// URL"),
        ({"CONNECTOR_PROXY_JOBS_REDIS_URL": "http://u:pw@h/"}, "CONNECTOR_PROXY_JOBS_REDIS_URL"),
        ({"CONNECTOR_PROXY_JOBS_NAMESPACE": "a b"}, "CONNECTOR_PROXY_JOBS_NAMESPACE"),
        ({"CONNECTOR_PROXY_JOBS_NAMESPACE": "a:b"}, "CONNECTOR_PROXY_JOBS_NAMESPACE"),
    ],
)
def test_settings_mistakes_stop_start_up(env, complaint):
    with pytest.raises(ValueError, match=complaint) as raised:
        Settings.from_env(env)
    assert ":pw@" not in str(raised.value)  # a URL's password is never echoed


def test_broker_settings_choose_the_backend():
    assert isinstance(job_backend(Settings.from_env({})), EmbeddedJobs)
    settings = Settings.from_env(
        {
            "CONNECTOR_PROXY_JOBS_BROKER_URL": "amqp://user:broker-pw@rabbit:5672/vhost",
            "CONNECTOR_PROXY_JOBS_REDIS_URL": "redis://:redis-pw@cache:6379/2",
            "CONNECTOR_PROXY_JOBS_NAMESPACE": "team-a.jobs",
            "CONNECTOR_PROXY_JOB_RUN_ATTEMPTS": "5",
        }
    )
    assert (settings.jobs_namespace, settings.job_run_attempts) == ("team-a.jobs", 5)
    assert "broker-pw" not in repr(settings)
    assert "redis-pw" not in repr(settings)
    backend = job_backend(settings)
    assert isinstance(backend, BrokerJobs)
    assert (backend.broker_url, backend.redis_url) == (settings.jobs_broker_url, settings.jobs_redis_url)
    assert "pw" not in repr(backend)
    assert Settings.from_env({}).jobs_redis_url == "redis://127.0.0.1:6379/0"


@pytest.mark.anyio
async def test_jobs_over_grpc_and_not_as_a_connector(connectors, make_jobs, spiff):
    jobs = make_jobs()
    await jobs.start(Catalogue(c.service for c in connectors), LocalInvoker(connectors))
    server, port = await create_server(connectors, "127.0.0.1:0", services=[jobs_service(jobs)])
    target = f"127.0.0.1:{port}"
    try:
        request = example_pb2.DelayRequest(seconds=0).SerializeToString()
        method = "/spiff.connector.example.v1.ExampleService/Delay"
        submitted = await jobs.submit(NewJob(method, "example/Delay", request, callback_url(), TASK_ID))
        await callbacks(spiff, 1)
        async with grpc.aio.insecure_channel(target) as channel:
            stub = jobs_pb2_grpc.JobsServiceStub(channel)  # type: ignore[no-untyped-call]
            for _ in range(200):
                job = (await stub.GetJob(jobs_pb2.GetJobRequest(id=submitted.job_id))).job
                if job.state == jobs_pb2.JOB_STATE_DELIVERED:
                    break
                await anyio.sleep(0.02)
            assert job.state == jobs_pb2.JOB_STATE_DELIVERED
            assert (job.command, job.task_id, job.attempts, job.delivery_attempts) == (
                "example/Delay",
                TASK_ID,
                1,
                1,
            )
            assert job.created_at.seconds > 0
            assert job.updated_at.ToNanoseconds() >= job.created_at.ToNanoseconds()
            listed = await stub.ListJobs(jobs_pb2.ListJobsRequest(state=jobs_pb2.JOB_STATE_DELIVERED))
            assert [j.id for j in listed.jobs] == [submitted.job_id]
            assert listed.counts["delivered"] == 1
            assert listed.counts["queued"] == 0
            assert (
                list((await stub.ListJobs(jobs_pb2.ListJobsRequest(state=jobs_pb2.JOB_STATE_FAILED))).jobs)
                == []
            )
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.GetJob(jobs_pb2.GetJobRequest(id="nope"))
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as delivered:
                await stub.RedeliverJob(jobs_pb2.RedeliverJobRequest(id=submitted.job_id))
            assert delivered.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "only failed jobs" in (delivered.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await stub.RedeliverJob(jobs_pb2.RedeliverJobRequest(id="nope"))
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        # Reflection lists JobsService, but a shim fronting this server does not take it for a connector.
        async with upstream_to(target) as upstream:
            services = upstream.services
        assert "spiff.proxy.v1.JobsService" not in {s.full_name for s in services}
        assert "spiff.connector.example.v1.ExampleService" in {s.full_name for s in services}
    finally:
        await server.stop(None)
        await jobs.close()


@pytest.mark.anyio
async def test_no_credential_is_logged(make_app, make_jobs, spiff, caplog):
    caplog.set_level("DEBUG")
    spiff.script("500", "200")
    async with running(make_app(jobs=make_jobs())) as client:
        accepted = await client.post("/v1/do/example/Delay", json=spiff_body(seconds=0))
        await job_in(client, accepted.json()["command_response"]["body"]["job_id"], "delivered")
        views = (await client.get("/v1/jobs")).text
    assert CALLBACK_KEY not in caplog.text
    assert CALLBACK_KEY not in views
    assert "retrying" in caplog.text


class _BusyThenAnswers:
    """An invoker whose connector is busy for the first ``busy`` calls (nothing started), then runs."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.timeouts: list[float] = []

    async def invoke(self, full_method: str, request: Any, timeout: float) -> Reply:
        self.timeouts.append(timeout)
        if len(self.timeouts) <= self.busy:
            return Reply(None, errors.ConnectorBusy("busy", retry_after=0.05).to_failure())
        return Reply(example_pb2.ExampleResponse(message=request.message), None)


async def test_a_job_waits_out_a_busy_connector_within_its_timeout(connectors):
    catalogue = Catalogue(c.service for c in connectors)
    spec = catalogue.find("example", "Example")
    assert spec is not None
    request = example_pb2.ExampleRequest(message="hi").SerializeToString()
    invoker = _BusyThenAnswers(busy=2)
    body = await run_job({spec.full_method: spec}, invoker, spec.full_method, request, timeout=5)
    assert json.loads(body)["command_response"]["body"]["message"] == "hi"
    assert len(invoker.timeouts) == 3
    assert invoker.timeouts[0] == 5
    assert all(later < 5 for later in invoker.timeouts[1:])
    # Out of time: the refusal is the job's answer.
    stubborn = _BusyThenAnswers(busy=1000)
    body = await run_job({spec.full_method: spec}, stubborn, spec.full_method, request, timeout=0.2)
    assert json.loads(body)["error"]["error_code"] == "ConnectorBusy"
    assert len(stubborn.timeouts) < 10
