"""Durability with real processes: a job answered with 202 is delivered, once, even when the proxy
is killed with SIGKILL while the command runs (``python -m connector_proxy``, as in tests/test_process.py)."""

from __future__ import annotations

import signal
import time
from typing import Any

import grpc
import httpx
import pytest
from spiff.proxy.v1 import jobs_pb2, jobs_pb2_grpc

from tests.jobs.conftest import CALLBACK_KEY, TASK_ID, spiff_body
from tests.jobs.fake_spiff import FakeSpiff
from tests.ports import free_port
from tests.processes import process, stop, wait_for_http

pytestmark = pytest.mark.slow

SECONDS = 3


def wait_for_state(base_url: str, job_id: str, state: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = httpx.get(f"{base_url}/v1/jobs/{job_id}", timeout=5).json()
        if job["state"] == state:
            return job
        assert time.monotonic() < deadline, f"job is {job['state']}, not {state}: {job}"
        time.sleep(0.05)


def test_a_job_survives_sigkill_and_calls_back_once(tmp_path):
    with FakeSpiff() as spiff:
        env = {
            "CONNECTOR_PROXY_JOBS_DB": str(tmp_path / "jobs.sqlite3"),
            "CONNECTOR_PROXY_CALLBACK_BASE_URL": spiff.url,
            "CONNECTOR_PROXY_CALLBACK_API_KEY": CALLBACK_KEY,
            "CONNECTOR_PROXY_CALLBACK_BACKOFF_BASE": "0.05",
            "CONNECTOR_PROXY_CALLBACK_BACKOFF_CAP": "0.2",
        }
        port, grpc_port = free_port(), free_port()
        first_log = tmp_path / "first.log"
        ports = {"CONNECTOR_PROXY_PORT": str(port), "CONNECTOR_PROXY_GRPC_PORT": str(grpc_port)}
        with process(["-m", "connector_proxy"], {**env, **ports}, first_log) as proxy:
            base_url = f"http://127.0.0.1:{port}"
            wait_for_http(base_url, proxy, first_log)
            response = httpx.post(
                f"{base_url}/v1/do/example/Delay",
                json=spiff_body(seconds=SECONDS, message="survived"),
                timeout=5,
            )
            assert response.status_code == 202, response.text
            job_id = response.json()["command_response"]["body"]["job_id"]
            wait_for_state(base_url, job_id, "running")
            proxy.send_signal(signal.SIGKILL)
            assert proxy.wait(timeout=5) == -signal.SIGKILL
        assert spiff.calls == []

        port, grpc_port = free_port(), free_port()
        second_log = tmp_path / "second.log"
        ports = {"CONNECTOR_PROXY_PORT": str(port), "CONNECTOR_PROXY_GRPC_PORT": str(grpc_port)}
        with process(["-m", "connector_proxy"], {**env, **ports}, second_log) as proxy:
            base_url = f"http://127.0.0.1:{port}"
            wait_for_http(base_url, proxy, second_log)
            (call,) = spiff.wait_for(1, timeout=SECONDS + 15)
            job = wait_for_state(base_url, job_id, "delivered")
            time.sleep(0.5)
            assert len(spiff.calls) == 1, "the callback arrived more than once"
            assert call.method == "PUT"
            assert call.path == f"/v1.0/tasks/42/{TASK_ID}/callback"
            assert call.headers["spiffworkflow-api-key"] == CALLBACK_KEY
            payload = call.json()
            assert payload["error"] is None
            assert payload["command_response"]["body"] == {"message": "survived", "waited_seconds": SECONDS}
            assert payload["spiff__logs"] == [
                f"Ran as job {job_id}, attempt 2: the process running an earlier one stopped."
            ]
            assert (job["attempts"], job["delivery_attempts"]) == (2, 1)
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                stub = jobs_pb2_grpc.JobsServiceStub(channel)  # type: ignore[no-untyped-call]
                reply = stub.GetJob(jobs_pb2.GetJobRequest(id=job_id), timeout=5)
            assert reply.job.state == jobs_pb2.JOB_STATE_DELIVERED
            stop(proxy, second_log)
        log = second_log.read_text()
        assert "were running when the proxy stopped" in log
        assert CALLBACK_KEY not in log + first_log.read_text()
