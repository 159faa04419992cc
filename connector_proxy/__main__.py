"""``spiff-connector-proxy`` (or ``python -m connector_proxy``) runs the embedded proxy: the REST
shim and the gRPC server in one process, local connectors called in-process and the gRPC servers
of ``CONNECTOR_PROXY_GRPC_TARGETS`` fronted. ``--grpc-only`` runs the gRPC server alone;
``--shim-only`` the REST shim alone, in front of ``CONNECTOR_PROXY_GRPC_TARGETS``; ``--worker``
job worker processes for the scale-out mode (taskiq's worker command, given any further options,
e.g. ``--workers 4``)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from connector_proxy._processes import run_embedded, run_grpc, run_shim
from server.settings import Settings


def main() -> None:
    """The ``spiff-connector-proxy`` console script and ``python -m connector_proxy``."""
    parser = argparse.ArgumentParser(prog="spiff-connector-proxy", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--grpc-only", action="store_true", help="serve gRPC only, without the REST shim")
    mode.add_argument(
        "--shim-only", action="store_true", help="serve REST only, in front of CONNECTOR_PROXY_GRPC_TARGETS"
    )
    mode.add_argument("--worker", action="store_true", help="run job worker processes (broker mode)")
    args, rest = parser.parse_known_args()
    settings = Settings.from_env()
    if args.worker:
        if settings.jobs_broker_url is None:
            parser.exit(2, "set CONNECTOR_PROXY_JOBS_BROKER_URL (e.g. amqp://guest:guest@127.0.0.1:5672/)\n")
        if settings.metrics_port is not None:
            # The worker processes add to one set of metrics through prometheus_client's
            # multiprocess mode, which must be chosen before prometheus_client is imported: a new
            # interpreter, whose forked workers inherit it (and the directory, new each start).
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="connector-proxy-metrics-")
        # taskiq's worker command, logging as the proxy does (connector_proxy._worker_command).
        worker = ["connector_proxy.worker:broker", "--no-configure-logging", *rest]
        command = [sys.executable, "-m", "connector_proxy._worker_command", *worker]
        os.execv(sys.executable, command)  # noqa: S606 - this interpreter, taskiq's own command line
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    elif args.grpc_only:
        run_grpc(settings)
    elif args.shim_only:
        run_shim(settings)
    else:
        run_embedded(settings)


if __name__ == "__main__":
    main()
