"""The REST shim alone, in front of one or more gRPC servers (``CONNECTOR_PROXY_GRPC_TARGETS``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.applications import Starlette

from jobs import job_backend
from rest_shim._catalog import Catalogue
from rest_shim._remote import RemoteInvoker, Router, fetch_services
from rest_shim.app import create_app
from server.invocation import Invoker
from server.settings import Settings

__all__ = ["Remote", "build_remote_app", "connect_remote"]

logger = logging.getLogger(__name__)


@dataclass
class Remote:
    """The commands of one or more gRPC servers, found by reflection, and a router to them."""

    catalogue: Catalogue
    router: Router
    invokers: list[RemoteInvoker]

    async def start(self) -> None:
        for invoker in self.invokers:
            await invoker.start()

    async def close(self, grace: float) -> None:
        for invoker in self.invokers:
            await invoker.close(grace)


async def connect_remote(settings: Settings) -> Remote:
    """Reads each of ``CONNECTOR_PROXY_GRPC_TARGETS``' services by reflection and routes every
    command to its server."""
    if not settings.grpc_targets:
        msg = "set CONNECTOR_PROXY_GRPC_TARGETS to the gRPC server(s) to front, e.g. 127.0.0.1:50051"
        raise ValueError(msg)
    invokers: list[RemoteInvoker] = []
    services = []
    routes: dict[str, Invoker] = {}
    for target in settings.grpc_targets:
        found = await fetch_services(target)
        catalogue = Catalogue(found)
        invoker = RemoteInvoker(
            target, catalogue.commands.values(), max_message_bytes=2 * settings.max_body_bytes
        )
        invokers.append(invoker)
        services.extend(found)
        routes.update(dict.fromkeys((spec.full_method for spec in catalogue.commands.values()), invoker))
        logger.info("%s offers %d commands", target, len(catalogue))
    return Remote(Catalogue(services), Router(routes), invokers)


async def build_remote_app(settings: Settings) -> Starlette:
    """The REST shim in front of ``CONNECTOR_PROXY_GRPC_TARGETS``."""
    remote = await connect_remote(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await remote.start()
        try:
            yield
        finally:
            await remote.close(settings.shutdown_grace)

    return create_app(
        remote.catalogue,
        remote.router,
        api_key=settings.api_key,
        command_timeout=settings.command_timeout,
        max_body_bytes=settings.max_body_bytes,
        path_prefix=settings.path_prefix,
        lifespan=lifespan,
        # Jobs run here, through the same router (embedded), or on broker workers.
        jobs=job_backend(settings),
    )


def run_shim(settings: Settings) -> None:
    from connector_proxy._embedded import configure_logging, run_uvicorn

    configure_logging(settings.log_level)
    app = asyncio.run(build_remote_app(settings))
    run_uvicorn(app, settings)
