"""Real processes for the end-to-end tests: the proxy (``python -m connector_proxy``) and an HTTP target.

The proxy is started once per module on free loopback ports and stopped with SIGTERM (then
SIGKILL) at teardown; its output goes to a log file that failure messages quote.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.node.conftest import node_server
from tests.ports import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LIVENESS_TIMEOUT = 10.0


@dataclass
class ProxyProcess:
    url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def _proxy(log_path: Path, **settings: str) -> Iterator[ProxyProcess]:
    """``python -m connector_proxy`` on free ports with ``settings``, reachable once ``GET /liveness``
    answers 200."""
    port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_PROXY_")}
    env |= {
        "CONNECTOR_PROXY_HOST": "127.0.0.1",
        "CONNECTOR_PROXY_PORT": str(port),
        "CONNECTOR_PROXY_GRPC_PORT": str(grpc_port),
        "CONNECTOR_PROXY_JOBS_DB": str(log_path.with_name("jobs.sqlite3")),
        "NO_PROXY": "127.0.0.1,localhost",
        **settings,
    }
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "connector_proxy"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    proxy = ProxyProcess(url=f"http://127.0.0.1:{port}", log_path=log_path, process=process)
    try:
        _wait_for_liveness(proxy)
        yield proxy
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def proxy_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    """The proxy with its local connectors."""
    with _proxy(tmp_path_factory.mktemp("proxy") / "proxy.log") as proxy:
        yield proxy


@pytest.fixture(scope="module")
def polyglot_proxy_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    """The proxy with its local connectors, fronting the Node.js connector server (jsonata)."""
    directory = tmp_path_factory.mktemp("polyglot")
    with (
        node_server({}, directory / "node.log") as node,
        _proxy(directory / "proxy.log", CONNECTOR_PROXY_GRPC_TARGETS=f"node={node.target}") as proxy,
    ):
        yield proxy


def _wait_for_liveness(proxy: ProxyProcess) -> None:
    deadline = time.monotonic() + LIVENESS_TIMEOUT
    with httpx.Client(trust_env=False, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proxy.process.poll() is not None:
                pytest.fail(f"proxy exited with {proxy.process.returncode}:\n{proxy.log()}")
            try:
                if client.get(f"{proxy.url}/liveness").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    pytest.fail(f"proxy did not answer /liveness within {LIVENESS_TIMEOUT} s:\n{proxy.log()}")


@dataclass
class TargetServer:
    url: str
    paths: list[str] = field(default_factory=list)


ITEM_BODY = b'{"id": 123, "big": 12345678901234567890}'


@pytest.fixture(scope="module")
def target_server() -> Iterator[TargetServer]:
    """A local upstream for the http connector: ``/item`` (200 JSON) and ``/missing`` (404 JSON)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            if self.path == "/item":
                self._reply(200, ITEM_BODY)
            elif self.path == "/missing":
                self._reply(404, json.dumps({"detail": "no such item"}).encode())
            else:
                self._reply(500, json.dumps({"detail": f"unexpected path {self.path}"}).encode())

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="e2e-target", daemon=True)
    thread.start()
    try:
        yield TargetServer(url=f"http://127.0.0.1:{server.server_address[1]}", paths=seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
