"""The Node.js connector server (connectors-node, built by ``make build-node``) as a real process.

The fixtures build nothing: they start the compiled server, ``node connectors-node/dist/server.js``,
on port 0, read the port from the line it prints, and stop it at teardown. The tests skip only
when node is missing; a missing build fails, naming the make target.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import select
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import pytest

from server.wire import grpc_options

# Readable assertion failures in the helpers the tests share.
pytest.register_assert_rewrite("tests.node.calls")

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
SERVER = ROOT / "connectors-node" / "dist" / "server.js"
NODE = shutil.which("node")
STARTUP_SECONDS = 20
EXIT_SECONDS = 5

# The shared server's limits (the defaults). Timing assertions allow for a loaded machine.
TIME_LIMIT_MS = 1000
MAX_DEPTH = 500
SETTINGS = {
    "CONNECTOR_PROXY_JSONATA_TIME_LIMIT_MS": str(TIME_LIMIT_MS),
    "CONNECTOR_PROXY_JSONATA_MAX_DEPTH": str(MAX_DEPTH),
    "CONNECTOR_PROXY_JSONATA_WORKERS": "2",
    "CONNECTOR_PROXY_JSONATA_MAX_MEMORY_MB": "256",
    "CONNECTOR_PROXY_SHUTDOWN_GRACE": "5",
}


@dataclass(frozen=True)
class NodeServer:
    process: subprocess.Popen[bytes]
    target: str  # host:port
    log: pathlib.Path  # its stderr

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _read_target(process: subprocess.Popen[bytes], log: pathlib.Path) -> str:
    """The address from the server's `listening on <host>:<port>` line."""
    assert process.stdout is not None
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            line = process.stdout.readline().decode()
            if line.startswith("listening on "):
                return line.removeprefix("listening on ").strip()
            if not line:
                break  # stdout closed: it is exiting
    pytest.fail(f"the Node.js server did not print its address:\n{log.read_text(errors='replace')}")


@contextlib.contextmanager
def node_server(env: dict[str, str], log: pathlib.Path) -> Iterator[NodeServer]:
    """``node connectors-node/dist/server.js`` on 127.0.0.1:0 with ``env`` over SETTINGS."""
    if NODE is None:
        pytest.skip("node is not on PATH (the Node.js connector server needs Node.js 20+)")
    assert SERVER.exists(), f"{SERVER} is missing; run make build-node"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [NODE, str(SERVER)],
            cwd=ROOT,
            env={
                **os.environ,
                "CONNECTOR_NODE_HOST": "127.0.0.1",
                "CONNECTOR_NODE_PORT": "0",
                **SETTINGS,
                **env,
            },
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        yield NodeServer(process, _read_target(process, log), log)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(EXIT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        assert process.stdout is not None
        process.stdout.close()


@pytest.fixture(scope="session")
def jsonata_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeServer]:
    """One server for the tests that do not stop or break it."""
    with node_server({}, tmp_path_factory.mktemp("node") / "server.log") as server:
        yield server


@contextlib.asynccontextmanager
async def open_channel(
    target: str, options: list[tuple[str, int | str]] | None = None
) -> AsyncIterator[grpc.aio.Channel]:
    """A channel as the proxy opens one to an upstream (its message and metadata limits)."""
    async with grpc.aio.insecure_channel(target, options=options or grpc_options(64 * 1024 * 1024)) as opened:
        yield opened
    # grpc.aio's poller thread hands cancelled streams' last events to the loop a moment after
    # close (as server/upstreams waits too); the test's loop must still be open for them.
    await asyncio.sleep(0.05)


@pytest.fixture
async def channel(jsonata_server: NodeServer, anyio_backend: str) -> AsyncIterator[grpc.aio.Channel]:
    async with open_channel(jsonata_server.target) as opened:
        yield opened
