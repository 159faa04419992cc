"""OpenTelemetry traces: off unless the standard ``OTEL_*`` settings ask for them and the ``otel``
extra is installed; then a span per request, per command call, per outbound HTTP and gRPC call, per
job run and per callback attempt, with the W3C trace context taken in and passed on.

The settings that turn tracing on (nothing else does; ``OTEL_SERVICE_NAME`` alone does not):

* ``OTEL_TRACES_EXPORTER`` set to anything but ``none`` (e.g. ``otlp``, ``console``), or
* ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` set while
  ``OTEL_TRACES_EXPORTER`` is not (the specification's default exporter is ``otlp``),

unless ``OTEL_SDK_DISABLED=true``. The SDK is then configured from the environment by its own
configurator (exporters, their endpoints and headers, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_PROPAGATORS``...). When tracing is
off, :func:`start_tracing` imports nothing beyond ``opentelemetry-api`` and wraps nothing: the
request path is exactly the untraced one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import traceback
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from google.protobuf import message
from opentelemetry import context as otel_context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from server import correlation
from server.invocation import Invoker, Reply
from server.schema import connector_name
from server.upstreams import Federation

if TYPE_CHECKING:
    import yarl
    from starlette.applications import Starlette
    from starlette.routing import BaseRoute

__all__ = ["TracedInvoker", "Tracing", "requested", "start_tracing", "traced"]

logger = logging.getLogger(__name__)

# Headers whose values are never recorded, even when OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*
# asks for them: the proxy's API key, spiff-arena's callback credential, the usual ones.
SECRET_HEADERS = (
    "spiff-connector-proxy-api-key",
    "spiffworkflow-api-key",
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
)
# Probes and scrapes: a span each would be most of the traces and tell nothing.
_UNTRACED_PATHS = ("/liveness", "/v1/liveness", "/readiness", "/metrics")
# gRPC services whose calls are the proxy's own housekeeping (health watches, schema discovery
# every interval, load balancers' checks), not calls anyone made.
_UNTRACED_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.")

_installed: Tracing | None = None
_registered = False


def requested(environ: Mapping[str, str]) -> str | None:
    """The setting that turns tracing on (for the log line), or None when the settings leave it off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":  # the specification's boolean
        return None
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if exporters:
        return None if exporters.lower() == "none" else f"OTEL_TRACES_EXPORTER={exporters}"
    for endpoint in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        if environ.get(endpoint, "").strip():
            return endpoint
    return None


def start_tracing(*, provider: trace.TracerProvider | None = None) -> Tracing | None:
    """Turns tracing on for this process if the settings ask for it (see the module's doc); returns
    what was installed, or None when tracing stays off. Called again, returns the same.

    Args:
        provider: use this tracer provider instead of configuring one from the environment (tests,
            with the SDK's in-memory exporter). Tracing is then on whatever the settings say.

    A WARNING, not a failure, when the settings ask for tracing and the extra is not installed; an
    ERROR, and tracing off, when the SDK refuses the settings (e.g. an unknown exporter).
    """
    global _installed
    if _installed is not None:
        return _installed
    if provider is None:
        reason = requested(os.environ)
        if reason is None:
            return None
        try:
            provider, exporters = _configured_from_environment()
        except ImportError as exc:
            logger.warning(
                "%s asks for traces, but the otel extra is not installed (%s); tracing is off. "
                "Install it with: pip install 'spiff-connector-proxy[otel]'",
                reason,
                exc.name or exc,
            )
            return None
        except Exception as exc:  # the SDK's configurator raises RuntimeError and ValueError alike
            logger.error("tracing is off: the OTEL_* settings cannot be used: %s", exc)
            return None
        logger.info(
            "tracing on (%s): service %s, exporters %s, propagators %s",
            reason,
            _service_name(provider),
            exporters,
            os.environ.get("OTEL_PROPAGATORS", "tracecontext,baggage"),
        )
    _warn_about_header_capture()
    _installed = Tracing(provider)
    return _installed


def traced(federation: Federation) -> Invoker:
    """The invoker to run commands through: ``federation`` itself while tracing is off, else
    ``federation`` with a span around each call (see :class:`TracedInvoker`)."""
    return federation if _installed is None else _installed.traced(federation)


def _configured_from_environment() -> tuple[trace.TracerProvider, str]:
    """Configures the SDK from the ``OTEL_*`` settings (its own configurator: exporters, resource,
    sampler); returns the global tracer provider it set and the exporters it was given.

    Raises:
        ImportError: the otel extra is not installed.
    """
    _import_instrumentations()  # all or nothing: a half-installed extra counts as missing
    from opentelemetry.distro import OpenTelemetryConfigurator

    listed = os.environ.get("OTEL_TRACES_EXPORTER", "").strip()
    names = [] if listed else [_default_exporter()]
    configurator = OpenTelemetryConfigurator()  # type: ignore[no-untyped-call]
    configurator.configure(trace_exporter_names=names)  # type: ignore[no-untyped-call]
    return trace.get_tracer_provider(), listed or names[0]


def _default_exporter() -> str:
    """The exporter an endpoint alone asks for: the specification's default, OTLP, over the protocol
    the settings name (gRPC unless told otherwise, as the SDK's configurator reads ``otlp``).

    Raises:
        ValueError: a protocol these exporters do not speak.
    """
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "").strip()
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
        or "grpc"
    )
    exporters = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
    if protocol not in exporters:
        msg = f"the OTLP protocol {protocol!r} is not one of {', '.join(exporters)}"
        raise ValueError(msg)
    return exporters[protocol]


def _service_name(provider: trace.TracerProvider) -> str:
    resource = getattr(provider, "resource", None)
    attributes = getattr(resource, "attributes", {})
    return str(attributes.get("service.name", "unknown_service"))


def _warn_about_header_capture() -> None:
    captured = sorted(
        name
        for name in os.environ
        if name.startswith("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_")
        and not name.endswith("_SANITIZE_FIELDS")
        and os.environ[name].strip()
    )
    if captured:
        logger.warning(
            "%s set: spans record those headers' values. Outbound requests carry credentials (the "
            "callback credential; the http connector's headers): list every such header in "
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS",
            ", ".join(captured),
        )


def _import_instrumentations() -> tuple[Any, Any, Any, Any]:
    """The instrumentation classes (imported only when tracing is on: they need the extra)."""
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer

    return (
        OpenTelemetryMiddleware,
        GrpcAioInstrumentorClient,
        GrpcAioInstrumentorServer,
        AioHttpClientInstrumentor,
    )


def _grpc_filter() -> Callable[[Any], bool]:
    """Which gRPC calls get spans: not health, not reflection, not the services named in
    ``OTEL_PYTHON_GRPC_EXCLUDED_SERVICES``. (The instrumentors would OR a filter given to them
    with that setting's, so the whole filter is built here.)"""
    from opentelemetry.instrumentation.grpc import filters

    named = [s.strip() for s in os.environ.get("OTEL_PYTHON_GRPC_EXCLUDED_SERVICES", "").split(",")]
    untraced = [filters.service_prefix(prefix) for prefix in _UNTRACED_SERVICES]
    untraced += [filters.service_name(service) for service in named if service]
    keep: Callable[[Any], bool] = filters.negate(filters.any_of(*untraced))
    return keep


def _url_without_secrets(url: yarl.URL) -> str:
    """An outbound URL as spans record it: no user, password, query or fragment (an http
    connector's URL may carry credentials in any of them)."""
    return str(url.with_user(None).with_query(None).with_fragment(None))


class Tracing:
    """What :func:`start_tracing` installed: the gRPC client and server instrumentation (every
    grpc.aio channel and server made from now on), the aiohttp client instrumentation (every
    session made from now on: the http and slack connectors, job callbacks), and the trace
    context in the carrier that travels with a job. :meth:`instrument_app` and :meth:`traced`
    add the request and command spans to an app."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        middleware, grpc_client, grpc_server, aiohttp_client = _import_instrumentations()
        self.provider = provider
        self.tracer = provider.get_tracer(__name__)
        # The instrumentations' spans record exceptions and statuses without their messages.
        self._redacting = _RedactingProvider(provider)
        self._middleware = middleware
        keep = _grpc_filter()
        # Instrumentors are singletons that refuse a second instrument(); each is undone by close().
        self._instrumentors: list[Any] = []
        for instrumentor in (grpc_client(filter_=keep), grpc_server(filter_=keep)):
            # Their constructors OR ``keep`` with OTEL_PYTHON_GRPC_EXCLUDED_SERVICES' filter, which
            # would trace what either keeps; ``keep`` has that setting in it (see _grpc_filter).
            instrumentor._filter = keep
            instrumentor.instrument(tracer_provider=self._redacting)
            self._instrumentors.append(instrumentor)
        client = aiohttp_client()
        client.instrument(tracer_provider=self._redacting, url_filter=_url_without_secrets)
        self._instrumentors.append(client)
        _register_propagator()

    def instrument_app(self, app: Starlette, path_prefix: str = "") -> None:
        """Adds a server span per request to ``app`` (before it starts), named by route template
        (``POST /v1/do/{connector}/{command}``) and continuing a caller's ``traceparent``. Probes
        and ``/metrics`` are not traced unless ``OTEL_PYTHON_ASGI_EXCLUDED_URLS`` or
        ``OTEL_PYTHON_EXCLUDED_URLS`` says otherwise (those replace the default)."""
        from opentelemetry.util.http import get_custom_headers, get_excluded_urls, parse_excluded_urls

        if "OTEL_PYTHON_ASGI_EXCLUDED_URLS" in os.environ or "OTEL_PYTHON_EXCLUDED_URLS" in os.environ:
            excluded = get_excluded_urls("ASGI")
        else:
            prefix = re.escape(path_prefix.rstrip("/"))
            paths = "|".join(re.escape(path) for path in _UNTRACED_PATHS)
            excluded = parse_excluded_urls(rf"^[a-z]+://[^/]+{prefix}(?:{paths})$")
        sanitized = [
            *SECRET_HEADERS,
            *get_custom_headers("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"),
        ]
        app.add_middleware(
            self._middleware,
            excluded_urls=excluded,
            default_span_details=_span_details(app.routes),
            tracer_provider=self._redacting,
            http_capture_headers_sanitize_fields=sanitized,
            exclude_spans=["receive", "send"],  # a span per ASGI message would triple the spans
        )

    def traced(self, federation: Federation) -> TracedInvoker:
        return TracedInvoker(federation, self.tracer)

    def close(self) -> None:
        """Undoes the instrumentation (channels, servers and sessions made before keep theirs);
        the tracer provider stays (it can be set once per process) and flushes at exit."""
        global _installed
        for instrumentor in self._instrumentors:
            instrumentor.uninstrument()
        self._instrumentors = []
        if _installed is self:
            _installed = None


class TracedInvoker:
    """An :class:`~server.invocation.Invoker` with a span around each command call, named
    ``invoke <connector>/<Command>``, with its command, where it ran (``spiff.upstream``: the
    gRPC server, absent for local connectors) and, when it failed, the failure's ``error_code``
    and gRPC status. Never a parameter, a result or a message (they may hold secrets or task data).
    """

    def __init__(self, federation: Federation, tracer: trace.Tracer) -> None:
        self._federation = federation
        self._tracer = tracer
        self._ids: dict[str, str] = {}

    def _command_id(self, full_method: str) -> str:
        command = self._ids.get(full_method)
        if command is None:  # new, or the upstreams' schemas changed: read them again
            self._ids = {
                f"/{service.full_name}/{method.name}": f"{connector_name(service)}/{method.name}"
                for service in self._federation.services
                for method in service.methods
            }
            command = self._ids.get(full_method, full_method.lstrip("/"))
        return command

    async def invoke(self, full_method: str, request: message.Message, timeout: float) -> Reply:
        command = self._command_id(full_method)
        attributes: dict[str, str] = {"spiff.command": command}
        upstream = self._federation.upstream_for(full_method)
        if upstream is not None:
            attributes["spiff.upstream"] = upstream.name
        request_id = correlation.request_id()
        if request_id is not None:
            attributes["spiff.request_id"] = request_id
        with self._tracer.start_as_current_span(
            f"invoke {command}",
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            # An exception's text could quote anything; its type is enough to find the log line.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                reply = await self._federation.invoke(full_method, request, timeout)
            except BaseException as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            if reply.failure is not None:
                span.set_attribute("spiff.error_code", reply.failure.error_code)
                span.set_attribute("rpc.grpc.status_code", reply.failure.code.value[0])
                span.set_status(Status(StatusCode.ERROR, reply.failure.error_code))
            return reply


def _span_details(
    routes: list[BaseRoute],
) -> Callable[[MutableMapping[str, Any]], tuple[str, dict[str, str]]]:
    """The ASGI middleware's span name and attributes for a request: ``<METHOD> <route template>``
    and ``http.route`` (never the path as sent: command names and job ids would make every
    span name different)."""

    def details(scope: MutableMapping[str, Any]) -> tuple[str, dict[str, str]]:
        method = str(scope.get("method", "HTTP"))
        template = _template(routes, scope, "")
        if template is None:
            return method, {}
        return f"{method} {template}", {"http.route": template}

    return details


def _template(routes: list[BaseRoute], scope: MutableMapping[str, Any], prefix: str) -> str | None:
    from starlette.routing import Match, Mount

    partial: str | None = None
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.NONE:
            continue
        if isinstance(route, Mount):
            if match is Match.FULL:
                return _template(route.routes, {**scope, **child}, prefix + route.path)
            continue
        path = prefix + str(getattr(route, "path", ""))
        if match is Match.FULL:
            return path
        partial = partial or path  # the path matched, not the method: still its route
    return partial


# What of a status description is kept: a leading exception type or gRPC code ("TimeoutError",
# "StatusCode.NOT_FOUND"), never the message after it.
_DESCRIPTION_KEPT = re.compile(r"[A-Za-z_][\w.]*(?=:|$)")


class _RedactingProvider(trace.TracerProvider):
    """The instrumentations' tracer provider: their spans record an exception's type and frames,
    not its message, and a status's exception type or gRPC code, not the text after it. aiohttp's
    messages quote the request's URL (its credentials and query: a timeout, too many redirects);
    gRPC's are the commands' error messages, and a stack trace ends with the message."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        self._provider = provider

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _RedactingTracer(self._provider.get_tracer(*args, **kwargs))


class _RedactingTracer(trace.Tracer):
    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return _RedactingSpan(self._tracer.start_span(*args, **kwargs))

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Any = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        with trace.use_span(span, end_on_exit, record_exception, set_status_on_exception) as current:
            yield current


class _RedactingSpan(trace.Span):
    """A span that records exceptions and statuses without their messages; otherwise the span."""

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def __getattr__(self, name: str) -> Any:
        return getattr(self._span, name)  # the SDK span's own (kind, name...), which instrumentations read

    def record_exception(
        self,
        exception: BaseException,
        attributes: Any = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        frames = "".join(traceback.format_tb(exception.__traceback__))
        kept = {"exception.message": type(exception).__name__, "exception.stacktrace": frames}
        self._span.record_exception(exception, {**(attributes or {}), **kept}, timestamp, escaped)

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        code = status.status_code if isinstance(status, Status) else status
        text = status.description if isinstance(status, Status) else description
        found = _DESCRIPTION_KEPT.match(text or "")
        self._span.set_status(Status(code, found.group() if found else None))

    def end(self, end_time: int | None = None) -> None:
        self._span.end(end_time)

    def get_span_context(self) -> trace.SpanContext:
        return self._span.get_span_context()

    def set_attributes(self, attributes: Any) -> None:
        self._span.set_attributes(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        self._span.set_attribute(key, value)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        self._span.add_event(name, attributes, timestamp)

    def add_link(self, context: trace.SpanContext, attributes: Any = None) -> None:
        self._span.add_link(context, attributes)

    def update_name(self, name: str) -> None:
        self._span.update_name(name)

    def is_recording(self) -> bool:
        return self._span.is_recording()


class _TraceContext:
    """The W3C trace context (``OTEL_PROPAGATORS``' propagators) as entries of the carrier that
    travels with a job, so its run and callbacks continue the trace of the call that made it."""

    def inject(self, carrier: dict[str, str]) -> None:
        if _installed is not None:
            propagate.inject(carrier)

    @contextlib.contextmanager
    def attach(self, carrier: Mapping[str, str]) -> Iterator[None]:
        if _installed is None:
            yield
            return
        token = otel_context.attach(propagate.extract(carrier, context=otel_context.get_current()))
        try:
            yield
        finally:
            otel_context.detach(token)


def _register_propagator() -> None:
    """Registers the carrier's trace context once per process (correlation keeps its propagators
    for good; this one does nothing while tracing is off)."""
    global _registered
    if not _registered:
        correlation.register(_TraceContext())
        _registered = True
