"""Job worker processes for the scale-out mode, run by taskiq's worker command::

    python -m connector_proxy --worker --workers 4

(``make worker``; the same as ``taskiq worker connector_proxy.worker:broker --workers 4`` once the
settings are checked.) Each process takes jobs from ``CONNECTOR_PROXY_JOBS_BROKER_URL``, runs them
with the connectors of this checkout and those of the gRPC servers in
``CONNECTOR_PROXY_GRPC_TARGETS``, and delivers their callbacks. ``CONNECTOR_PROXY_JOB_WORKERS``
jobs run at once in each process. The settings are the proxy's; see the README's "Scale-out workers".
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from google.protobuf import descriptor
from taskiq import TaskiqEvents, TaskiqState

from connector_proxy._logging import configure_logging
from connector_proxy._processes import admission_for, close_connectors, federation_for
from connector_proxy._tracing import start_tracing, traced
from jobs import broker_worker, taskiq_broker
from rest_shim import Catalogue
from server._registry import discover
from server.settings import Settings

__all__ = ["broker"]

logger = logging.getLogger(__name__)

settings = Settings.from_env()
if settings.jobs_broker_url is None:  # ``python -m connector_proxy --worker`` says so before starting taskiq
    msg = "set CONNECTOR_PROXY_JOBS_BROKER_URL to run job workers"
    raise RuntimeError(msg)
# Replaces taskiq's own logging set-up in each worker process: the proxy's format, request ids.
configure_logging(settings)

broker = taskiq_broker(settings.jobs_broker_url, settings.jobs_namespace, prefetch=settings.job_workers)
worker = broker_worker(settings)
worker.register(broker)

_hosted: dict[str, Any] = {}


def _use(services: Sequence[descriptor.ServiceDescriptor]) -> None:
    try:
        worker.use_catalogue(Catalogue(services))
    except ValueError as exc:
        logger.error("the changed commands cannot be served (%s); keeping the previous ones", exc)


def _serve_metrics(port: int) -> None:
    """``GET /metrics`` of every worker process on ``port``, served by the first process to bind
    it (the others find it taken); needs ``PROMETHEUS_MULTIPROC_DIR`` (set by ``--worker``)."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        logger.warning(
            "CONNECTOR_PROXY_METRICS_PORT needs python -m connector_proxy --worker; no metrics served"
        )
        return
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    try:
        start_http_server(port, addr=settings.host, registry=registry)
    except OSError:
        return  # another worker process serves them
    logger.info("worker metrics on %s:%d/metrics", settings.host, port)


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def _start(state: TaskiqState) -> None:
    start_tracing()  # first: the channels and the callback session made below are instrumented
    if settings.metrics_port is not None:
        _serve_metrics(settings.metrics_port)
    connectors = discover(settings.connector_packages)
    admission_for(settings, connectors)  # each connector's pool, as in the proxy
    federation = federation_for(settings, connectors)
    federation.subscribe(_use)
    await federation.start()
    _hosted["connectors"], _hosted["federation"] = connectors, federation
    await worker.start(Catalogue(federation.services), traced(federation))


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def _stop(state: TaskiqState) -> None:
    await worker.close()
    federation = _hosted.pop("federation", None)
    if federation is not None:
        await federation.close(settings.shutdown_grace)
    connectors = _hosted.pop("connectors", None)
    if connectors is not None:
        await close_connectors(connectors)
    await worker.store.redis.aclose()
