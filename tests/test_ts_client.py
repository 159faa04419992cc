"""The generated TypeScript client (clients/ts, built by ``make gen-ts``) against the real gRPC server.

``node`` runs the compiled example, ``clients/ts/examples/call.ts``, which calls
``ExampleService/Example`` and ``JobsService/ListJobs`` with connect-node's gRPC transport.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from jobs import embedded_jobs, jobs_service
from rest_shim import Catalogue
from server._registry import Connector
from server.app import create_server
from server.invocation import LocalInvoker
from server.settings import Settings

ROOT = pathlib.Path(__file__).resolve().parent.parent
TS = ROOT / "clients" / "ts"
EXAMPLE = TS / "dist" / "examples" / "call.js"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None, reason="node is not on PATH (the TypeScript client needs Node.js 20+)"
)


@pytest.fixture
async def target(connectors: list[Connector], tmp_path: pathlib.Path) -> AsyncIterator[str]:
    """The gRPC server as ``python -m connector_proxy`` runs it: the connectors and JobsService
    (embedded jobs)."""
    jobs = embedded_jobs(Settings.from_env({"CONNECTOR_PROXY_JOBS_DB": str(tmp_path / "jobs.sqlite3")}))
    await jobs.start(Catalogue(c.service for c in connectors), LocalInvoker(connectors))
    server, port = await create_server(connectors, "127.0.0.1:0", services=[jobs_service(jobs)])
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)
        await jobs.close()


async def run_example(target: str, message: str) -> tuple[int, list[Any], list[Any]]:
    """Runs the compiled example; returns its exit status, its stdout lines and its stderr's JSON lines
    (node may add warnings there), each line parsed as JSON."""
    assert NODE is not None
    assert EXAMPLE.exists(), f"{EXAMPLE} is missing; run make gen-ts"
    # Asynchronously: the server under test runs on this event loop.
    with anyio.fail_after(30):
        done = await anyio.run_process([NODE, str(EXAMPLE), target, message], check=False)
    out = [json.loads(line) for line in done.stdout.decode().splitlines()]
    err = [json.loads(line) for line in done.stderr.decode().splitlines() if line.startswith("{")]
    return done.returncode, out, err


def test_every_proto_has_generated_typescript() -> None:
    protos = sorted(p.relative_to(ROOT / "protos") for p in (ROOT / "protos").rglob("*.proto"))
    assert protos
    for proto in protos:
        generated = TS / "gen" / proto.with_name(proto.stem + "_pb.ts")
        assert generated.exists(), f"{proto} has no generated TypeScript; run make gen-ts"
        assert generated.stat().st_mtime >= (ROOT / "protos" / proto).stat().st_mtime, f"{generated} is stale"


@pytest.mark.anyio
async def test_typescript_client_calls_a_connector_and_jobs_service(target: str) -> None:
    status, out, err = await run_example(target, "héllo, 世界")
    assert (status, err) == (0, [])
    assert out == [
        {
            "example": {
                "connectorResponse": "You passed the example connector: 'héllo, 世界'. Have a good day!",
                "message": "héllo, 世界",
            }
        },
        {
            "listJobs": {
                "jobs": [],
                # int64 is a JSON string in proto3's JSON mapping.
                "counts": {"queued": "0", "running": "0", "delivering": "0", "delivered": "0", "failed": "0"},
            }
        },
    ]


@pytest.mark.anyio
async def test_a_grpc_error_reaches_the_typescript_client_with_its_code_and_details(target: str) -> None:
    status, out, err = await run_example(target, "")  # message is required
    assert (status, out) == (1, [])
    assert err == [
        {
            "error": {
                "code": "InvalidArgument",
                "message": "Missing required parameters: message.",
                "details": [
                    {"type": "google.rpc.ErrorInfo", "reason": "InvalidParameters"},
                    {"type": "google.rpc.BadRequest"},
                ],
            }
        }
    ]
