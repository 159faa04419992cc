"""The grpc.aio server that hosts the connectors, with reflection and health."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from server import correlation
from server._reflection import LiveReflection
from server._registry import Command, Connector
from server.admission import Admission
from server.errors import ProxyBusy
from server.forwarding import UpstreamForwarder
from server.health import Health
from server.invocation import Reply, ServerContext, execute_within
from server.metrics import MetricsInterceptor
from server.security import ApiKeyInterceptor
from server.upstreams import Federation
from server.wire import LOG_METADATA_KEY, STATUS_DETAILS_KEY, TOKEN_REFRESH_KEY, grpc_options

__all__ = ["ExtraService", "create_server"]

logger = logging.getLogger(__name__)

DEADLINE_MARGIN = 0.05  # seconds: room for the answer to reach the caller before its deadline
# Accept keepalive pings every 10 s even on idle connections (a proxy in front of this server
# keeps a health watch open and pings it); gRPC's default would close such a connection.
_PING_POLICY = [
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


@dataclass(frozen=True)
class ExtraService:
    """A service the server hosts besides the connectors (e.g. the proxy's JobsService).

    It is listed by reflection and health, but it is not a connector: the REST shim never sees it.
    """

    name: str  # the service's full name, e.g. spiff.proxy.v1.JobsService
    add_to_server: Callable[[grpc.aio.Server], None]


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, bytes], ...]


_access = logging.getLogger(correlation.ACCESS_LOGGER)


def _log_access(command: Command, reply: Reply, seconds: float) -> None:
    code = grpc.StatusCode.OK if reply.failure is None else reply.failure.code
    error_code = "" if reply.failure is None else reply.failure.error_code
    _access.info(
        "%s answered %s%s in %.1f ms",
        command.id,
        code.name,
        f" {error_code}" if error_code else "",
        seconds * 1000,
        extra={
            "command": command.id,
            "code": code.name,
            "error_code": error_code,
            "duration_ms": round(seconds * 1000, 1),
        },
    )


async def _admitted(
    admission: Admission | None,
    command: Command,
    request: message.Message,
    context: grpc.aio.ServicerContext[object, object],
    timeout: float | None,
) -> Reply:
    if admission is None:
        return await execute_within(command, request, ServerContext(context), timeout, margin=DEADLINE_MARGIN)
    try:
        ticket = admission.admit(request.ByteSize())
    except ProxyBusy as exc:
        return Reply(None, exc.to_failure())
    try:
        return await execute_within(command, request, ServerContext(context), timeout, margin=DEADLINE_MARGIN)
    finally:
        ticket.release()


def _method_handler(
    command: Command, access_log: bool, admission: Admission | None
) -> grpc.RpcMethodHandler[Any, Any]:
    async def handle(request: message.Message, context: grpc.aio.ServicerContext[object, object]) -> object:
        started = time.perf_counter()
        # The server ends an overrunning command itself, just before the caller's deadline,
        # so the caller gets the same DeadlineExceeded answer, logs included, as in-process.
        remaining = context.time_remaining()
        timeout = None if remaining is None else round(remaining, 1)
        given = next(
            (v for k, v in context.invocation_metadata() or () if k == correlation.REQUEST_ID_HEADER), None
        )
        with correlation.bound(correlation.accept_request_id(given if isinstance(given, str) else None)):
            reply = await _admitted(admission, command, request, context, timeout)
            if access_log:
                _log_access(command, reply, time.perf_counter() - started)
        logs = tuple((LOG_METADATA_KEY, line.encode()) for line in reply.logs)
        if reply.failure is None:
            if reply.refreshed is not None:
                logs = (*logs, (TOKEN_REFRESH_KEY, reply.refreshed.to_json()))
            if logs:
                context.set_trailing_metadata(logs)
            return reply.response
        failure = reply.failure
        details = ((STATUS_DETAILS_KEY, failure.to_status().SerializeToString()),)
        await context.abort_with_status(_Status(failure.code, failure.message, details + logs))
        raise AssertionError  # pragma: no cover - abort_with_status always raises

    return grpc.unary_unary_rpc_method_handler(
        handle,
        request_deserializer=command.request_class.FromString,
        response_serializer=command.response_class.SerializeToString,
    )


async def create_server(
    connectors: Sequence[Connector],
    address: str,
    *,
    max_message_bytes: int = 64 * 1024 * 1024,
    extra_options: Iterable[tuple[str, int]] = (),
    services: Sequence[ExtraService] = (),
    federation: Federation | None = None,
    api_key: str | None = None,
    credentials: grpc.ServerCredentials | None = None,
    health: Health | None = None,
    metrics: bool = True,
    access_log: bool = False,
    admission: Admission | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Builds and starts a server hosting ``connectors`` (and ``services``, which are not
    connectors) on ``address`` (``host:0`` picks a port).

    Args:
        federation: when given, the commands it routes to upstream servers are served here
            too (passed through), and reflection lists them, as they come and go.
        api_key: when set, every call but health needs it as ``spiff-connector-proxy-api-key``.
        credentials: TLS for the port (see :func:`server.security.server_credentials`).
        health: the health service to serve; pass one to :meth:`~server.health.Health.drain`
            it before stopping the server.
        metrics: count calls by method and code (:mod:`server.metrics`).
        access_log: log one INFO line per command answered (logger ``access``), with the
            caller's ``x-request-id`` (or a new one) as the request id.
        admission: the process's limits on calls in flight and bytes held (shared with the
            REST shim); a call beyond them is refused UNAVAILABLE ``ProxyBusy`` with a RetryInfo.

    Returns:
        The started server and the port it is bound to.
    """
    options = [("grpc.so_reuseport", 0), *_PING_POLICY, *grpc_options(max_message_bytes), *extra_options]
    # Counting first: refusals for want of the key are counted too.
    interceptors: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor()] if metrics else []
    if api_key is not None:
        interceptors.append(ApiKeyInterceptor(api_key))
    server = grpc.aio.server(options=options, interceptors=interceptors)
    for connector in connectors:
        handlers = {
            command.method.name: _method_handler(command, access_log, admission)
            for command in connector.commands
        }
        server.add_registered_method_handlers(connector.service.full_name, handlers)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(connector.service.full_name, handlers),)
        )

    for service in services:
        service.add_to_server(server)
    if federation is not None:
        server.add_generic_rpc_handlers((UpstreamForwarder(federation, admission),))

    health_servicer = health if health is not None else Health()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service_names = [c.service.full_name for c in connectors] + [s.name for s in services]
    fixed = [
        *service_names,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]

    def names() -> list[str]:
        if federation is None:
            return fixed
        local = set(fixed)
        return fixed + [s.full_name for s in federation.services if s.full_name not in local]

    def pools() -> list[descriptor_pool.DescriptorPool]:
        if federation is None:
            return []
        return list({id(s.file.pool): s.file.pool for s in federation.services}.values())

    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(LiveReflection(names, pools), server)
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # grpc's own "Failed to bind" error
        await server.stop(None)
        msg = f"could not bind the gRPC server to {address}"
        raise OSError(msg) from exc
    await server.start()
    for name in ["", *service_names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    logger.info(
        "gRPC server listening on port %d%s with %d connectors%s",
        port,
        " (TLS)" if credentials is not None else "",
        len(connectors),
        ", API key required" if api_key is not None else "",
    )
    return server, port
