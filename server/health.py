"""``grpc.health.v1`` for the gRPC port, with a drain: at shutdown every status turns NOT_SERVING
and the Watch streams end, so the server's grace period waits only for real calls.

(grpc's own servicer keeps Watch streams open until the server's grace runs out: a proxy watching
this server would hold every deploy for the whole grace.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["Health"]

_Status = int  # a HealthCheckResponse.ServingStatus value


class Health(health_pb2_grpc.HealthServicer):  # type: ignore[misc]  # grpc_health is untyped
    """Check and Watch over a map of service name to status (``""`` is the whole server)."""

    def __init__(self) -> None:
        self._statuses: dict[str, _Status] = {}
        self._changed = asyncio.Condition()
        self._draining = False

    async def set(self, service: str, status: _Status) -> None:
        """Sets a service's status (ignored once draining: it stays NOT_SERVING)."""
        if self._draining:
            return
        async with self._changed:
            self._statuses[service] = status
            self._changed.notify_all()

    async def drain(self) -> None:
        """Every status NOT_SERVING for good; each Watch sends it, then ends."""
        async with self._changed:
            self._draining = True
            self._statuses = dict.fromkeys(self._statuses, health_pb2.HealthCheckResponse.NOT_SERVING)
            self._changed.notify_all()

    async def Check(  # noqa: N802 - the generated servicer's name
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        status = self._statuses.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(  # noqa: N802 - the generated servicer's name
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        sent: _Status | None = None
        async with self._changed:
            while True:
                status = self._statuses.get(request.service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
                if status != sent:
                    await context.write(health_pb2.HealthCheckResponse(status=status))
                    sent = status
                if self._draining:
                    return
                await self._changed.wait()
