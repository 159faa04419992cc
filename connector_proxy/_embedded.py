"""Process entry points: the embedded proxy (REST + gRPC in one process) and the gRPC server alone."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
from collections.abc import AsyncIterator, Sequence

import uvicorn
from starlette.applications import Starlette

from jobs import job_backend, jobs_service
from rest_shim import Catalogue, create_app
from server._registry import Connector, discover
from server.app import create_server
from server.invocation import LocalInvoker
from server.settings import Settings

__all__ = ["build_embedded_app", "configure_logging", "run_embedded", "run_grpc"]

logger = logging.getLogger(__name__)


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


async def close_connectors(connectors: Sequence[Connector]) -> None:
    """Calls each servicer's optional ``aclose()`` (pooled clients, sessions)."""
    for connector in connectors:
        aclose = getattr(connector.servicer, "aclose", None)
        if aclose is not None:
            result = aclose()
            if inspect.isawaitable(result):
                await result


def build_embedded_app(settings: Settings, connectors: Sequence[Connector]) -> Starlette:
    """The REST shim calling ``connectors`` in-process, with the gRPC server started in its lifespan
    and the job runner (long-running commands) after it; JobsService is served next to health."""
    jobs = job_backend(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        server, _ = await create_server(
            connectors,
            f"{settings.host}:{settings.grpc_port}",
            max_message_bytes=2 * settings.max_body_bytes,
            services=[jobs_service(jobs)],
        )
        try:
            yield
        finally:
            await server.stop(settings.shutdown_grace)
            await close_connectors(connectors)

    return create_app(
        Catalogue(c.service for c in connectors),
        LocalInvoker(connectors),
        api_key=settings.api_key,
        command_timeout=settings.command_timeout,
        max_body_bytes=settings.max_body_bytes,
        path_prefix=settings.path_prefix,
        lifespan=lifespan,
        jobs=jobs,
    )


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def run_uvicorn(app: Starlette, settings: Settings) -> None:
    """Serves ``app`` until SIGTERM or SIGINT, then shuts down gracefully and exits 0.

    uvicorn re-raises the signal that stopped it once its shutdown is complete; under the
    default disposition the process would then die "killed by SIGTERM" (status 143) after a
    clean shutdown. The handler installed here, which uvicorn restores before re-raising,
    exits 0 instead, as the gRPC-only server does.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.shutdown_grace),
    )
    uvicorn.Server(config).run()


def run_embedded(settings: Settings) -> None:
    """REST on ``host:port`` and gRPC on ``host:grpc_port``, connectors called in-process by REST."""
    configure_logging(settings.log_level)
    connectors = discover(settings.connector_packages)
    logger.info("hosting %s", ", ".join(c.name for c in connectors))
    run_uvicorn(build_embedded_app(settings, connectors), settings)


async def _serve_grpc(settings: Settings) -> None:
    connectors = discover(settings.connector_packages)
    server, port = await create_server(
        connectors, f"{settings.host}:{settings.grpc_port}", max_message_bytes=2 * settings.max_body_bytes
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    logger.info("gRPC server ready on %s:%d", settings.host, port)
    await stop.wait()
    logger.info("shutting down; in-flight calls get %.0f s", settings.shutdown_grace)
    await server.stop(settings.shutdown_grace)
    await close_connectors(connectors)


def run_grpc(settings: Settings) -> None:
    """The gRPC server alone, until SIGTERM or SIGINT (then in-flight calls may finish)."""
    configure_logging(settings.log_level)
    import uvloop

    uvloop.run(_serve_grpc(settings))
