"""The REST shim's Prometheus metrics: requests by route and status, requests in flight, and each
``/v1/do`` command's answers (duration, HTTP status, ``error_code``).

Label values are bounded: routes are the app's route templates (``/v1/do/{connector}/{command}``,
never a path as sent), commands are the catalogue's ids (``unknown`` for anything else), and an
``error_code`` that does not look like one (an upstream server may send any text) is ``other``.

The hot path only adds to plain counts on the event loop (no lock, no labelled child looked up):
a collector registered in prometheus_client's default registry, where the other layers' metrics
are too, turns them into metric families when ``GET /metrics`` is scraped
(:func:`server.metrics.exposition`), which happens on the same event loop.
"""

from __future__ import annotations

import bisect
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from prometheus_client import REGISTRY, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "DO_ROUTE",
    "command_answered",
    "command_crashed",
    "command_started",
    "counting",
    "job_counts",
    "request_answered",
]

DO_ROUTE = "/v1/do/{connector}/{command}"

# Seconds: spiff-arena's budget is 45 s; local commands answer in well under a millisecond.
_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_ERROR_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,63}")

JOBS = Gauge("spiff_connector_proxy_jobs", "Jobs (long-running commands) by state, when scraped.", ["state"])


class _Durations:
    """One command's histogram: a count per bucket (the last one is +Inf) and the sum."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(_DURATION_BUCKETS) + 1)
        self.total = 0.0


class _ShimCollector(Collector):
    """The counts, kept as plain numbers; families made at scrape time."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.requests: defaultdict[tuple[str, str, int], int] = defaultdict(int)
        self.answers: defaultdict[tuple[str, int, str], int] = defaultdict(int)
        self.durations: dict[str, _Durations] = {}

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "spiff_connector_proxy_http_requests",
            "HTTP requests answered, by route template, method and status.",
            labels=["route", "method", "status"],
        )
        for (route, method, status), count in list(self.requests.items()):
            requests.add_metric([route, method, str(status)], count)
        # POST /v1/do is counted once, by its answers (one count on the hot path, not two).
        do_requests: defaultdict[int, int] = defaultdict(int)
        for (_, status, _), count in list(self.answers.items()):
            do_requests[status] += count
        for status, count in do_requests.items():
            requests.add_metric([DO_ROUTE, "POST", str(status)], count)
        yield requests
        yield GaugeMetricFamily(
            "spiff_connector_proxy_http_requests_in_flight", "HTTP requests being answered.", self.in_flight
        )
        answers = CounterMetricFamily(
            "spiff_connector_proxy_command_answers",
            "Answers of POST /v1/do by command, HTTP status and error_code ('' when none).",
            labels=["command", "status", "error_code"],
        )
        for (command, status, error_code), count in list(self.answers.items()):
            answers.add_metric([command, str(status), error_code], count)
        yield answers
        durations = HistogramMetricFamily(
            "spiff_connector_proxy_command_duration_seconds",
            "Time to answer POST /v1/do (the body read, the command run, the envelope written), by command.",
            labels=["command"],
        )
        bounds = [*(str(b) for b in _DURATION_BUCKETS), "+Inf"]
        for command, histogram in list(self.durations.items()):
            cumulative, running = [], 0
            for bound, count in zip(bounds, histogram.buckets, strict=True):
                running += count
                cumulative.append((bound, running))
            durations.add_metric([command], cumulative, histogram.total)
        yield durations


_COLLECTOR = _ShimCollector()
REGISTRY.register(_COLLECTOR)


def _bounded_error_code(error_code: str) -> str:
    return error_code if not error_code or _ERROR_CODE.fullmatch(error_code) else "other"


def command_started() -> None:
    """A ``/v1/do`` request is in flight until :func:`command_answered`."""
    _COLLECTOR.in_flight += 1


def command_answered(command: str, status: int, error_code: str, seconds: float) -> None:
    """Counts one ``/v1/do`` answer (its request too, when scraped: that route is not wrapped by
    :func:`counting`); ``command`` must already be a catalogue id or ``unknown``."""
    _COLLECTOR.in_flight -= 1
    _COLLECTOR.answers[command, status, _bounded_error_code(error_code)] += 1
    histogram = _COLLECTOR.durations.get(command)
    if histogram is None:
        histogram = _COLLECTOR.durations[command] = _Durations()
    histogram.buckets[bisect.bisect_left(_DURATION_BUCKETS, seconds)] += 1
    histogram.total += seconds


def command_crashed(command: str) -> None:
    """A ``/v1/do`` request ended by an unhandled error: answered 500 ``Internal`` by the app's
    error handler, which counts the request itself."""
    _COLLECTOR.in_flight -= 1
    _COLLECTOR.answers[command, 500, "Internal"] += 1


def request_answered(route: str | None, method: str, status: int) -> None:
    """Counts one answer; ``route`` is the matched route's template, or None (``unmatched``).
    A ``POST /v1/do`` is counted by its answer (:func:`command_answered`, :func:`command_crashed`)."""
    if route == DO_ROUTE and method == "POST":
        return
    _COLLECTOR.requests[route or "unmatched", method if method in _METHODS else "other", status] += 1


_Endpoint = Callable[[Request], Awaitable[Response]]


def counting(route: str, endpoint: _Endpoint) -> _Endpoint:
    """``endpoint`` counting its answers under ``route`` (its template) and those in flight.
    Unhandled errors are counted by the app's error handler instead (:func:`request_answered`)."""

    async def counted(request: Request) -> Response:
        _COLLECTOR.in_flight += 1
        try:
            response = await endpoint(request)
        finally:
            _COLLECTOR.in_flight -= 1
        request_answered(route, request.method, response.status_code)
        return response

    return counted


def job_counts(counts: Mapping[Any, int]) -> None:
    """Sets the jobs gauge from the backend's counts (state -> number)."""
    for state, count in counts.items():
        JOBS.labels(str(state)).set(count)
