"""The same cases against a Python connector server and the Node.js one, through the proxy: a
caller of ``/v1/do`` cannot tell the languages apart (envelope, error codes and statuses, bad
fields, log lines, deadlines, an outage)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.ports import free_port
from tests.processes import ROOT, process, wait_for_grpc
from tests.upstreams import proxy_fronting

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

NODE_SERVER = ROOT / "connectors-node" / "dist" / "server.js"
COMMAND_TIMEOUT = 1.0


def _node_available() -> bool:
    return shutil.which("node") is not None and NODE_SERVER.exists()


@contextlib.contextmanager
def upstream(kind: str, port: int, log: pathlib.Path) -> Iterator[subprocess.Popen[bytes]]:
    """A connector server serving conformance/* on ``port``, as its own process."""
    if kind == "python":
        env = {
            "CONNECTOR_PROXY_CONNECTORS": "tests.conformance_connectors",
            "CONNECTOR_PROXY_GRPC_PORT": str(port),
        }
        args = ["-m", "connector_proxy", "--grpc-only"]
        with process(args, env, log) as proc:
            wait_for_grpc(f"127.0.0.1:{port}", proc, log)
            yield proc
        return
    if not _node_available():
        pytest.skip("the Node.js connector server is not built (make build-node; CI builds it)")
    env = {**os.environ, "CONNECTOR_NODE_PORT": str(port), "CONNECTOR_NODE_CONFORMANCE": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["node", str(NODE_SERVER)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            wait_for_grpc(f"127.0.0.1:{port}", proc, log)
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture(scope="module", params=["python", "node"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(kind, target) of a running conformance server, one per language."""
    port = free_port()
    log = tmp_path_factory.mktemp(request.param) / "upstream.log"
    with upstream(request.param, port, log):
        yield request.param, f"127.0.0.1:{port}"


def proxy_in_front_of(
    target: str, tmp_path: pathlib.Path
) -> contextlib.AbstractAsyncContextManager[httpx.AsyncClient]:
    return proxy_fronting(
        f"conformance={target}", tmp_path, CONNECTOR_PROXY_COMMAND_TIMEOUT=str(COMMAND_TIMEOUT)
    )


@pytest.fixture
async def proxy(served: tuple[str, str], tmp_path: pathlib.Path) -> AsyncIterator[httpx.AsyncClient]:
    async with proxy_in_front_of(served[1], tmp_path) as client:
        yield client


async def do(proxy: httpx.AsyncClient, command: str, **body: Any) -> tuple[int, dict[str, Any]]:
    response = await proxy.post(f"/v1/do/conformance/{command}", json=body)
    assert response.headers["content-type"] == "application/json"
    payload: dict[str, Any] = response.json()
    assert payload["command_response_version"] == 2
    return response.status_code, payload


async def test_the_commands_are_listed_with_their_schema(proxy):
    commands = {c["id"]: c for c in (await proxy.get("/v1/commands")).json()}
    assert set(commands) == {"conformance/Echo", "conformance/Fail", "conformance/Sleep"}
    echo = commands["conformance/Echo"]
    assert [(p["id"], p["type"], p["required"]) for p in echo["parameters"]] == [
        ("value", "any", True),
        ("log", "str", False),
    ]
    assert echo["description"] == "Answers the value unchanged, after logging the line."


async def test_a_success_keeps_json_exactly_and_carries_the_log(proxy):
    value = {"big": 123456789012345678901234567890, "n": 7, "f": 1.5, "s": "é", "l": [None, True]}
    status, payload = await do(proxy, "Echo", value=value, log="echoing")
    assert status == 200
    assert payload["error"] is None
    assert payload["command_response"]["body"] == value
    assert payload["command_response"]["http_status"] == 200
    assert payload["spiff__logs"] == ["echoing"]


@pytest.mark.parametrize(
    ("grpc_code", "http_status"),
    [("NOT_FOUND", 404), ("INVALID_ARGUMENT", 400), ("PERMISSION_DENIED", 403), ("UNAVAILABLE", 503)],
)
async def test_a_failure_keeps_its_code_status_message_and_log(proxy, grpc_code, http_status):
    status, payload = await do(
        proxy, "Fail", grpc_code=grpc_code, error_code="ThingWentWrong", message="It went wrong."
    )
    assert status == http_status
    # An UNAVAILABLE the connector reports is its own error, not the proxy's ConnectorUnavailable.
    assert payload["error"] == {"error_code": "ThingWentWrong", "message": "It went wrong."}
    assert payload["command_response"]["http_status"] == http_status
    assert payload["spiff__logs"] == [f"failing with {grpc_code} as asked"]


async def test_bad_fields_reach_the_caller(proxy):
    status, payload = await do(
        proxy,
        "Fail",
        grpc_code="INVALID_ARGUMENT",
        error_code="InvalidParameters",
        message="Bad.",
        bad_fields=["a", "b.c"],
    )
    assert status == 400
    assert payload["error"]["error_code"] == "InvalidParameters"
    assert payload["error"]["message"].startswith("Bad.")


async def test_a_missing_parameter_is_refused_before_the_call(proxy):
    status, payload = await do(proxy, "Echo", log="never")
    assert status == 400
    assert payload["error"]["error_code"] == "InvalidParameters"
    assert "value" in payload["error"]["message"]
    assert payload["spiff__logs"] == []


async def test_the_deadline_ends_the_command_with_its_logs(proxy):
    started = time.monotonic()
    status, payload = await do(proxy, "Sleep", seconds=5)
    assert time.monotonic() - started < COMMAND_TIMEOUT + 0.5
    assert status == 504
    assert payload["error"]["error_code"] == "DeadlineExceeded"
    assert payload["command_response"]["http_status"] == 504
    assert payload["spiff__logs"] == ["sleeping 5 s"]


@pytest.mark.parametrize("kind", ["python", "node"])
async def test_a_killed_server_answers_503_at_once_and_a_restarted_one_serves_again(kind, tmp_path):
    port = free_port()
    with upstream(kind, port, tmp_path / "first.log") as first:
        async with proxy_in_front_of(f"127.0.0.1:{port}", tmp_path) as proxy:
            status, _ = await do(proxy, "Echo", value=1)
            assert status == 200
            first.send_signal(signal.SIGKILL)
            first.wait()
            killed = time.monotonic()
            while (await do(proxy, "Echo", value=1))[0] != 503:
                assert time.monotonic() - killed < 1.0, "no 503 within a second of the kill"
                await asyncio.sleep(0.01)  # the 503 needs no I/O: let the proxy's tasks run
            status, payload = await do(proxy, "Echo", value=1)
            assert status == 503
            assert payload["error"]["error_code"] == "ConnectorUnavailable"
            assert f"127.0.0.1:{port}" in payload["error"]["message"]
            with upstream(kind, port, tmp_path / "second.log"):
                deadline = time.monotonic() + 10
                while (await do(proxy, "Echo", value=2))[0] != 200:
                    assert time.monotonic() < deadline, "the restarted server was not used within 10 s"
                    await asyncio.sleep(0.05)
                status, payload = await do(proxy, "Echo", value=2)
                assert payload["command_response"]["body"] == 2
