"""The real entry points as processes, over real sockets: ``python -m server`` (embedded),
``python -m server --grpc-only`` and ``python -m rest_shim`` in front of it; SIGTERM stops them cleanly."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from spiff.connector.example.v1 import example_pb2, example_pb2_grpc

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 20
EXIT_SECONDS = 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: pathlib.Path) -> Iterator[subprocess.Popen[bytes]]:
    """Runs ``python <args>`` from the project root; kills it if the test leaves it running."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env={**os.environ, "CONNECTOR_PROXY_SHUTDOWN_GRACE": "2", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def wait_for_http(base_url: str, proc: subprocess.Popen[bytes], log: pathlib.Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited early with {proc.returncode}:\n{log.read_text()}"
        try:
            if httpx.get(f"{base_url}/liveness", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"no liveness within {STARTUP_SECONDS} s:\n{log.read_text()}")


def wait_for_grpc(target: str, proc: subprocess.Popen[bytes], log: pathlib.Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"exited early with {proc.returncode}:\n{log.read_text()}"
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    pytest.fail(f"gRPC not serving within {STARTUP_SECONDS} s:\n{log.read_text()}")


def stop(proc: subprocess.Popen[bytes], log: pathlib.Path, sig: int = signal.SIGTERM) -> None:
    start = time.monotonic()
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout=EXIT_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {EXIT_SECONDS} s after SIGTERM:\n{log.read_text()}")
    assert code == 0, log.read_text()
    assert time.monotonic() - start < EXIT_SECONDS
    assert "Traceback" not in log.read_text()


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
    with process(["-m", "server"], env, log) as proc:
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
        ["-m", "server", "--grpc-only"], {"CONNECTOR_PROXY_GRPC_PORT": str(grpc_port)}, grpc_log
    ) as server:
        wait_for_grpc(target, server, grpc_log)
        shim_env = {"CONNECTOR_PROXY_PORT": str(port), "CONNECTOR_PROXY_GRPC_TARGETS": target}
        with process(["-m", "rest_shim"], shim_env, shim_log) as shim:
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
    with process(["-m", "rest_shim"], env, log) as shim:
        assert shim.wait(timeout=STARTUP_SECONDS) != 0
    assert "CONNECTOR_PROXY_GRPC_TARGETS" in log.read_text()


def test_bad_settings_stop_start_up(tmp_path):
    log = tmp_path / "server.log"
    with process(["-m", "server"], {"CONNECTOR_PROXY_API_KEY": ""}, log) as proc:
        assert proc.wait(timeout=STARTUP_SECONDS) != 0
    assert "CONNECTOR_PROXY_API_KEY" in log.read_text()
