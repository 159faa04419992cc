"""``/readiness`` and the drain in real processes: not ready until every upstream was discovered;
on SIGTERM with ``CONNECTOR_PROXY_DRAIN_DELAY`` readiness and gRPC health say "not serving" while
calls are still answered, then the process stops cleanly."""

from __future__ import annotations

import signal
import time

import httpx
import pytest
from grpc_health.v1 import health_pb2

from connector_proxy.probe import probe
from tests.ports import free_port
from tests.processes import EXIT_SECONDS, grpc_health, process, wait_for_grpc, wait_for_http

pytestmark = pytest.mark.slow

DRAIN_SECONDS = 2.0


def example(base_url: str) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/do/example/Example", json={"message": "still served"}, timeout=5)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_drains_for_the_delay_then_stops(tmp_path, sig):
    port, grpc_port = free_port(), free_port()
    env = {
        "CONNECTOR_PROXY_PORT": str(port),
        "CONNECTOR_PROXY_GRPC_PORT": str(grpc_port),
        "CONNECTOR_PROXY_DRAIN_DELAY": str(DRAIN_SECONDS),
        "CONNECTOR_PROXY_API_KEY": "drain-test-key",
    }
    log = tmp_path / "proxy.log"
    with process(["-m", "connector_proxy"], env, log) as proc:
        base_url = f"http://127.0.0.1:{port}"
        wait_for_http(base_url, proc, log)
        ready = httpx.get(f"{base_url}/readiness", timeout=2)  # no key needed, like liveness
        assert (ready.status_code, ready.json()) == (200, {"ready": True})
        assert grpc_health(f"127.0.0.1:{grpc_port}") == health_pb2.HealthCheckResponse.SERVING

        signalled = time.monotonic()
        proc.send_signal(sig)
        time.sleep(0.3)  # the server notices at its next tick (0.1 s)
        draining = httpx.get(f"{base_url}/readiness", timeout=2)
        assert draining.status_code == 503
        assert draining.json()["problems"] == ["draining: the process is shutting down"]
        assert draining.json()["error"]["error_code"] == "NotReady"
        assert grpc_health(f"127.0.0.1:{grpc_port}") == health_pb2.HealthCheckResponse.NOT_SERVING
        # Still serving meanwhile: calls that were routed here before the endpoints changed.
        call = httpx.post(
            f"{base_url}/v1/do/example/Example",
            json={"message": "still served"},
            headers={"Spiff-Connector-Proxy-Api-Key": "drain-test-key"},
            timeout=5,
        )
        assert call.status_code == 200, call.text
        assert httpx.get(f"{base_url}/liveness", timeout=2).status_code == 200

        code = proc.wait(timeout=DRAIN_SECONDS + EXIT_SECONDS)
        elapsed = time.monotonic() - signalled
        assert code == 0, log.read_text()
        assert DRAIN_SECONDS <= elapsed < DRAIN_SECONDS + EXIT_SECONDS
        assert "Traceback" not in log.read_text()


def test_a_second_signal_ends_the_drain_at_once(tmp_path):
    port, grpc_port = free_port(), free_port()
    env = {
        "CONNECTOR_PROXY_PORT": str(port),
        "CONNECTOR_PROXY_GRPC_PORT": str(grpc_port),
        "CONNECTOR_PROXY_DRAIN_DELAY": "60",
    }
    log = tmp_path / "proxy.log"
    with process(["-m", "connector_proxy"], env, log) as proc:
        wait_for_http(f"http://127.0.0.1:{port}", proc, log)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert proc.poll() is None  # draining
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=EXIT_SECONDS) == 0, log.read_text()


def test_the_grpc_server_alone_drains_its_health(tmp_path):
    grpc_port = free_port()
    env = {"CONNECTOR_PROXY_GRPC_PORT": str(grpc_port), "CONNECTOR_PROXY_DRAIN_DELAY": str(DRAIN_SECONDS)}
    log = tmp_path / "grpc.log"
    target = f"127.0.0.1:{grpc_port}"
    with process(["-m", "connector_proxy", "--grpc-only"], env, log) as proc:
        wait_for_grpc(target, proc, log)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert grpc_health(target) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert proc.wait(timeout=DRAIN_SECONDS + EXIT_SECONDS) == 0, log.read_text()
        assert time.monotonic() - signalled >= DRAIN_SECONDS


def test_not_ready_until_every_upstream_was_discovered(tmp_path):
    upstream_port, port, grpc_port = free_port(), free_port(), free_port()
    env = {
        "CONNECTOR_PROXY_PORT": str(port),
        "CONNECTOR_PROXY_GRPC_PORT": str(grpc_port),
        "CONNECTOR_PROXY_GRPC_TARGETS": f"later=127.0.0.1:{upstream_port}",
    }
    log, upstream_log = tmp_path / "proxy.log", tmp_path / "upstream.log"
    base_url = f"http://127.0.0.1:{port}"
    with process(["-m", "connector_proxy"], env, log) as proc:
        wait_for_http(base_url, proc, log)  # starts although its upstream is down
        waiting = httpx.get(f"{base_url}/readiness", timeout=2)
        assert waiting.status_code == 503
        assert waiting.json()["problems"] == ["upstream(s) not discovered yet: later"]
        # The image's health check says the same.
        problem = probe(["spiff-connector-proxy"], {"CONNECTOR_PROXY_PORT": str(port)})
        assert problem is not None
        assert "503" in problem
        assert "not discovered yet" in problem
        assert probe(["spiff-connector-proxy", "--worker"], {}) is None
        taskiq = ["python", "-m", "taskiq", "worker", "connector_proxy.worker:broker", "--workers", "2"]
        assert probe(taskiq, {}) is None  # what --worker becomes
        assert example(base_url).status_code == 200  # local commands are served meanwhile

        upstream_env = {
            "CONNECTOR_PROXY_GRPC_PORT": str(upstream_port),
            "CONNECTOR_PROXY_CONNECTORS": "tests.conformance_connectors",
        }
        with process(["-m", "connector_proxy", "--grpc-only"], upstream_env, upstream_log):
            deadline = time.monotonic() + 20  # the proxy retries with backoff up to 5 s
            while (ready := httpx.get(f"{base_url}/readiness", timeout=2)).status_code != 200:
                assert time.monotonic() < deadline, f"{ready.text}\n{log.read_text()}"
                time.sleep(0.2)
            assert ready.json() == {"ready": True}
            assert probe(["spiff-connector-proxy"], {"CONNECTOR_PROXY_PORT": str(port)}) is None
            grpc_only = ["spiff-connector-proxy", "--grpc-only"]
            assert probe(grpc_only, {"CONNECTOR_PROXY_GRPC_PORT": str(upstream_port)}) is None
        gone = probe(grpc_only, {"CONNECTOR_PROXY_GRPC_PORT": str(upstream_port)})
        assert gone is not None
        assert "UNAVAILABLE" in gone
        # Discovered once is enough: its outage is answered 503 for its own commands, and every
        # replica shares it, so readiness would only take the local commands away too.
        time.sleep(0.5)
        assert httpx.get(f"{base_url}/readiness", timeout=2).status_code == 200
        down = httpx.post(f"{base_url}/v1/do/conformance/Echo", json={"value": 1}, timeout=5)
        assert down.status_code == 503, down.text
        assert down.json()["error"]["error_code"] == "ConnectorUnavailable"
