"""``connector-proxy jobs``, ``job``, ``redeliver`` and ``upstreams`` against real proxy processes:
long-running calls of ``example/Delay`` whose callbacks a fake spiff-arena takes, read and redelivered
over REST and over ``spiff.proxy.v1.JobsService``."""

from __future__ import annotations

import json
import pathlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cli.conftest import API_KEY, RunningProxy, run, run_json
from tests.jobs.fake_spiff import FakeSpiff
from tests.ports import free_port
from tests.processes import process, wait_for_grpc, wait_for_http

pytestmark = pytest.mark.slow

PATHS = [pytest.param([], id="rest"), pytest.param(["--grpc"], id="grpc")]
UPSTREAM_KEY = "upstream-key-e41f"


def start_job(proxy: RunningProxy, spiff: FakeSpiff) -> str:
    """Calls example/Delay asynchronously (at once, no wait); its job's id."""
    task_id = str(uuid.uuid4())
    callback = f"{spiff.url}/v1.0/tasks/42/{task_id}/callback"
    result = run(
        proxy,
        "call",
        "example/Delay",
        "seconds:=0",
        "message=later",
        f"spiff__task_id={task_id}",
        "--callback-url",
        callback,
        "--async",
    )
    assert result.exit_code == 0, result.stderr
    accepted = json.loads(result.stdout)
    assert accepted["status"] == "queued"
    assert f"connector-proxy job {accepted['job_id']}" in result.stderr
    job_id: str = accepted["job_id"]
    return job_id


def wait_for(proxy: RunningProxy, job_id: str, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        job: dict[str, Any] = run_json(proxy, "job", job_id, "--json")
        if job["state"] == state:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


@pytest.fixture(scope="module")
def delivered(proxy: RunningProxy, spiff: FakeSpiff) -> str:
    """A job whose callback spiff-arena took."""
    job_id = start_job(proxy, spiff)
    wait_for(proxy, job_id, "delivered")
    return job_id


def test_an_async_call_is_a_job_whose_result_is_called_back(proxy: RunningProxy, spiff: FakeSpiff, delivered):
    bodies = [call.json()["command_response"]["body"] for call in spiff.calls]
    assert {"message": "later", "waited_seconds": 0} in bodies


@pytest.mark.parametrize("path", PATHS)
def test_job_shows_one_job(proxy: RunningProxy, delivered, path):
    job = run_json(proxy, "job", delivered, "--json", *path)
    assert {k: job[k] for k in ("id", "command", "state", "attempts", "delivery_attempts")} == {
        "id": delivered,
        "command": "example/Delay",
        "state": "delivered",
        "attempts": 1,
        "delivery_attempts": 1,
    }
    assert job["created_at"].endswith("Z")
    result = run(proxy, "job", delivered, *path)
    assert result.exit_code == 0, result.stderr
    fields = dict(line.split(maxsplit=1) for line in result.stdout.splitlines())
    assert (fields["id"], fields["state"], fields["last_error"]) == (delivered, "delivered", "-")


@pytest.mark.parametrize("path", PATHS)
def test_jobs_are_the_same_over_rest_and_grpc(proxy: RunningProxy, delivered, path):
    listed = run_json(proxy, "jobs", "--json", *path)
    assert delivered in [job["id"] for job in listed["jobs"]]
    assert list(listed["counts"]) == ["queued", "running", "delivering", "delivered", "failed"]
    assert listed["counts"]["delivered"] >= 1
    assert listed == run_json(proxy, "jobs", "--json", *([] if path else ["--grpc"]))


@pytest.mark.parametrize("path", PATHS)
def test_jobs_table_filters_by_state(proxy: RunningProxy, delivered, path):
    result = run(proxy, "jobs", "--state", "delivered", "--limit", "1000", *path)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "COMMAND", "STATE"]
    assert any(line.split()[:3] == [delivered, "example/Delay", "delivered"] for line in lines)
    assert lines[-1].startswith("All jobs: ")
    failed = run(proxy, "jobs", "--state", "failed", *path)
    assert delivered not in failed.stdout


@pytest.mark.parametrize("path", PATHS)
def test_an_unknown_job_exits_1(proxy: RunningProxy, path):
    result = run(proxy, "job", "no-such-job", *path)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: JobNotFound: ")


@pytest.mark.parametrize("path", PATHS)
def test_redelivering_a_job_that_did_not_fail_exits_1(proxy: RunningProxy, delivered, path):
    result = run(proxy, "redeliver", delivered, *path)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: JobNotRedeliverable: ")


@pytest.mark.parametrize("path", PATHS)
def test_a_failed_job_is_redelivered(proxy: RunningProxy, spiff: FakeSpiff, path):
    spiff.script("404")  # spiff-arena's answer that fails a job at once
    job_id = start_job(proxy, spiff)
    assert wait_for(proxy, job_id, "failed")["last_error"]
    result = run(proxy, "redeliver", job_id, "--json", *path)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["state"] in ("delivering", "delivered")
    assert wait_for(proxy, job_id, "delivered")["delivery_attempts"] == 1  # a fresh count


def test_jobs_need_the_api_key(proxy: RunningProxy):
    for path in ([], ["--grpc"]):
        result = run(proxy, "jobs", *path, CONNECTOR_PROXY_API_KEY=None)
        assert result.exit_code == 4, path


def test_a_bad_state_is_a_usage_error(proxy: RunningProxy):
    result = run(proxy, "jobs", "--state", "lost")
    assert result.exit_code == 2
    assert "'lost' is not one of" in result.stderr


def test_upstreams_of_a_proxy_that_fronts_none(proxy: RunningProxy):
    assert run_json(proxy, "upstreams", "--json") == {"upstreams": []}
    result = run(proxy, "upstreams")
    assert (result.exit_code, result.stdout.startswith("No upstreams")) == (0, True)


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningProxy, str]]:
    """The REST shim alone (``--shim-only``, with the API key) in front of a gRPC server
    (``--grpc-only``); the shim, and the gRPC server's address."""
    directory: pathlib.Path = tmp_path_factory.mktemp("shim")
    grpc_port, port = free_port(), free_port()
    target = f"127.0.0.1:{grpc_port}"
    grpc_log, shim_log = directory / "grpc.log", directory / "shim.log"
    grpc_env = {"CONNECTOR_PROXY_GRPC_PORT": str(grpc_port), "CONNECTOR_PROXY_API_KEY": UPSTREAM_KEY}
    with process(["-m", "connector_proxy", "--grpc-only"], grpc_env, grpc_log) as server:
        wait_for_grpc(target, server, grpc_log)
        shim_env = {
            "CONNECTOR_PROXY_PORT": str(port),
            "CONNECTOR_PROXY_GRPC_TARGETS": f"node={target}",
            "CONNECTOR_PROXY_UPSTREAM_API_KEY": UPSTREAM_KEY,
            "CONNECTOR_PROXY_API_KEY": API_KEY,
        }
        with process(["-m", "connector_proxy", "--shim-only"], shim_env, shim_log) as shim_process:
            running = RunningProxy(f"http://127.0.0.1:{port}", target)
            wait_for_http(running.url, shim_process, shim_log)
            yield running, target


def test_upstreams_lists_the_grpc_servers_the_proxy_fronts(shim):
    running, target = shim
    deadline = time.monotonic() + 10
    while (upstream := run_json(running, "upstreams", "--json")["upstreams"][0])["state"] != "ready":
        assert time.monotonic() < deadline, upstream
        time.sleep(0.05)
    assert (upstream["name"], upstream["target"], upstream["state"]) == ("node", f"grpc://{target}", "ready")
    assert "example/Example" in upstream["commands"]
    result = run(running, "upstreams")
    assert result.exit_code == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "TARGET", "STATE"]
    assert row.split()[:3] == ["node", f"grpc://{target}", "ready"]
    assert run_json(running, "call", "example/Example", "message=through") == {
        "connector_response": "You passed the example connector: 'through'. Have a good day!",
        "message": "through",
    }
