"""The processes: the proxy (REST shim and, unless shim-only, the gRPC server) and the gRPC server
alone; both host the local connectors and front the gRPC servers of ``CONNECTOR_PROXY_GRPC_TARGETS``."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
from collections.abc import AsyncIterator, Sequence

import grpc
import uvicorn
from google.protobuf import descriptor
from starlette.applications import Starlette

from jobs import job_backend, jobs_service
from rest_shim import Catalogue, create_app, replace_catalogue
from server._registry import Connector, discover
from server.app import ExtraService, create_server
from server.health import Health
from server.security import server_credentials
from server.settings import Settings
from server.upstreams import Federation, Upstream

__all__ = [
    "build_proxy_app",
    "close_connectors",
    "configure_logging",
    "federation_for",
    "run_embedded",
    "run_grpc",
    "run_shim",
]

logger = logging.getLogger(__name__)

# Seconds start-up waits for each upstream's first answer; one that is down is retried later.
_FIRST_DISCOVERY_WAIT = 5.0


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


def federation_for(settings: Settings, connectors: Sequence[Connector]) -> Federation:
    """The local ``connectors`` and the upstreams of ``CONNECTOR_PROXY_GRPC_TARGETS``."""
    upstreams = [
        Upstream(
            config,
            max_message_bytes=2 * settings.max_body_bytes,
            keepalive=settings.upstream_keepalive,
            discovery_interval=settings.discovery_interval,
        )
        for config in settings.upstreams
    ]
    return Federation(connectors, upstreams)


async def _serve_grpc(
    settings: Settings,
    connectors: Sequence[Connector],
    federation: Federation,
    services: Sequence[ExtraService] = (),
    health: Health | None = None,
) -> tuple[grpc.aio.Server, int]:
    credentials = None
    if settings.grpc_tls_cert_file is not None and settings.grpc_tls_key_file is not None:
        credentials = server_credentials(
            settings.grpc_tls_cert_file, settings.grpc_tls_key_file, settings.grpc_tls_client_ca_file
        )
    return await create_server(
        connectors,
        f"{settings.host}:{settings.grpc_port}",
        max_message_bytes=2 * settings.max_body_bytes,
        federation=federation if federation.upstreams else None,
        api_key=settings.api_key,
        credentials=credentials,
        services=services,
        health=health,
    )


def build_proxy_app(
    settings: Settings, connectors: Sequence[Connector], *, serve_grpc: bool = True
) -> Starlette:
    """The REST shim in front of ``connectors`` (called in-process) and the upstreams; with
    ``serve_grpc``, the gRPC server starts in its lifespan too (serving JobsService next to health).
    The job runner (long-running commands) starts after them."""
    federation = federation_for(settings, connectors)
    jobs = job_backend(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await federation.start(wait=_FIRST_DISCOVERY_WAIT)
        except ValueError as exc:
            logger.error("cannot start: %s", exc)
            await federation.close(0)
            raise
        server: grpc.aio.Server | None = None
        health = Health()
        if serve_grpc:
            server, _ = await _serve_grpc(
                settings, connectors, federation, services=[jobs_service(jobs)], health=health
            )
        try:
            yield
        finally:
            if server is not None:
                await health.drain()
                await server.stop(settings.shutdown_grace)
            await federation.close(settings.shutdown_grace)
            await close_connectors(connectors)

    app = create_app(
        Catalogue(federation.services),
        federation,
        api_key=settings.api_key,
        command_timeout=settings.command_timeout,
        max_body_bytes=settings.max_body_bytes,
        path_prefix=settings.path_prefix,
        lifespan=lifespan,
        jobs=jobs,
        upstreams=federation.describe,
    )

    def serve(services: Sequence[descriptor.ServiceDescriptor]) -> None:
        try:
            catalogue = Catalogue(services)
        except ValueError as exc:
            logger.error("the changed commands cannot be served (%s); serving the previous ones", exc)
            return
        replace_catalogue(app, catalogue)
        logger.info("serving %d commands", len(catalogue))

    federation.subscribe(serve)
    return app


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
    """REST on ``host:port`` and gRPC on ``host:grpc_port``, local connectors called in-process
    by REST, the upstreams' commands through their channels."""
    configure_logging(settings.log_level)
    connectors = discover(settings.connector_packages)
    logger.info("hosting %s", ", ".join(c.name for c in connectors))
    run_uvicorn(build_proxy_app(settings, connectors), settings)


def run_shim(settings: Settings) -> None:
    """The REST shim alone, in front of ``CONNECTOR_PROXY_GRPC_TARGETS``."""
    configure_logging(settings.log_level)
    if not settings.upstreams:
        msg = "set CONNECTOR_PROXY_GRPC_TARGETS to the gRPC server(s) to front, e.g. 127.0.0.1:50051"
        raise SystemExit(msg)
    run_uvicorn(build_proxy_app(settings, [], serve_grpc=False), settings)


async def _grpc_only(settings: Settings) -> None:
    connectors = discover(settings.connector_packages)
    federation = federation_for(settings, connectors)
    await federation.start(wait=_FIRST_DISCOVERY_WAIT)
    health = Health()
    server, port = await _serve_grpc(settings, connectors, federation, health=health)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    logger.info("gRPC server ready on %s:%d", settings.host, port)
    await stop.wait()
    logger.info("shutting down; in-flight calls get %.0f s", settings.shutdown_grace)
    await health.drain()
    await server.stop(settings.shutdown_grace)
    await federation.close(settings.shutdown_grace)
    await close_connectors(connectors)


def run_grpc(settings: Settings) -> None:
    """The gRPC server alone, until SIGTERM or SIGINT (then in-flight calls may finish)."""
    configure_logging(settings.log_level)
    import uvloop

    try:
        uvloop.run(_grpc_only(settings))
    except ValueError as exc:  # two places offer one connector
        msg = f"cannot start: {exc}"
        raise SystemExit(msg) from None
