"""A proxy in front of a gRPC server that is down at start, comes up, dies, and comes back with a
changed proto: all as real processes (``python -m connector_proxy`` and ``--grpc-only``), with no
proxy restart."""

from __future__ import annotations

import os
import pathlib
import signal
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tests.federation.evolving import CONNECTOR_PACKAGE, build
from tests.ports import free_port
from tests.processes import ROOT, process, stop, wait_for_grpc, wait_for_http

pytestmark = pytest.mark.slow

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], seconds: float, what: str) -> T:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"{what} did not happen within {seconds} s")


def upstream_env(version_dir: pathlib.Path, port: int) -> dict[str, str]:
    return {
        "PYTHONPATH": os.pathsep.join([str(version_dir), str(ROOT)]),
        "CONNECTOR_PROXY_CONNECTORS": CONNECTOR_PACKAGE,
        "CONNECTOR_PROXY_GRPC_PORT": str(port),
    }


def command_ids(base_url: str) -> dict[str, Any]:
    return {c["id"]: c for c in httpx.get(f"{base_url}/v1/commands", timeout=5).json()}


def upstream_view(base_url: str) -> dict[str, Any]:
    upstreams = httpx.get(f"{base_url}/v1/upstreams", timeout=5).json()["upstreams"]
    assert len(upstreams) == 1
    view: dict[str, Any] = upstreams[0]
    return view


def greet(base_url: str, **parameters: str) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/do/evolving/Greet", json={"name": "ada", **parameters}, timeout=5)


def test_an_upstream_down_at_start_comes_up_dies_and_returns_with_a_new_proto(tmp_path):
    v1, v2 = build(tmp_path, 1), build(tmp_path, 2)
    upstream_port, port, grpc_port = free_port(), free_port(), free_port()
    target = f"127.0.0.1:{upstream_port}"
    base_url = f"http://127.0.0.1:{port}"
    proxy_env = {
        "CONNECTOR_PROXY_PORT": str(port),
        "CONNECTOR_PROXY_GRPC_PORT": str(grpc_port),
        "CONNECTOR_PROXY_GRPC_TARGETS": f"evolving={target}",
        "CONNECTOR_PROXY_DISCOVERY_INTERVAL": "30",
    }
    with process(["-m", "connector_proxy"], proxy_env, tmp_path / "proxy.log") as proxy:
        # Down at start: the proxy serves its local connectors and says what it is waiting for.
        wait_for_http(base_url, proxy, tmp_path / "proxy.log")
        assert "example/Example" in command_ids(base_url)
        assert "evolving/Greet" not in command_ids(base_url)
        view = upstream_view(base_url)
        assert view["name"] == "evolving"
        assert view["target"] == f"grpc://{target}"
        assert view["state"] in ("connecting", "unavailable")
        assert view["commands"] == []

        # It comes up: its commands appear without a restart.
        with process(
            ["-m", "connector_proxy", "--grpc-only"], upstream_env(v1, upstream_port), tmp_path / "v1.log"
        ) as up:
            wait_for_grpc(target, up, tmp_path / "v1.log")
            eventually(lambda: "evolving/Greet" in command_ids(base_url), 10, "discovery of v1")
            view = upstream_view(base_url)
            assert view["state"] == "ready"
            assert view["commands"] == ["evolving/Greet"]
            assert view["last_discovery"] is not None
            assert view["last_error"] is None
            answer = greet(base_url)
            assert answer.status_code == 200, answer.text
            assert answer.json()["command_response"]["body"] == {"greeting": "hello ada"}
            # The proxy's gRPC port serves it too, and reflects its schema.
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                reflected = ProtoReflectionDescriptorDatabase(channel)
                assert "spiff.connector.evolving.v1.EvolvingService" in reflected.get_services()
                assert "spiff.connector.example.v1.ExampleService" in reflected.get_services()
                forwarded: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                    "/spiff.connector.evolving.v1.EvolvingService/Greet"
                )
                # GreetRequest{name: "grpc"} by hand: field 1, length-delimited.
                assert forwarded(b"\x0a\x04grpc", timeout=5) == b"\x0a\x0ahello grpc"

            # It dies: calls answer 503 ConnectorUnavailable at once, and the command stays listed.
            up.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            up.wait()

            def refused() -> httpx.Response | None:
                response = greet(base_url)
                return response if response.status_code == 503 else None

            unavailable = eventually(refused, 5, "a 503 after the kill")
            assert time.monotonic() - killed < 1.0
            assert unavailable.json()["error"]["error_code"] == "ConnectorUnavailable"
            assert "evolving" in unavailable.json()["error"]["message"]
            assert target in unavailable.json()["error"]["message"]
            assert unavailable.json()["command_response"]["http_status"] == 503
            started = time.monotonic()
            assert greet(base_url).status_code == 503
            assert time.monotonic() - started < 0.5  # not after a timeout
            assert "evolving/Greet" in command_ids(base_url)
            assert upstream_view(base_url)["state"] == "unavailable"

        # It returns with a changed proto: a new parameter and a new command, no proxy restart.
        with process(
            ["-m", "connector_proxy", "--grpc-only"], upstream_env(v2, upstream_port), tmp_path / "v2.log"
        ) as up:
            wait_for_grpc(target, up, tmp_path / "v2.log")

            def with_farewell() -> dict[str, Any] | None:
                commands = command_ids(base_url)
                return commands if "evolving/Farewell" in commands else None

            commands = eventually(with_farewell, 15, "discovery of v2")
            assert [p["id"] for p in commands["evolving/Greet"]["parameters"]] == ["name", "punctuation"]
            answer = greet(base_url, punctuation="!")
            assert answer.status_code == 200, answer.text
            assert answer.json()["command_response"]["body"] == {"greeting": "hello ada!"}
            farewell = httpx.post(f"{base_url}/v1/do/evolving/Farewell", json={"name": "ada"}, timeout=5)
            assert farewell.json()["command_response"]["body"] == {"greeting": "goodbye ada"}
            assert upstream_view(base_url)["commands"] == ["evolving/Farewell", "evolving/Greet"]
            stop(up, tmp_path / "v2.log")
        stop(proxy, tmp_path / "proxy.log")
    log = (tmp_path / "proxy.log").read_text()
    assert "upstream evolving (grpc://" in log
    assert "is unavailable" in log


def test_a_connector_offered_locally_and_by_an_upstream_stops_the_start(tmp_path):
    upstream_port, port = free_port(), free_port()
    target = f"127.0.0.1:{upstream_port}"
    # The upstream hosts the same connectors as the proxy itself (example among them).
    env = {"CONNECTOR_PROXY_GRPC_PORT": str(upstream_port)}
    with process(["-m", "connector_proxy", "--grpc-only"], env, tmp_path / "up.log") as up:
        wait_for_grpc(target, up, tmp_path / "up.log")
        proxy_env = {
            "CONNECTOR_PROXY_PORT": str(port),
            "CONNECTOR_PROXY_GRPC_PORT": str(free_port()),
            "CONNECTOR_PROXY_GRPC_TARGETS": target,
        }
        with process(["-m", "connector_proxy"], proxy_env, tmp_path / "proxy.log") as proxy:
            assert proxy.wait(timeout=30) != 0
        stop(up, tmp_path / "up.log")
    log = (tmp_path / "proxy.log").read_text()
    assert "the connector 'example' (spiff.connector.example.v1.ExampleService) is offered by both" in log
    assert f"the local connectors and upstream 127.0.0.1_{upstream_port} (grpc://{target})" in log


def test_health_of_the_proxy_stays_open_while_an_upstream_is_down(tmp_path):
    port, grpc_port = free_port(), free_port()
    env = {
        "CONNECTOR_PROXY_PORT": str(port),
        "CONNECTOR_PROXY_GRPC_PORT": str(grpc_port),
        "CONNECTOR_PROXY_GRPC_TARGETS": f"127.0.0.1:{free_port()}",
    }
    with process(["-m", "connector_proxy"], env, tmp_path / "proxy.log") as proxy:
        wait_for_http(f"http://127.0.0.1:{port}", proxy, tmp_path / "proxy.log")
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        stop(proxy, tmp_path / "proxy.log")
    assert "is not reachable yet" in (tmp_path / "proxy.log").read_text()
