"""deploy/compose with a real Compose implementation (podman-compose): the files as it reads them
match the Compose Specification, and the proxy and the Node.js connector server come up from
them, wired together with their API keys, and go down cleanly.

spiff-arena's backend and frontend images come from a registry this test cannot reach; they are
left out of ``up`` and covered by the configuration checks here and in test_manifests.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from grpc_health.v1 import health_pb2

from tests.deploy.conftest import unavailable
from tests.deploy.images import ContainerTool
from tests.deploy.test_manifests import (
    COMPOSE_DIR,
    COMPOSE_SCHEMA,
    COMPOSE_SECRETS,
    ENV_EXAMPLE,
    SCALE_OUT_FILES,
)
from tests.ports import free_port
from tests.processes import grpc_health

pytestmark = pytest.mark.slow

UP_SECONDS = 60


class Compose:
    """``podman-compose`` on deploy/compose under a project name of its own."""

    def __init__(self, tool: ContainerTool, files: str, env: dict[str, str]) -> None:
        if tool.name != "podman":
            unavailable("podman is needed to bring the compose file up (with podman-compose)")
        self.project = f"deploy-test-{uuid.uuid4().hex[:8]}"
        self.env = {**tool.env, **ENV_EXAMPLE, **COMPOSE_SECRETS, "COMPOSE_FILE": files, **env}
        self.files = [arg for name in files.split(":") for arg in ("-f", name)]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            # podman-compose from the dev dependencies, not an older one on PATH.
            [sys.executable, "-m", "podman_compose", "-p", self.project, *self.files, *args],
            cwd=COMPOSE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert completed.returncode == 0, f"podman-compose {' '.join(args)}:\n{completed.stderr[-4000:]}"
        return completed


@pytest.mark.parametrize("files", ["compose.yaml", SCALE_OUT_FILES])
def test_the_files_as_compose_reads_them_match_the_specification(tool: ContainerTool, files: str):
    compose = Compose(tool, files, {})
    model: dict[str, Any] = yaml.safe_load(compose.run("config").stdout)
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(model)
    proxy = model["services"]["connector-proxy"]["environment"]
    backend = model["services"]["spiffworkflow-backend"]["environment"]
    assert backend["SPIFFWORKFLOW_BACKEND_CONNECTOR_PROXY_URL"] == "http://connector-proxy:7004"
    assert backend["SPIFFWORKFLOW_BACKEND_CONNECTOR_PROXY_API_KEY"] == proxy["CONNECTOR_PROXY_API_KEY"]
    assert ("CONNECTOR_PROXY_JOBS_BROKER_URL" in proxy) == (files == SCALE_OUT_FILES)


@pytest.fixture
def compose_up(tool: ContainerTool, images: tuple[str, str]) -> Iterator[tuple[Compose, int, int]]:
    port, grpc_port = free_port(), free_port()
    compose = Compose(
        tool,
        "compose.yaml",
        {"CONNECTOR_PROXY_PUBLISHED_PORT": str(port), "CONNECTOR_PROXY_PUBLISHED_GRPC_PORT": str(grpc_port)},
    )
    try:
        # The proxy (and what it depends on: the Node.js server); not spiff-arena's images.
        compose.run("up", "-d", "connector-proxy")
        yield compose, port, grpc_port
    finally:
        compose.run("down", "--volumes", "--timeout", "10")
        # down leaves the project's network behind when up failed half-way.
        subprocess.run(
            ["podman", "network", "rm", "--force", f"{compose.project}_default"],
            env=compose.env,
            capture_output=True,
            check=False,
        )


def test_the_proxy_and_the_node_server_come_up_from_compose(compose_up):
    compose, port, grpc_port = compose_up
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + UP_SECONDS
    while True:  # ready once the Node.js server, started next to it, was discovered
        try:
            if httpx.get(f"{base}/readiness", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            logs = subprocess.run(
                ["podman", "logs", f"{compose.project}_connector-proxy_1"],
                env=compose.env,
                capture_output=True,
                text=True,
                check=False,
            )
            pytest.fail(f"not ready within {UP_SECONDS} s:\n{logs.stdout}\n{logs.stderr}")
        time.sleep(0.5)

    key = {"Spiff-Connector-Proxy-Api-Key": COMPOSE_SECRETS["CONNECTOR_PROXY_API_KEY"]}
    assert httpx.get(f"{base}/v1/commands", timeout=5).status_code == 401
    ids = {c["id"] for c in httpx.get(f"{base}/v1/commands", headers=key, timeout=5).json()}
    assert {"jsonata/Evaluate", "http/GetRequestV2", "example/Example"} <= ids
    # Through the proxy to the Node.js container, with the key the compose file gives both.
    body = {"expression": "$sum(a) * $k", "input": {"a": [1, 2, 3]}, "bindings": {"k": 7}}
    answer = httpx.post(f"{base}/v1/do/jsonata/Evaluate", json=body, headers=key, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["command_response"]["body"] == 42

    assert grpc_health(f"127.0.0.1:{grpc_port}") == health_pb2.HealthCheckResponse.SERVING

    stopped = time.monotonic()
    compose.run("stop", "--timeout", "30")
    assert time.monotonic() - stopped < 10
    states = subprocess.run(
        [
            "podman",
            "ps",
            "--all",
            "--filter",
            f"label=io.podman.compose.project={compose.project}",
            "--format",
            "{{.Names}} {{.ExitCode}}",
        ],
        env=compose.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    exits = dict(line.split() for line in states if line.strip())
    assert exits == {
        f"{compose.project}_connector-proxy_1": "0",
        f"{compose.project}_connector-node_1": "0",
    }
