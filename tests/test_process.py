"""The real entry points as processes, over real sockets: ``python -m connector_proxy`` (embedded),
``python -m connector_proxy --grpc-only`` and ``python -m connector_proxy --shim-only`` in front of it;
SIGTERM stops them cleanly."""

from __future__ import annotations

import http.server
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest
from spiff.connector.example.v1 import example_pb2, example_pb2_grpc
from spiff.connector.http.v1 import http_pb2, http_pb2_grpc

from tests.ports import free_port
from tests.processes import STARTUP_SECONDS, process, stop, wait_for_grpc, wait_for_http

pytestmark = pytest.mark.slow


def call_example_over_http(base_url: str) -> None:
    commands = httpx.get(f"{base_url}/v1/commands", timeout=5)
    assert commands.status_code == 200
    assert "example/Example" in {c["id"] for c in commands.json()}
    response = httpx.post(f"{base_url}/v1/do/example/Example", json={"message": "over http"}, timeout=5)
    assert response.status_code == 200
    assert response.json()["command_response"]["body"]["message"] == "over http"
    assert response.json()["command_response_version"] == 2


def call_example_over_grpc(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = example_pb2_grpc.ExampleServiceStub(channel)  # type: ignore[no-untyped-call]
        response = stub.Example(example_pb2.ExampleRequest(message="over grpc"), timeout=5)
    assert response.message == "over grpc"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_embedded_proxy_serves_rest_and_grpc_and_stops_on_a_signal(tmp_path, sig):
    port, grpc_port = free_port(), free_port()
    env = {"CONNECTOR_PROXY_PORT": str(port), "CONNECTOR_PROXY_GRPC_PORT": str(grpc_port)}
    log = tmp_path / "server.log"
    with process(["-m", "connector_proxy"], env, log) as proc:
        base_url = f"http://127.0.0.1:{port}"
        wait_for_http(base_url, proc, log)
        call_example_over_http(base_url)
        call_example_over_grpc(f"127.0.0.1:{grpc_port}")
        stop(proc, log, sig)


def test_shim_alone_fronts_a_grpc_only_server(tmp_path):
    grpc_port, port = free_port(), free_port()
    target = f"127.0.0.1:{grpc_port}"
    grpc_log, shim_log = tmp_path / "grpc.log", tmp_path / "shim.log"
    with process(
        ["-m", "connector_proxy", "--grpc-only"], {"CONNECTOR_PROXY_GRPC_PORT": str(grpc_port)}, grpc_log
    ) as server:
        wait_for_grpc(target, server, grpc_log)
        shim_env = {"CONNECTOR_PROXY_PORT": str(port), "CONNECTOR_PROXY_GRPC_TARGETS": target}
        with process(["-m", "connector_proxy", "--shim-only"], shim_env, shim_log) as shim:
            base_url = f"http://127.0.0.1:{port}"
            wait_for_http(base_url, shim, shim_log)
            call_example_over_http(base_url)
            missing = httpx.post(f"{base_url}/v1/do/example/Example", json={}, timeout=5)
            assert missing.status_code == 400
            assert missing.json()["error"]["error_code"] == "InvalidParameters"
            stop(shim, shim_log)
        call_example_over_grpc(target)
        stop(server, grpc_log)


def test_shim_without_targets_refuses_to_start(tmp_path):
    log = tmp_path / "shim.log"
    env = {"CONNECTOR_PROXY_PORT": str(free_port()), "CONNECTOR_PROXY_GRPC_TARGETS": ""}
    with process(["-m", "connector_proxy", "--shim-only"], env, log) as shim:
        assert shim.wait(timeout=STARTUP_SECONDS) != 0
    assert "CONNECTOR_PROXY_GRPC_TARGETS" in log.read_text()


def test_bad_settings_stop_start_up(tmp_path):
    log = tmp_path / "server.log"
    with process(["-m", "connector_proxy"], {"CONNECTOR_PROXY_API_KEY": ""}, log) as proc:
        assert proc.wait(timeout=STARTUP_SECONDS) != 0
    assert "CONNECTOR_PROXY_API_KEY" in log.read_text()


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET after SLOW_SECONDS, like an upstream that is busy when the proxy is told to stop."""

    def do_GET(self) -> None:
        time.sleep(SLOW_SECONDS)
        body = b'{"done": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


SLOW_SECONDS = 1.5


def test_sigterm_lets_in_flight_rest_and_grpc_calls_finish(tmp_path):
    target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    slow_url = f"http://127.0.0.1:{target.server_address[1]}/slow"
    port, grpc_port = free_port(), free_port()
    env = {"CONNECTOR_PROXY_PORT": str(port), "CONNECTOR_PROXY_GRPC_PORT": str(grpc_port)}
    log = tmp_path / "server.log"
    try:
        with process(["-m", "connector_proxy"], env, log) as proc, ThreadPoolExecutor(2) as pool:
            base_url = f"http://127.0.0.1:{port}"
            wait_for_http(base_url, proc, log)
            rest_call = pool.submit(
                httpx.post, f"{base_url}/v1/do/http/GetRequestV2", json={"url": slow_url}, timeout=10
            )

            def grpc_call() -> http_pb2.GetRequestV2Response:
                with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                    stub = http_pb2_grpc.HttpServiceStub(channel)  # type: ignore[no-untyped-call]
                    reply: http_pb2.GetRequestV2Response = stub.GetRequestV2(
                        http_pb2.GetRequestV2Request(url=slow_url), timeout=10
                    )
                    return reply

            grpc_reply = pool.submit(grpc_call)
            time.sleep(SLOW_SECONDS / 3)  # both calls are now waiting on the upstream
            assert not rest_call.done()
            assert not grpc_reply.done()
            stop(proc, log)
            response = rest_call.result(timeout=5)
            assert response.status_code == 200, response.text
            assert response.json()["command_response"]["body"] == {"done": True}
            assert grpc_reply.result(timeout=5).http_status == 200
    finally:
        target.shutdown()
        target.server_close()
