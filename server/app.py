"""The grpc.aio server that hosts the connectors, with reflection and health."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from server._registry import Command, Connector
from server.invocation import ServerContext, execute_within

__all__ = ["LOG_METADATA_KEY", "ExtraService", "create_server", "grpc_options"]

logger = logging.getLogger(__name__)

LOG_METADATA_KEY = "spiff-log-bin"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
DEADLINE_MARGIN = 0.05  # seconds: room for the answer to reach the caller before its deadline


def grpc_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Channel and server options shared by both ends: message sizes that fit large task data.

    A command's log lines and a failure's details (with its partial result, e.g. an upstream
    error page) travel in trailing metadata, which gRPC otherwise caps at 8-16 KiB: past that
    the call would fail with RESOURCE_EXHAUSTED instead of delivering its answer.
    """
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_metadata_size", max_message_bytes),
        ("grpc.absolute_max_metadata_size", max_message_bytes),
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


def _method_handler(command: Command) -> grpc.RpcMethodHandler[Any, Any]:
    async def handle(request: message.Message, context: grpc.aio.ServicerContext[object, object]) -> object:
        # The server ends an overrunning command itself, just before the caller's deadline,
        # so the caller gets the same DeadlineExceeded answer, logs included, as in-process.
        remaining = context.time_remaining()
        timeout = None if remaining is None else round(remaining, 1)
        reply = await execute_within(
            command, request, ServerContext(context), timeout, margin=DEADLINE_MARGIN
        )
        logs = tuple((LOG_METADATA_KEY, line.encode()) for line in reply.logs)
        if reply.failure is None:
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
) -> tuple[grpc.aio.Server, int]:
    """Builds and starts a server hosting ``connectors`` (and ``services``, which are not
    connectors) on ``address`` (``host:0`` picks a port).

    Returns:
        The started server and the port it is bound to.
    """
    options = [("grpc.so_reuseport", 0), *grpc_options(max_message_bytes), *extra_options]
    server = grpc.aio.server(options=options)
    for connector in connectors:
        handlers = {command.method.name: _method_handler(command) for command in connector.commands}
        server.add_registered_method_handlers(connector.service.full_name, handlers)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(connector.service.full_name, handlers),)
        )

    for service in services:
        service.add_to_server(server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service_names = [c.service.full_name for c in connectors] + [s.name for s in services]
    reflection.enable_server_reflection(
        [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc's own "Failed to bind" error
        await server.stop(None)
        msg = f"could not bind the gRPC server to {address}"
        raise OSError(msg) from exc
    await server.start()
    for name in ["", *service_names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    logger.info("gRPC server listening on port %d with %d connectors", port, len(connectors))
    return server, port
