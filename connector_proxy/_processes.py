"""The processes: the proxy (REST shim and, unless shim-only, the gRPC server) and the gRPC server
alone; both host the local connectors and front the gRPC servers of ``CONNECTOR_PROXY_GRPC_TARGETS``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import signal
import time
from collections.abc import AsyncIterator, Sequence
from types import FrameType

import grpc
import uvicorn
from google.protobuf import descriptor
from starlette.applications import Starlette

from connector_proxy._logging import access_log_for, configure_logging
from connector_proxy._metrics_port import serving_metrics
from connector_proxy._tracing import start_tracing
from jobs import job_backend, jobs_service
from rest_shim import AuthFlow, Catalogue, create_app, metrics_exposition, replace_catalogue
from server import bulkheads
from server._registry import Connector, discover
from server.admission import Admission
from server.app import ExtraService, create_server
from server.health import Health
from server.metrics import exposition, watch_admission
from server.security import server_credentials
from server.settings import Settings
from server.upstreams import Federation, Upstream, env_name

__all__ = [
    "Drain",
    "admission_for",
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


async def close_connectors(connectors: Sequence[Connector]) -> None:
    """Calls each servicer's optional ``aclose()`` (pooled clients, sessions)."""
    for connector in connectors:
        aclose = getattr(connector.servicer, "aclose", None)
        if aclose is not None:
            result = aclose()
            if inspect.isawaitable(result):
                await result


class Drain:
    """How a process leaves: on SIGTERM it first drains for ``delay`` seconds (``/readiness``
    503, gRPC health NOT_SERVING, calls still answered, so load balancers and watching proxies
    stop sending new ones), then shuts down, giving in-flight calls the shutdown grace."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.draining = False
        self._health: list[Health] = []

    async def report_to(self, health: Health) -> None:
        """Turns ``health`` NOT_SERVING when draining begins (at once if it has)."""
        self._health.append(health)
        if self.draining:
            await health.drain()

    async def begin(self) -> None:
        if self.draining:
            return
        self.draining = True
        logger.info("draining: not ready for %g s, then shutting down", self.delay)
        for health in self._health:
            await health.drain()


def admission_for(settings: Settings, connectors: Sequence[Connector]) -> Admission:
    """The process's limits: the admission of calls, and each connector's pool (its bulkhead).

    A ``CONNECTOR_PROXY_CONNECTOR_THREADS_<NAME>`` that names no hosted connector is a mistake
    (a typo would silently keep the default), so it stops start-up.
    """
    by_env_name = {env_name(c.name): c.name for c in connectors}
    unknown = [name for name, _ in settings.connector_thread_sizes if name not in by_env_name]
    if unknown and connectors:
        names = ", ".join(f"CONNECTOR_PROXY_CONNECTOR_THREADS_{name}" for name in unknown)
        msg = f"{names}: no hosted connector has that name (hosted: {', '.join(sorted(by_env_name))})"
        raise ValueError(msg)
    sizes = {by_env_name[name]: size for name, size in settings.connector_thread_sizes if name in by_env_name}
    bulkheads.configure(settings.connector_threads, sizes)
    admission = Admission(settings.max_in_flight, settings.max_body_bytes_in_flight)
    if settings.metrics:
        watch_admission(admission)
    return admission


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
    admission: Admission | None = None,
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
        metrics=settings.metrics,
        access_log=settings.access_log,
        admission=admission,
    )


def build_proxy_app(
    settings: Settings,
    connectors: Sequence[Connector],
    *,
    serve_grpc: bool = True,
    drain: Drain | None = None,
) -> Starlette:
    """The REST shim in front of ``connectors`` (called in-process) and the upstreams; with
    ``serve_grpc``, the gRPC server starts in its lifespan too (serving JobsService next to health).
    The job runner (long-running commands) starts after them. ``/readiness`` fails while ``drain``
    is draining, until every upstream was discovered once, and when the job store is unavailable.
    With tracing on (``OTEL_*`` settings), requests and command calls get spans."""
    tracing = start_tracing()  # before any channel, server or session exists: they are instrumented
    federation = federation_for(settings, connectors)
    jobs = job_backend(settings)
    drain = drain if drain is not None else Drain(settings.drain_delay)
    admission = admission_for(settings, connectors)

    def readiness_problems() -> list[str]:
        problems = ["draining: the process is shutting down"] if drain.draining else []
        # Discovered once is enough: an upstream's later outage is answered 503 for its commands
        # alone, and every replica would share it, so no replica is better to send calls to.
        waiting = [upstream.name for upstream in federation.upstreams if upstream.last_discovery is None]
        if waiting:
            problems.append(f"upstream(s) not discovered yet: {', '.join(waiting)}")
        return problems

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
                settings,
                connectors,
                federation,
                services=[jobs_service(jobs)],
                health=health,
                admission=admission,
            )
            await drain.report_to(health)
        try:
            async with contextlib.AsyncExitStack() as stack:
                if settings.metrics_port is not None:
                    exposition = functools.partial(metrics_exposition, app)
                    await stack.enter_async_context(
                        serving_metrics(settings.host, settings.metrics_port, exposition)
                    )
                yield
        finally:
            if server is not None:
                await health.drain()
                await server.stop(settings.shutdown_grace)
            await federation.close(settings.shutdown_grace)
            await close_connectors(connectors)

    app = create_app(
        Catalogue(federation.services),
        federation if tracing is None else tracing.traced(federation),
        api_key=settings.api_key,
        command_timeout=settings.command_timeout,
        max_body_bytes=settings.max_body_bytes,
        path_prefix=settings.path_prefix,
        lifespan=lifespan,
        jobs=jobs,
        upstreams=federation.describe,
        readiness=readiness_problems,
        access_log=access_log_for(settings),
        metrics=settings.metrics,
        admission=admission,
        auth_flow=AuthFlow(settings.oauth_redirect_urls, settings.oauth_state_secret, settings.public_url),
    )
    if tracing is not None:
        tracing.instrument_app(app, settings.path_prefix)

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


class _DrainingServer(uvicorn.Server):
    """uvicorn's server, draining for ``drain.delay`` seconds after the first SIGTERM or SIGINT
    before its usual graceful shutdown; a second signal ends the drain at once."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self._drain = drain
        self._signal: int | None = None
        self._drain_until: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain.delay <= 0 or self._signal is not None:
            super().handle_exit(sig, frame)
            return
        self._signal = sig  # runs in a signal handler: the next tick begins the drain

    async def on_tick(self, counter: int) -> bool:
        if self._signal is not None and not self.should_exit:
            if self._drain_until is None:
                self._drain_until = time.monotonic() + self._drain.delay
                await self._drain.begin()
            if time.monotonic() >= self._drain_until:
                super().handle_exit(self._signal, None)
        return await super().on_tick(counter)


def run_uvicorn(app: Starlette, settings: Settings, drain: Drain | None = None) -> None:
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
        access_log=False,  # the shim writes its own (connector_proxy._logging)
        log_config=None,  # uvicorn's lines go through the root logger, in its format
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.shutdown_grace),
    )
    _DrainingServer(config, drain if drain is not None else Drain(settings.drain_delay)).run()


def run_embedded(settings: Settings) -> None:
    """REST on ``host:port`` and gRPC on ``host:grpc_port``, local connectors called in-process
    by REST, the upstreams' commands through their channels."""
    configure_logging(settings)
    connectors = discover(settings.connector_packages)
    logger.info("hosting %s", ", ".join(c.name for c in connectors))
    drain = Drain(settings.drain_delay)
    run_uvicorn(build_proxy_app(settings, connectors, drain=drain), settings, drain)


def run_shim(settings: Settings) -> None:
    """The REST shim alone, in front of ``CONNECTOR_PROXY_GRPC_TARGETS``."""
    configure_logging(settings)
    if not settings.upstreams:
        msg = "set CONNECTOR_PROXY_GRPC_TARGETS to the gRPC server(s) to front, e.g. 127.0.0.1:50051"
        raise SystemExit(msg)
    drain = Drain(settings.drain_delay)
    run_uvicorn(build_proxy_app(settings, [], serve_grpc=False, drain=drain), settings, drain)


async def _grpc_only(settings: Settings) -> None:
    start_tracing()
    connectors = discover(settings.connector_packages)
    federation = federation_for(settings, connectors)
    await federation.start(wait=_FIRST_DISCOVERY_WAIT)
    health = Health()
    server, port = await _serve_grpc(
        settings, connectors, federation, health=health, admission=admission_for(settings, connectors)
    )
    async with contextlib.AsyncExitStack() as stack:
        if settings.metrics_port is not None:
            await stack.enter_async_context(
                serving_metrics(settings.host, settings.metrics_port, _exposition)
            )
        await _serve_until_stopped(settings, server, port, health)
    await federation.close(settings.shutdown_grace)
    await close_connectors(connectors)


async def _exposition(accept: str | None) -> tuple[bytes, str]:
    return exposition(accept)


async def _serve_until_stopped(
    settings: Settings, server: grpc.aio.Server, port: int, health: Health
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    logger.info("gRPC server ready on %s:%d", settings.host, port)
    await stop.wait()
    await health.drain()
    if settings.drain_delay > 0:
        logger.info("draining: NOT_SERVING for %g s, then shutting down", settings.drain_delay)
        stop.clear()  # a second signal ends the drain at once
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.drain_delay)
    logger.info("shutting down; in-flight calls get %.0f s", settings.shutdown_grace)
    await server.stop(settings.shutdown_grace)


def run_grpc(settings: Settings) -> None:
    """The gRPC server alone, until SIGTERM or SIGINT (then in-flight calls may finish)."""
    configure_logging(settings)
    import uvloop

    try:
        uvloop.run(_grpc_only(settings))
    except ValueError as exc:  # two places offer one connector
        msg = f"cannot start: {exc}"
        raise SystemExit(msg) from None
