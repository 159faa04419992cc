"""The jobs' Prometheus metrics: callback attempts by outcome and their latency. (Jobs by state
are read from the store when ``/metrics`` is scraped, by the shim.)"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["CALLBACK_ATTEMPTS", "CALLBACK_SECONDS"]

CALLBACK_ATTEMPTS = Counter(
    "spiff_connector_proxy_job_callback_attempts",
    "PUTs of job results to spiff-arena, by outcome: delivered, retry (to be tried again) or failed.",
    ["outcome"],
)
CALLBACK_SECONDS = Histogram(
    "spiff_connector_proxy_job_callback_duration_seconds",
    "Time of one callback PUT, connection to answer.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
