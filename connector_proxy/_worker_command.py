"""taskiq's worker command with the proxy's logging: ``python -m connector_proxy --worker`` runs
``python -m connector_proxy._worker_command connector_proxy.worker:broker --no-configure-logging ...``,
so the process that manages the worker processes writes its lines in ``CONNECTOR_PROXY_LOG_FORMAT``
too (each worker process sets the same up again in :mod:`connector_proxy.worker`)."""

from __future__ import annotations

import sys

from connector_proxy._logging import configure_logging
from server.settings import Settings


def main() -> None:
    configure_logging(Settings.from_env())
    from taskiq.cli.worker.cmd import WorkerCMD

    sys.exit(WorkerCMD().exec(sys.argv[1:]) or 0)


if __name__ == "__main__":
    main()
