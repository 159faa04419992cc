"""End to end, long-running: a BPMN service task calls ``example/Delay`` on the real proxy process,
waits on the 202 (STARTED, the instance waiting), and resumes when the proxy's callback arrives,
with the result in its variable as spiff-arena's callback route puts it (spec §3.3, §4). Once with
the embedded job runner, once scaled out (the proxy and two worker processes on RabbitMQ)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from SpiffWorkflow.spiff.specs.defaults import ServiceTask
from SpiffWorkflow.util.task import TaskState

from tests.jobs.test_broker_workers import scaled_out

from .backend_rules import BackendScriptEngine, BackendServiceDelegate, load_workflow
from .test_bpmn import DIAGRAMS

CALLBACK_PATH_PREFIX = "/v1.0/tasks/42/"


class CallbackBackend:
    """spiff-arena's ``PUT /v1.0/tasks/<instance>/<task>/callback`` for one workflow
    (``ServiceTaskService.complete_waiting_callback``, minus the database and the instance lock)."""

    def __init__(self, delegate: BackendServiceDelegate) -> None:
        self.delegate = delegate
        self.workflow: Any = None
        self.answers: list[tuple[int, dict[str, Any]]] = []
        self.done = threading.Event()
        self.lock = threading.Lock()

    def handle(self, path: str, content_type: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if "application/json" not in content_type:
            return 400, {"error_code": "invalid_mimetype"}
        content = json.loads(body or b"{}")
        task_guid = path.removeprefix(CALLBACK_PATH_PREFIX).removesuffix("/callback")
        with self.lock:
            spiff_task = self.workflow.get_task_from_id(UUID(task_guid))
            if spiff_task is None:
                return 400, {"error_code": "callback_not_found"}
            if spiff_task.state != TaskState.STARTED or not isinstance(spiff_task.task_spec, ServiceTask):
                return 400, {"error_code": "not_waiting_for_callback"}
            # The same error checks as a synchronous answer, with an implied outer 200.
            self.delegate.check_for_errors(
                spiff_task, content, 200, json.dumps(content), spiff_task.task_spec.operation_name
            )
            command_response = content.get("command_response")
            if not isinstance(command_response, dict) or "body" not in command_response:
                return 400, {"error_code": "invalid_callback_body"}
            result = command_response["body"]
            if isinstance(result, str) and command_response.get("mimetype") == "application/json":
                result = json.loads(result)
            spiff_task.data[spiff_task.task_spec.result_variable] = result
            spiff_task.complete()
            self.workflow.do_engine_steps()
        return 200, {"ok": True, "status": "completed", "process_instance_id": 42}


@pytest.fixture(params=["embedded", "broker"])
def jobs_proxy_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "embedded":
        yield request.getfixturevalue("proxy_process").url
        return
    with scaled_out(tmp_path, None, NO_PROXY="127.0.0.1,localhost") as system:
        yield system.base_url


@pytest.fixture
def callback_backend(jobs_proxy_url: str) -> Iterator[tuple[CallbackBackend, str]]:
    with httpx.Client(trust_env=False) as client:
        backend = CallbackBackend(BackendServiceDelegate(jobs_proxy_url, client))

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = backend.handle(self.path, self.headers.get("Content-Type", ""), body)
                backend.answers.append((status, answer))
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                backend.done.set()

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            backend.delegate.backend_url = f"http://127.0.0.1:{server.server_address[1]}"
            yield backend, backend.delegate.backend_url
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


def test_service_task_waits_on_202_and_resumes_on_the_callback(callback_backend):
    backend, _ = callback_backend
    workflow = load_workflow(
        DIAGRAMS / "example_delay_callback.bpmn",
        "example_delay_callback",
        BackendScriptEngine(backend.delegate),
    )
    workflow.get_next_task(spec_name="Start").data.update({"greeting": "hello"})
    with backend.lock:
        backend.workflow = workflow
        workflow.do_engine_steps()
        (task,) = workflow.get_tasks(spec_name="call_delay")
        assert task.state == TaskState.STARTED  # waiting for the callback, like an Arena instance
        assert not workflow.completed
    (exchange,) = backend.delegate.exchanges
    assert exchange["status_code"] == 202
    assert json.loads(exchange["text"])["command_response"]["body"]["status"] == "queued"

    assert backend.done.wait(15), "no callback arrived"
    assert backend.answers == [(200, {"ok": True, "status": "completed", "process_instance_id": 42})]
    with backend.lock:
        assert workflow.completed
        # An async callback stores command_response.body alone (not the v2 command_response, §3.3).
        assert workflow.data["delayed"] == {"message": "hello, later", "waited_seconds": 1}
        assert workflow.data["echoed"] == "HELLO, LATER"
