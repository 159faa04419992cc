"""The project's entry points as real processes in tests: start, wait until they serve, stop."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = pathlib.Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 20
EXIT_SECONDS = 5


@contextlib.contextmanager
def process(
    args: list[str],
    env: dict[str, str],
    log: pathlib.Path,
    *,
    program: str = sys.executable,
    cwd: pathlib.Path = ROOT,
) -> Iterator[subprocess.Popen[bytes]]:
    """Runs ``program <args>`` (this Python by default) in ``cwd`` (the project root by default);
    kills it if the test leaves it running."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [program, *args],
            cwd=cwd,
            env={
                **os.environ,
                "CONNECTOR_PROXY_SHUTDOWN_GRACE": "2",
                "CONNECTOR_PROXY_JOBS_DB": str(log.with_suffix(".jobs.sqlite3")),
                **env,
            },
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


def grpc_health(target: str, timeout: float = 5) -> int:
    """The server's overall ``grpc.health.v1`` status (a Check of service ``""``)."""
    with grpc.insecure_channel(target) as channel:
        request = health_pb2.HealthCheckRequest(service="")
        answer = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout)
    status: int = answer.status
    return status


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
