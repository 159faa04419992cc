"""A real proxy process for the command line's tests (``python -m connector_proxy`` on free loopback
ports, with an API key), and the command line run against it through click's runner."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import CliRunner, Result

from connector_proxy.cli import cli
from tests.connectors.http_target import HttpTarget
from tests.jobs.fake_spiff import FakeSpiff
from tests.ports import free_port
from tests.processes import process, wait_for_grpc, wait_for_http

API_KEY = "cli-test-key-5b0e9d"


@dataclass(frozen=True)
class RunningProxy:
    """Where a started proxy listens, and the environment that points the command line at it."""

    url: str
    grpc_target: str

    @property
    def env(self) -> dict[str, str | None]:
        return {
            "CONNECTOR_PROXY_URL": self.url,
            "CONNECTOR_PROXY_GRPC_TARGET": self.grpc_target,
            "CONNECTOR_PROXY_API_KEY": API_KEY,
        }


def run(proxy: RunningProxy, *args: str, **env: str | None) -> Result:
    """``connector-proxy <args>`` against ``proxy`` (``env`` overrides its variables)."""
    return CliRunner().invoke(cli, list(args), env={**proxy.env, **env}, catch_exceptions=False)


def run_json(proxy: RunningProxy, *args: str) -> Any:
    """The JSON a successful ``connector-proxy <args>`` prints."""
    result = run(proxy, *args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def http_target() -> Iterator[HttpTarget]:
    with HttpTarget() as server:
        yield server


@pytest.fixture(scope="module")
def spiff() -> Iterator[FakeSpiff]:
    """A fake spiff-arena backend that takes the jobs' callbacks."""
    with FakeSpiff() as fake:
        yield fake


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    """The embedded proxy (REST, gRPC, the job store) in a process of its own, with an API key."""
    port, grpc_port = free_port(), free_port()
    env = {
        "CONNECTOR_PROXY_PORT": str(port),
        "CONNECTOR_PROXY_GRPC_PORT": str(grpc_port),
        "CONNECTOR_PROXY_API_KEY": API_KEY,
        "CONNECTOR_PROXY_GRPC_TARGETS": "",
    }
    log: pathlib.Path = tmp_path_factory.mktemp("proxy") / "proxy.log"
    with process(["-m", "connector_proxy"], env, log) as proc:
        running = RunningProxy(f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}")
        wait_for_http(running.url, proc, log)
        wait_for_grpc(running.grpc_target, proc, log)
        yield running
    assert API_KEY not in log.read_text()
