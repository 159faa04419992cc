"""Containers of the project's images in tests: run, wait until they serve, look inside, stop.

Every container and network a test makes carries a unique name and is removed when its
``Containers`` closes, whatever the outcome. Figures measured on the way (image sizes, start and
stop times, memory) are kept in FIGURES and printed after the tests.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.deploy.images import ContainerTool

STARTUP_SECONDS = 60
FIGURES: dict[str, str] = {}


def note(what: str, value: str) -> None:
    """A measured figure, printed in the session's summary."""
    FIGURES[what] = value


@dataclasses.dataclass
class Container:
    tool: ContainerTool
    name: str
    run_at: float  # time.monotonic() just before the run command

    def inspect(self, template: str) -> str:
        return self.tool.run("inspect", "--format", template, self.name).stdout.strip()

    def running(self) -> bool:
        return self.inspect("{{.State.Running}}") == "true"

    def exit_code(self) -> int:
        return int(self.inspect("{{.State.ExitCode}}"))

    def logs(self) -> str:
        completed = self.tool.run("logs", self.name, check=False)
        return completed.stdout + completed.stderr

    def port(self, container_port: int) -> int:
        """The host port published for ``container_port`` (``-p 127.0.0.1::<port>``)."""
        published = self.tool.run("port", self.name, f"{container_port}/tcp").stdout.strip()
        return int(published.splitlines()[0].rsplit(":", 1)[1])

    def exec(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.tool.run("exec", self.name, *command, check=check)

    def process_status(self, pid: int = 1) -> dict[str, str]:
        """/proc/<pid>/status inside the container, as a dict."""
        text = self.exec("cat", f"/proc/{pid}/status").stdout
        return {key: value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())}

    def healthcheck(self) -> subprocess.CompletedProcess[str]:
        """The image's HEALTHCHECK, run now: podman's own command, else the configured test
        command through exec (docker has no command that runs it on demand)."""
        if self.tool.name == "podman":
            return self.tool.run("healthcheck", "run", self.name, check=False, timeout=30)
        test = json.loads(self.inspect("{{json .Config.Healthcheck.Test}}"))
        assert test[0] == "CMD", test
        return self.exec(*test[1:], check=False)

    def stop(self, timeout: int = 30) -> tuple[int, float]:
        """``stop`` (the image's STOPSIGNAL, then SIGKILL after ``timeout`` s): the exit code and
        the seconds it took."""
        started = time.monotonic()
        self.tool.run("stop", "--time", str(timeout), self.name, timeout=timeout + 30)
        return self.exit_code(), time.monotonic() - started

    def fail(self, message: str) -> None:
        pytest.fail(f"{message}\n--- logs of {self.name} ---\n{self.logs()}")

    def wait_for_http(self, url: str, status: int = 200) -> float:
        """Polls ``url`` until it answers ``status``; the seconds since the run command."""
        deadline = time.monotonic() + STARTUP_SECONDS
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                response = httpx.get(url, timeout=2)
                if response.status_code == status:
                    return time.monotonic() - self.run_at
                last = f"{response.status_code} {response.text[:200]}"
            except httpx.TransportError as exc:
                last = repr(exc)
            if not self.running():
                self.fail(f"exited with {self.exit_code()} before {url} answered {status}")
            time.sleep(0.05)
        self.fail(f"{url} did not answer {status} within {STARTUP_SECONDS} s (last: {last})")
        raise AssertionError  # unreachable: fail raises

    def wait_for_grpc_health(self, target: str) -> float:
        """Polls grpc.health.v1 Check on ``target`` until SERVING; the seconds since the run command."""
        deadline = time.monotonic() + STARTUP_SECONDS
        last = "no answer"
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                try:
                    answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return time.monotonic() - self.run_at
                    last = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
                except grpc.RpcError as exc:
                    last = f"{exc.code()}"
                if not self.running():
                    self.fail(f"exited with {self.exit_code()} before gRPC health answered SERVING")
                time.sleep(0.05)
        self.fail(f"gRPC health on {target} not SERVING within {STARTUP_SECONDS} s (last: {last})")
        raise AssertionError  # unreachable: fail raises


class Containers:
    """Runs containers and networks with unique names; ``close`` removes them all."""

    def __init__(self, tool: ContainerTool) -> None:
        self.tool = tool
        self.prefix = f"deploy-test-{uuid.uuid4().hex[:8]}"
        self._containers: list[str] = []
        self._networks: list[str] = []
        self._volumes: list[str] = []

    def name(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def network(self, role: str) -> str:
        name = self.name(role)
        self.tool.run("network", "create", name)
        self._networks.append(name)
        return name

    def volume(self, role: str) -> str:
        name = self.name(role)
        self.tool.run("volume", "create", name)
        self._volumes.append(name)
        return name

    def run(
        self,
        image: str,
        role: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        publish: Sequence[int] = (),
        options: Sequence[str] = (),
    ) -> Container:
        """``run --detach`` of ``image`` with ``args`` after the entrypoint; ``publish`` maps each
        container port to a free port on 127.0.0.1; ``options`` go to ``run`` itself."""
        name = self.name(role)
        command = ["run", "--detach", "--name", name]
        for port in publish:
            command += ["--publish", f"127.0.0.1::{port}"]
        for key, value in (env or {}).items():
            command += ["--env", f"{key}={value}"]
        command += [*options, image, *args]
        self._containers.append(name)
        run_at = time.monotonic()
        self.tool.run(*command, timeout=60)
        return Container(self.tool, name, run_at)

    def run_once(
        self, image: str, *args: str, options: Sequence[str] = (), timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``run --rm`` in the foreground; the completed process (not checked)."""
        return self.tool.run("run", "--rm", *options, image, *args, check=False, timeout=timeout)

    def close(self) -> None:
        if self._containers:
            # --volumes: the anonymous volumes of the image's VOLUME too.
            quick = ["--time", "0"] if self.tool.name == "podman" else []
            self.tool.run("rm", "--force", "--volumes", *quick, *self._containers, check=False, timeout=120)
        if self._volumes:
            self.tool.run("volume", "rm", "--force", *self._volumes, check=False)
        for network in self._networks:
            self.tool.run("network", "rm", "--force", network, check=False)
        self._containers.clear()
        self._volumes.clear()
        self._networks.clear()


def image_config(tool: ContainerTool, image: str) -> dict[str, Any]:
    """The image's configuration (User, Env, ExposedPorts, Volumes, Healthcheck...)."""
    inspected: list[dict[str, Any]] = json.loads(tool.run("image", "inspect", image).stdout)
    config: dict[str, Any] = dict(inspected[0]["Config"])
    # podman reports the health check next to the configuration, docker inside it.
    if "Healthcheck" in inspected[0]:
        config.setdefault("Healthcheck", inspected[0]["Healthcheck"])
    return config
