"""The gRPC side's Prometheus metrics: calls answered on the gRPC port by method and code (an
interceptor), the upstream gRPC servers' states and calls by upstream and code, and how full the
process's limits are (calls and body bytes held, each connector's busy threads), read at scrape
time so that the calls themselves pay nothing for them.

Label values are bounded: a method is one this server serves (``unknown`` otherwise), an
upstream is a configured target's name, a code is a gRPC status code's name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from server import bulkheads
from server.admission import Admission

__all__ = [
    "GRPC_SERVER_CALLS",
    "UPSTREAM_CALLS",
    "UPSTREAM_STATE",
    "MetricsInterceptor",
    "exposition",
    "upstream_call",
    "upstream_state",
    "watch_admission",
]

GRPC_SERVER_CALLS = Counter(
    "spiff_connector_proxy_grpc_server_handled",
    "Unary calls answered on the gRPC port, by method and status code.",
    ["method", "code"],
)
UPSTREAM_CALLS = Counter(
    "spiff_connector_proxy_upstream_calls",
    "Calls of commands on the gRPC servers fronted (CONNECTOR_PROXY_GRPC_TARGETS), by upstream and "
    "status code; UNAVAILABLE includes calls answered at once because the upstream was down.",
    ["upstream", "code"],
)


UPSTREAM_STATE = Gauge(
    "spiff_connector_proxy_upstream_state",
    "Each gRPC server fronted (CONNECTOR_PROXY_GRPC_TARGETS): 1 for its current state, 0 for the others.",
    ["upstream", "state"],
)
_UPSTREAM_STATES = ("connecting", "ready", "unavailable")


class _Limits(Collector):
    """How full the limits are, read when scraped."""

    def __init__(self) -> None:
        self.admission: Admission | None = None

    def collect(self) -> Iterator[Metric]:
        busy = GaugeMetricFamily(
            "spiff_connector_proxy_connector_threads_busy",
            "Threads of each connector's own pool running work now (work whose call ran out of time "
            "included); at the pool's size, new calls are answered 503 ConnectorBusy.",
            labels=["connector"],
        )
        size = GaugeMetricFamily(
            "spiff_connector_proxy_connector_threads",
            "The size of each connector's own pool (pools are made on first use).",
            labels=["connector"],
        )
        for bulkhead in bulkheads.shared().all():
            busy.add_metric([bulkhead.name], bulkhead.busy)
            size.add_metric([bulkhead.name], bulkhead.size)
        yield busy
        yield size
        admission = self.admission
        if admission is not None:
            yield GaugeMetricFamily(
                "spiff_connector_proxy_calls_in_flight",
                "Calls this process holds now (REST and gRPC); at CONNECTOR_PROXY_MAX_IN_FLIGHT, new "
                "ones are answered 503 ProxyBusy.",
                value=admission.calls,
            )
            yield GaugeMetricFamily(
                "spiff_connector_proxy_body_bytes_in_flight",
                "Bytes of request bodies this process holds now; new calls that would take it past "
                "CONNECTOR_PROXY_MAX_BODY_BYTES_IN_FLIGHT are answered 503 ProxyBusy.",
                value=admission.bytes,
            )


_limits = _Limits()
REGISTRY.register(_limits)


def watch_admission(admission: Admission) -> None:
    """Reports ``admission``'s calls and bytes in flight from now on."""
    _limits.admission = admission


def exposition(accept: str | None) -> tuple[bytes, str]:
    """Every metric of this process (prometheus_client's default registry, where every layer's
    metrics are) and its content type, in the format the ``Accept`` header asks for: OpenMetrics
    or Prometheus' text format (0.0.4, which every Prometheus reads, unless a newer one is asked)."""
    encode, content_type = choose_encoder(accept or "")
    return encode(REGISTRY), content_type


def upstream_call(upstream: str, code: grpc.StatusCode) -> None:
    UPSTREAM_CALLS.labels(upstream, code.name).inc()


def upstream_state(upstream: str, state: str) -> None:
    for each in _UPSTREAM_STATES:
        UPSTREAM_STATE.labels(upstream, each).set(1 if each == state else 0)


def _code_name(context: grpc.aio.ServicerContext[Any, Any], default: str) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    return default


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts each unary call by method and the status code it ended with (streams, such as the
    health Watch and reflection, are not counted)."""

    def __init__(self) -> None:
        # Per method: the handler last seen and its counting wrapper (made again if it changes).
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            if handler is None:
                GRPC_SERVER_CALLS.labels("unknown", grpc.StatusCode.UNIMPLEMENTED.name).inc()
            return handler
        method = handler_call_details.method
        seen = self._wrapped.get(method)
        if seen is not None and seen[0] is handler:
            return seen[1]
        wrapped = _counted(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


def _counted(method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    # grpc.aio's handlers are coroutine functions of (request, aio context); the stubs type the
    # sync ones.
    behavior: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]] = handler.unary_unary  # type: ignore[assignment]
    ok, cancelled = GRPC_SERVER_CALLS.labels(method, "OK"), GRPC_SERVER_CALLS.labels(method, "CANCELLED")

    async def counted(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            response = await behavior(request, context)
        except asyncio.CancelledError:
            cancelled.inc()
            raise
        except BaseException:
            GRPC_SERVER_CALLS.labels(method, _code_name(context, "UNKNOWN")).inc()
            raise
        code = _code_name(context, "OK")
        (ok if code == "OK" else GRPC_SERVER_CALLS.labels(method, code)).inc()
        return response

    return grpc.unary_unary_rpc_method_handler(
        counted,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
