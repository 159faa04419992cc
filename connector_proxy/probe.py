"""``python -m connector_proxy.probe``: the container image's health check. Exits 0 when the
proxy in this container serves, 1 (with the reason on stderr) when not.

The mode is read from the command line of PID 1 (the container's entry point): the default and
``--shim-only`` modes are asked ``GET /readiness`` on the REST port (under the path prefix);
``--grpc-only`` the ``grpc.health.v1`` service on the gRPC port (plaintext: with TLS on that port,
override the check); ``--worker`` processes serve nothing to ask, and pass while they run.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["main", "probe"]

_TIMEOUT = 4.0  # seconds; below the image's HEALTHCHECK --timeout


def _entry_point_args() -> list[str]:
    return [arg.decode(errors="replace") for arg in Path("/proc/1/cmdline").read_bytes().split(b"\0")]


def _grpc_health(port: str) -> str | None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(target) as channel:
            request = health_pb2.HealthCheckRequest(service="")
            answer = health_pb2_grpc.HealthStub(channel).Check(request, timeout=_TIMEOUT)
    except grpc.RpcError as error:
        return f"{target}: {error.code().name}"
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        return f"{target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)}"
    return None


def _readiness(port: str, prefix: str) -> str | None:
    url = f"http://127.0.0.1:{port}{prefix.rstrip('/')}/readiness"
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
            return None if response.status == 200 else f"{url}: {response.status}"
    except urllib.error.HTTPError as error:
        return f"{url}: {error.code} {error.read().decode(errors='replace')}"
    except OSError as error:
        return f"{url}: {error}"


def probe(args: Sequence[str], env: Mapping[str, str]) -> str | None:
    """Why the proxy started with ``args`` does not serve, or None when it does."""
    # ``--worker`` runs taskiq's worker command on connector_proxy.worker in its place.
    if "--worker" in args or any(arg.startswith("connector_proxy.worker:") for arg in args):
        return None
    if "--grpc-only" in args:
        return _grpc_health(env.get("CONNECTOR_PROXY_GRPC_PORT") or "50051")
    return _readiness(env.get("CONNECTOR_PROXY_PORT") or "7004", env.get("CONNECTOR_PROXY_PATH_PREFIX", ""))


def main() -> int:
    problem = probe(_entry_point_args(), os.environ)
    if problem is not None:
        sys.stderr.write(f"not serving: {problem}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
