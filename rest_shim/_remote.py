"""Commands hosted by another gRPC server: descriptors by reflection, calls over one channel."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor, descriptor_pool, message
from google.rpc import status_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from rest_shim._catalog import CommandSpec
from server.app import LOG_METADATA_KEY, STATUS_DETAILS_KEY, grpc_options
from server.errors import Failure
from server.invocation import Invoker, Reply, timeout_failure

__all__ = ["RemoteInvoker", "Router", "fetch_services"]

# Services that are not connectors: gRPC's own, and the proxy's (spiff.proxy.v1.JobsService).
_INFRASTRUCTURE = ("grpc.reflection.", "grpc.health.", "spiff.proxy.")


def _fetch_services_blocking(target: str) -> list[descriptor.ServiceDescriptor]:
    with grpc.insecure_channel(target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        names = [n for n in database.get_services() if not n.startswith(_INFRASTRUCTURE)]
        services = [pool.FindServiceByName(n) for n in sorted(names)]
        # Resolve every message now, while the channel is open.
        for service in services:
            for method in service.methods:
                _ = (method.input_type.fields, method.output_type.fields)
        return services


async def fetch_services(target: str) -> list[descriptor.ServiceDescriptor]:
    """The connector services a server at ``target`` offers, read by server reflection.

    The reflection client is synchronous, so it runs in a thread: on the event loop it
    would deadlock against a server living on that same loop.
    """
    return await asyncio.to_thread(_fetch_services_blocking, target)


class RemoteInvoker:
    """Calls commands over one long-lived grpc.aio channel, with one multicallable per method.

    The channel is opened by :meth:`start` inside the running event loop (grpc.aio objects
    belong to the loop that made them) and closed by :meth:`close`.
    """

    def __init__(
        self, target: str, specs: Iterable[CommandSpec], *, max_message_bytes: int = 64 * 1024 * 1024
    ) -> None:
        self.target = target
        self._specs = {spec.full_method: spec for spec in specs}
        self._max_message_bytes = max_message_bytes
        self._channel: grpc.aio.Channel | None = None
        self._calls: dict[str, tuple[grpc.aio.UnaryUnaryMultiCallable[Any, Any], type[message.Message]]] = {}

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.target, options=grpc_options(self._max_message_bytes))
        self._calls = {
            full_method: (
                self._channel.unary_unary(
                    full_method,
                    request_serializer=spec.request_class.SerializeToString,
                    response_deserializer=spec.response_class.FromString,
                ),
                spec.response_class,
            )
            for full_method, spec in self._specs.items()
        }

    async def close(self, grace: float | None = None) -> None:
        if self._channel is not None:
            await self._channel.close(grace)
            self._channel = None

    def __contains__(self, full_method: str) -> bool:
        return full_method in self._specs

    async def invoke(self, full_method: str, request: message.Message, timeout: float) -> Reply:
        multicallable, response_class = self._calls[full_method]
        call = multicallable(request, timeout=timeout)
        try:
            response = await call
        except grpc.aio.AioRpcError as exc:
            trailing = exc.trailing_metadata() or ()
            logs = _logs(trailing)
            status = next(
                (
                    status_pb2.Status.FromString(v)
                    for k, v in trailing
                    if k == STATUS_DETAILS_KEY and isinstance(v, bytes)
                ),
                None,
            )
            if status is None and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return Reply(None, timeout_failure(timeout), logs)
            failure = Failure.from_status(exc.code(), exc.details() or "", status, response_class, logs)
            return Reply(None, failure, logs)
        return Reply(response, None, _logs(await call.trailing_metadata() or ()))


def _logs(metadata: Iterable[tuple[str, str | bytes]]) -> tuple[str, ...]:
    return tuple(
        v.decode(errors="replace") if isinstance(v, bytes) else v
        for k, v in metadata
        if k == LOG_METADATA_KEY
    )


class Router:
    """An invoker that sends each call to the invoker hosting its method."""

    def __init__(self, routes: dict[str, Invoker]) -> None:
        self.routes = routes

    async def invoke(self, full_method: str, request: message.Message, timeout: float) -> Reply:
        return await self.routes[full_method].invoke(full_method, request, timeout)
