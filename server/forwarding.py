"""The gRPC port serves the upstreams' commands too: calls are passed through, bytes unchanged.

A caller of ``jsonata/Evaluate`` on the proxy's gRPC port reaches the server that hosts it, with
its deadline, its metadata (except the proxy's own API key) plus the upstream's configured
metadata, and gets back exactly what that server answered: the response, or the status with its
details and log lines. An upstream that cannot be reached answers UNAVAILABLE,
``ConnectorUnavailable``, at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import grpc

from server.admission import Admission
from server.errors import Failure, ProxyBusy
from server.metrics import upstream_call
from server.upstreams import Federation, Upstream, UpstreamState
from server.wire import API_KEY_METADATA, STATUS_DETAILS_KEY

__all__ = ["UpstreamForwarder"]

_Handler = Callable[[bytes, "grpc.aio.ServicerContext[Any, Any]"], Awaitable[bytes]]

# Metadata that belongs to one hop: never passed on.
_HOP_BY_HOP = frozenset({API_KEY_METADATA, "user-agent", "content-type", "te"})
_HOP_BY_HOP_PREFIXES = (":", "grpc-")  # grpc-timeout, grpc-encoding... are each hop's own


def _passed_on(key: str) -> bool:
    return key not in _HOP_BY_HOP and not key.startswith(_HOP_BY_HOP_PREFIXES)


def _trailers(metadata: Any) -> tuple[tuple[str, str | bytes], ...]:
    return tuple((k, v) for k, v in metadata or () if k == STATUS_DETAILS_KEY or _passed_on(k))


async def _abort(failure: Failure, context: grpc.aio.ServicerContext[Any, Any]) -> NoReturn:
    """Ends the call with ``failure``, its details in the trailer as the server's own calls send them."""
    details = ((STATUS_DETAILS_KEY, failure.to_status().SerializeToString()),)
    await context.abort(failure.code, failure.message, details)
    raise AssertionError  # pragma: no cover - abort always raises


async def _unavailable(upstream: Upstream, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    failure = upstream.unavailable()
    upstream_call(upstream.name, failure.code)
    await _abort(failure, context)


class UpstreamForwarder(grpc.GenericRpcHandler):
    """A generic handler the server consults after its own methods: it knows every command the
    federation routes to an upstream, as the upstreams come and go."""

    def __init__(self, federation: Federation, admission: Admission | None = None) -> None:
        self._federation = federation
        self._admission = admission
        self._handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        if self._federation.upstream_for(method) is None:
            return None
        handler = self._handlers.get(method)
        if handler is None:
            handler = grpc.unary_unary_rpc_method_handler(self._forwarding(method))
            self._handlers[method] = handler
        return handler

    def _forwarding(self, method: str) -> _Handler:
        """The handler of ``method``: admitted like the server's own calls, then passed on."""
        admission = self._admission
        forward = self._forwarder(method)
        if admission is None:
            return forward

        async def admitted(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            try:
                ticket = admission.admit(len(request))
            except ProxyBusy as exc:
                await _abort(exc.to_failure(), context)
            try:
                return await forward(request, context)
            finally:
                ticket.release()

        return admitted

    def _forwarder(self, method: str) -> _Handler:
        federation = self._federation

        async def forward(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            upstream = federation.upstream_for(method)
            if upstream is None:
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is no longer served")
                raise AssertionError  # pragma: no cover - abort always raises
            if upstream.state is not UpstreamState.READY:
                await _unavailable(upstream, context)
            given = tuple((k, v) for k, v in context.invocation_metadata() or () if _passed_on(k))
            own = {k for k, _ in upstream.metadata}
            metadata = tuple((k, v) for k, v in given if k not in own) + upstream.metadata
            call = upstream.raw(method)(request, timeout=context.time_remaining(), metadata=metadata)
            try:
                response = await call
            except grpc.aio.AioRpcError as exc:
                if upstream.transport_failed(exc):
                    await _unavailable(upstream, context)
                upstream_call(upstream.name, exc.code())
                await context.abort(exc.code(), exc.details() or "", _trailers(exc.trailing_metadata()))
                raise AssertionError from exc  # pragma: no cover - abort always raises
            upstream_call(upstream.name, grpc.StatusCode.OK)
            trailers = _trailers(await call.trailing_metadata())
            if trailers:
                context.set_trailing_metadata(trailers)
            return response

        return forward
