"""The remote path and its comparison, in front of ONE gRPC server process.

* ``remote``: the REST shim alone (``SHIM_ARGV``, ``CONNECTOR_PROXY_GRPC_TARGETS`` naming the gRPC
  server), ``POST /v1/do/example/Example``: HTTP/1.1 in, spiff's envelope out, one grpc.aio
  channel to the server;
* ``envoy``: Envoy's gRPC-JSON transcoder (:mod:`bench.envoy`) in front of the same server,
  ``POST /spiff.connector.example.v1.ExampleService/Example`` with the same JSON body: HTTP/1.1
  in, the reply message as JSON out, one HTTP/2 connection to the server.

The gRPC server is ``GRPC_SERVER_ARGV`` (``--grpc-only``); both fronts call the same process, so
its CPU per request is measured twice, once under each front. The bench checks that the shim's
reply is the embedded proxy's, byte for byte, and that Envoy's is the envelope's
``command_response.body`` before anything is measured.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.envoy import descriptor_set, envoy_argv, envoy_binary, envoy_config, transcoded_path
from bench.procs import GRPC_SERVER_ARGV, SHIM_ARGV, Proc, Procs, clean_env, free_ports, http_request

__all__ = ["EXAMPLE_METHOD", "EXAMPLE_PROTO", "RemoteSystems", "envoy_path", "start_remote_systems"]

EXAMPLE_METHOD = "spiff.connector.example.v1.ExampleService/Example"
EXAMPLE_PROTO = "spiff/connector/example/v1/example.proto"
READY_TIMEOUT = 30.0


def envoy_path() -> str:
    """The HTTP path Envoy's transcoder serves ``ExampleService/Example`` on."""
    return transcoded_path(EXAMPLE_METHOD)


@dataclass
class RemoteSystems:
    """What started: the gRPC server, the shim in front of it and Envoy (None when unavailable)."""

    grpc: Proc
    grpc_port: int
    shim: Proc
    shim_port: int
    envoy: Proc | None = None
    envoy_port: int = 0
    envoy_version: str = ""
    skipped: dict[str, str] = field(default_factory=dict)

    def pids(self) -> dict[str, dict[str, int]]:
        """The serving processes of each system, by a short name (their CPU time is summed)."""
        pids = {"remote": {"shim": self.shim.pid, "grpc": self.grpc.pid}}
        if self.envoy is not None:
            pids["envoy"] = {"envoy": self.envoy.pid, "grpc": self.grpc.pid}
        return pids

    def ports(self) -> dict[str, int]:
        ports = {"remote": self.shim_port}
        if self.envoy is not None:
            ports["envoy"] = self.envoy_port
        return ports


def wait_grpc_ready(proc: Proc, port: int, timeout: float = READY_TIMEOUT) -> float:
    """Polls grpc.health.v1 on ``port`` until it answers SERVING; seconds since the spawn."""
    deadline = time.perf_counter() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc.popen.poll() is not None:
                msg = f"{proc.name} exited with code {proc.popen.returncode}; its log:\n{proc.log_tail()}"
                raise RuntimeError(msg)
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.perf_counter() - proc.started_at
            except grpc.RpcError:
                pass
            if time.perf_counter() > deadline:
                msg = f"{proc.name} was not SERVING within {timeout:g} s; its log:\n{proc.log_tail()}"
                raise RuntimeError(msg)
            time.sleep(0.05)


def start_grpc_server(procs: Procs) -> tuple[Proc, int]:
    (port,) = free_ports(1)
    env = clean_env(
        {
            "CONNECTOR_PROXY_HOST": "127.0.0.1",
            "CONNECTOR_PROXY_GRPC_PORT": str(port),
            "CONNECTOR_PROXY_SHUTDOWN_GRACE": "1",
        }
    )
    proc = procs.start("grpc-server", GRPC_SERVER_ARGV, env)
    wait_grpc_ready(proc, port)
    return proc, port


def start_shim(procs: Procs, grpc_port: int) -> tuple[Proc, int]:
    (port,) = free_ports(1)
    env = clean_env(
        {
            "CONNECTOR_PROXY_HOST": "127.0.0.1",
            "CONNECTOR_PROXY_PORT": str(port),
            "CONNECTOR_PROXY_GRPC_TARGETS": f"127.0.0.1:{grpc_port}",
            "CONNECTOR_PROXY_SHUTDOWN_GRACE": "1",
            # The shim runs the embedded job runner; its store lives in the run's directory.
            "CONNECTOR_PROXY_JOBS_DB": str(procs.log_dir / f"shim-{port}-jobs.sqlite3"),
        }
    )
    proc = procs.start("rest-shim", SHIM_ARGV, env)
    proc.wait_ready(port, timeout=READY_TIMEOUT)
    return proc, port


def start_envoy(procs: Procs, tmp: Path, binary: str, grpc_port: int) -> tuple[Proc, int]:
    port, admin_port = free_ports(2)
    descriptor = descriptor_set(tmp / "example-descriptor.pb", [EXAMPLE_PROTO])
    config = envoy_config(
        port=port,
        admin_port=admin_port,
        grpc_port=grpc_port,
        descriptor=descriptor,
        services=[EXAMPLE_METHOD.split("/")[0]],
    )
    proc = procs.start("envoy", envoy_argv(binary, config, tmp / "envoy"), clean_env({}))
    proc.wait_ready(admin_port, path="/ready", timeout=READY_TIMEOUT)
    return proc, port


def _post(port: int, path: str, body: bytes) -> bytes:
    status, reply = http_request(port, "POST", path, body)
    if status != 200:
        msg = f"POST {path} on port {port} answered {status}: {reply[:500]!r}"
        raise RuntimeError(msg)
    return reply


def start_remote_systems(
    procs: Procs, tmp: Path, do_path: str, do_body: bytes, expected: bytes
) -> RemoteSystems:
    """Starts the gRPC server, the shim and Envoy, and checks their replies.

    ``expected`` is the embedded proxy's reply to ``POST do_path`` with ``do_body``: the shim
    must answer the same bytes, Envoy the envelope's ``command_response.body`` as JSON. When
    Envoy cannot run, it is left out and ``skipped`` says why.
    """
    grpc_proc, grpc_port = start_grpc_server(procs)
    shim, shim_port = start_shim(procs, grpc_port)
    systems = RemoteSystems(grpc_proc, grpc_port, shim, shim_port)
    got = _post(shim_port, do_path, do_body)
    if got != expected:
        msg = f"the remote shim's reply differs from the embedded proxy's:\n{got!r}\n{expected!r}"
        raise RuntimeError(msg)
    binary, version = envoy_binary()
    if binary is None:
        systems.skipped["envoy"] = version
        return systems
    try:
        envoy, envoy_port = start_envoy(procs, tmp, binary, grpc_port)
    except RuntimeError as exc:  # its log is in the message: say why, measure the rest
        systems.skipped["envoy"] = f"Envoy {version} did not start: {exc}"
        return systems
    systems.envoy, systems.envoy_port, systems.envoy_version = envoy, envoy_port, version
    transcoded = json.loads(_post(envoy_port, envoy_path(), do_body))
    body = json.loads(expected)["command_response"]["body"]
    if transcoded != body:
        msg = f"Envoy's reply {transcoded!r} is not the command's result {body!r}"
        raise RuntimeError(msg)
    return systems
