"""Scale-out with real processes: the proxy (``python -m connector_proxy`` in broker mode) and two
worker processes (``python -m connector_proxy --worker --workers 2``, taskiq's worker command) on the
machine's RabbitMQ and Redis. The workers share the load; a worker killed with SIGKILL mid-run or
mid-callback loses nothing, and the callback arrives once."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.jobs.broker import BROKER_URL, REDIS_URL, drop_namespace, new_namespace
from tests.jobs.conftest import CALLBACK_KEY, spiff_body
from tests.jobs.fake_spiff import FakeSpiff
from tests.jobs.test_restart import wait_for_state
from tests.ports import free_port
from tests.processes import ROOT, process, stop, wait_for_http
from tests.prometheus import parse, value

pytestmark = pytest.mark.slow

WORKER_PROCESSES = 2
READY = re.compile(r"job worker (\S+:\d+) ready")


@dataclass
class ScaledOut:
    base_url: str  # the proxy's REST
    proxy: subprocess.Popen[bytes]
    workers: subprocess.Popen[bytes]  # the worker command (taskiq's process manager)


@contextlib.contextmanager
def scaled_out(
    tmp_path: Path, spiff: FakeSpiff | None, worker_settings: dict[str, str] | None = None, **settings: str
) -> Iterator[ScaledOut]:
    """The proxy and the worker processes on a namespace of their own, calling back ``spiff``
    with a credential (or, without it, wherever the callback URL says); ``worker_settings`` for
    the workers alone. Both are stopped with SIGTERM at the end and must exit cleanly (a proxy the
    test killed is left alone)."""
    namespace = new_namespace()
    env = {
        "CONNECTOR_PROXY_JOBS_BROKER_URL": BROKER_URL,
        "CONNECTOR_PROXY_JOBS_REDIS_URL": REDIS_URL,
        "CONNECTOR_PROXY_JOBS_NAMESPACE": namespace,
        "CONNECTOR_PROXY_CALLBACK_BACKOFF_BASE": "0.05",
        "CONNECTOR_PROXY_CALLBACK_BACKOFF_CAP": "0.2",
        **settings,
    }
    if spiff is not None:
        env["CONNECTOR_PROXY_CALLBACK_BASE_URL"] = spiff.url
        env["CONNECTOR_PROXY_CALLBACK_API_KEY"] = CALLBACK_KEY
    port = free_port()
    ports = {"CONNECTOR_PROXY_PORT": str(port), "CONNECTOR_PROXY_GRPC_PORT": str(free_port())}
    worker_log, proxy_log = tmp_path / "workers.log", tmp_path / "proxy.log"
    argv = ["-m", "connector_proxy", "--worker", "--workers", str(WORKER_PROCESSES)]
    try:
        with (
            process(argv, {**env, **(worker_settings or {})}, worker_log) as workers,
            process(["-m", "connector_proxy"], {**env, **ports}, proxy_log) as proxy,
        ):
            base_url = f"http://127.0.0.1:{port}"
            wait_for_http(base_url, proxy, proxy_log)
            wait_for_workers(workers, worker_log, WORKER_PROCESSES)
            yield ScaledOut(base_url, proxy, workers)
            if proxy.poll() is None:
                stop(proxy, proxy_log)
            workers.send_signal(signal.SIGTERM)
            assert workers.wait(timeout=20) == 0, worker_log.read_text()
        logs = worker_log.read_text() + proxy_log.read_text()
        assert CALLBACK_KEY not in logs
        assert "guest:guest" not in logs
    finally:
        anyio.run(drop_namespace, namespace)


def wait_for_workers(
    workers: subprocess.Popen[bytes], log: Path, count: int, timeout: float = 20
) -> set[str]:
    deadline = time.monotonic() + timeout
    while True:
        assert workers.poll() is None, f"the workers exited with {workers.returncode}:\n{log.read_text()}"
        ready = set(READY.findall(log.read_text()))
        if len(ready) >= count:
            return ready
        assert time.monotonic() < deadline, f"{len(ready)} of {count} workers ready:\n{log.read_text()}"
        time.sleep(0.1)


def post_delay(base_url: str, task_id: str, seconds: int, message: str) -> str:
    response = httpx.post(
        f"{base_url}/v1/do/example/Delay",
        json=spiff_body(task_id, seconds=seconds, message=message),
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["command_response"]["body"]["job_id"])


def kill_worker(worker: str) -> int:
    pid = int(worker.rpartition(":")[2])
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    return pid


def test_two_worker_processes_share_the_jobs_and_call_back_once_each(tmp_path):
    with FakeSpiff() as spiff, scaled_out(tmp_path, spiff, CONNECTOR_PROXY_JOB_WORKERS="2") as system:
        base_url = system.base_url
        tasks = {str(uuid.uuid4()): f"job {n}" for n in range(6)}
        jobs = {post_delay(base_url, task, 1, message): task for task, message in tasks.items()}
        calls = spiff.wait_for(len(tasks), timeout=30)
        time.sleep(0.5)
        assert len(spiff.calls) == len(tasks), "a callback arrived more than once"
        by_task = {call.path.split("/")[-2]: call.json() for call in calls}
        assert by_task.keys() == tasks.keys()
        for task, payload in by_task.items():
            assert payload["command_response"]["body"] == {"message": tasks[task], "waited_seconds": 1}
        records = [wait_for_state(base_url, job_id, "delivered") for job_id in jobs]
        assert {r["attempts"] for r in records} == {1}
        # Two processes holding two jobs each at most: six one-second jobs need both.
        assert len({r["worker"] for r in records}) == WORKER_PROCESSES
        listed: dict[str, Any] = httpx.get(f"{base_url}/v1/jobs", timeout=5).json()
        assert listed["counts"]["delivered"] == len(tasks)


def test_the_worker_processes_serve_their_metrics_together(tmp_path):
    metrics_port = free_port()
    worker_settings = {"CONNECTOR_PROXY_METRICS_PORT": str(metrics_port)}
    with (
        FakeSpiff() as spiff,
        scaled_out(tmp_path, spiff, worker_settings, CONNECTOR_PROXY_JOB_WORKERS="1") as system,
    ):
        tasks = [str(uuid.uuid4()) for _ in range(4)]
        jobs = [post_delay(system.base_url, task, 1, "counted") for task in tasks]
        spiff.wait_for(len(tasks), timeout=30)
        records = [wait_for_state(system.base_url, job_id, "delivered") for job_id in jobs]
        assert len({r["worker"] for r in records}) == WORKER_PROCESSES  # both processes delivered
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        samples = parse(text)
        # Summed over the worker processes.
        attempts = "spiff_connector_proxy_job_callback_attempts_total"
        assert value(samples, attempts, outcome="delivered") == len(tasks)
        assert value(samples, "spiff_connector_proxy_job_callback_duration_seconds_count") == len(tasks)


def test_the_workers_log_json_lines_with_the_calls_request_id(tmp_path):
    """Every line of the worker command (its process manager and each worker process) is a JSON
    object; the lines about a job carry the request id of the call that made it."""
    with FakeSpiff() as spiff, scaled_out(tmp_path, spiff, CONNECTOR_PROXY_LOG_FORMAT="json") as system:
        response = httpx.post(
            f"{system.base_url}/v1/do/example/Delay",
            json=spiff_body(str(uuid.uuid4()), seconds=0, message="traced"),
            headers={"X-Request-Id": "worker-story-5"},
            timeout=10,
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["command_response"]["body"]["job_id"]
        (call,) = spiff.wait_for(1, timeout=20)
        wait_for_state(system.base_url, job_id, "delivered")
    assert call.headers["x-request-id"] == "worker-story-5"
    lines = [json.loads(line) for line in (tmp_path / "workers.log").read_text().splitlines() if line]
    story = [line["message"] for line in lines if line.get("request_id") == "worker-story-5"]
    assert any(f"job {job_id} (example/Delay) started" in message for message in story), story
    assert any(f"job {job_id} (example/Delay) delivered" in message for message in story), story
    assert any(line["logger"].startswith("taskiq") for line in lines)  # the process manager's lines


def test_a_worker_killed_mid_run_loses_nothing(tmp_path):
    seconds = 3
    with FakeSpiff() as spiff, scaled_out(tmp_path, spiff) as system:
        base_url = system.base_url
        task = str(uuid.uuid4())
        job_id = post_delay(base_url, task, seconds, "survived")
        running = wait_for_state(base_url, job_id, "running")
        killed = running["worker"]
        kill_worker(killed)

        (call,) = spiff.wait_for(1, timeout=seconds + 20)
        job = wait_for_state(base_url, job_id, "delivered")
        time.sleep(0.5)
        assert len(spiff.calls) == 1, "the callback arrived more than once"
        payload = call.json()
        assert payload["error"] is None
        assert payload["command_response"]["body"] == {"message": "survived", "waited_seconds": seconds}
        assert payload["spiff__logs"] == [
            f"Ran as job {job_id}, attempt 2: the process running an earlier one stopped."
        ]
        assert (job["attempts"], job["delivery_attempts"]) == (2, 1)
        assert job["worker"] != killed
        assert system.workers.poll() is None  # taskiq replaces the dead process


def test_a_worker_killed_mid_callback_does_not_run_the_command_again(tmp_path):
    with FakeSpiff() as spiff, scaled_out(tmp_path, spiff) as system:
        base_url = system.base_url
        spiff.script("hang")  # the first callback gets no answer
        job_id = post_delay(base_url, str(uuid.uuid4()), 0, "ran once")
        spiff.wait_for(1, timeout=20)
        delivering = wait_for_state(base_url, job_id, "delivering")
        kill_worker(delivering["worker"])

        first, second = spiff.wait_for(2, timeout=20)
        job = wait_for_state(base_url, job_id, "delivered")
        assert second.body == first.body  # the stored envelope, sent again by another worker
        assert second.json()["command_response"]["body"] == {"message": "ran once", "waited_seconds": 0}
        assert job["attempts"] == 1  # the command ran once
        assert job["worker"] != delivering["worker"]


def test_the_proxy_killed_after_the_202_loses_nothing(tmp_path):
    """The workers own the job once it is published: the proxy may die at once."""
    with FakeSpiff() as spiff, scaled_out(tmp_path, spiff) as system:
        job_id = post_delay(system.base_url, str(uuid.uuid4()), 1, "proxy gone")
        system.proxy.send_signal(signal.SIGKILL)
        assert system.proxy.wait(timeout=5) == -signal.SIGKILL
        (call,) = spiff.wait_for(1, timeout=20)
        assert call.json()["command_response"]["body"] == {"message": "proxy gone", "waited_seconds": 1}
        assert call.json()["spiff__logs"] == [f"Ran as job {job_id}."]
        time.sleep(0.5)
        assert len(spiff.calls) == 1


def test_workers_need_a_broker_url():
    result = subprocess.run(
        [sys.executable, "-m", "connector_proxy", "--worker"],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_PROXY_")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "set CONNECTOR_PROXY_JOBS_BROKER_URL" in result.stderr
