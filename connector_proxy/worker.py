"""Job worker processes for the scale-out mode, run by taskiq's worker command::

    python -m connector_proxy --worker --workers 4

(``make worker``; the same as ``taskiq worker connector_proxy.worker:broker --workers 4`` once the settings
are checked.) Each process takes jobs from ``CONNECTOR_PROXY_JOBS_BROKER_URL``, runs them
with the connectors of this checkout (or, with ``CONNECTOR_PROXY_GRPC_TARGETS``, on those gRPC
servers), and delivers their callbacks. ``CONNECTOR_PROXY_JOB_WORKERS`` jobs run at once in each
process. The settings are the proxy's; see the README's "Scale-out workers".
"""

from __future__ import annotations

import logging
from typing import Any

from taskiq import TaskiqEvents, TaskiqState

from connector_proxy._embedded import close_connectors
from connector_proxy._shim import Remote, connect_remote
from jobs import broker_worker, taskiq_broker
from rest_shim._catalog import Catalogue
from server._registry import Connector, discover
from server.invocation import LocalInvoker
from server.settings import Settings

__all__ = ["broker"]

logger = logging.getLogger(__name__)

settings = Settings.from_env()
if settings.jobs_broker_url is None:  # ``python -m connector_proxy --worker`` says so before starting taskiq
    msg = "set CONNECTOR_PROXY_JOBS_BROKER_URL to run job workers"
    raise RuntimeError(msg)

broker = taskiq_broker(settings.jobs_broker_url, settings.jobs_namespace, prefetch=settings.job_workers)
worker = broker_worker(settings)
worker.register(broker)

_hosted: dict[str, Any] = {}


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def _start(state: TaskiqState) -> None:
    if settings.grpc_targets:
        remote = await connect_remote(settings)
        await remote.start()
        _hosted["remote"] = remote
        await worker.start(remote.catalogue, remote.router)
        return
    connectors = discover(settings.connector_packages)
    _hosted["connectors"] = connectors
    await worker.start(Catalogue(c.service for c in connectors), LocalInvoker(connectors))


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def _stop(state: TaskiqState) -> None:
    await worker.close()
    remote: Remote | None = _hosted.pop("remote", None)
    if remote is not None:
        await remote.close(settings.shutdown_grace)
    connectors: list[Connector] | None = _hosted.pop("connectors", None)
    if connectors is not None:
        await close_connectors(connectors)
    await worker.store.redis.aclose()
