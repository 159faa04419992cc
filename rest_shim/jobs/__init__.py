"""Long-running commands: jobs accepted with 202 and delivered by a callback PUT (README
"Long-running commands"; spiff-protocol §4).

The shim talks to a :class:`JobBackend`. :class:`EmbeddedJobs` is the default one: a local
SQLite store and workers in the proxy's process. The pieces a broker backend would reuse are
:func:`run_job` (the command's envelope) and :class:`CallbackDelivery` (the PUT and its rules).
"""

from __future__ import annotations

from rest_shim.jobs._delivery import CallbackDelivery, Outcome, OutcomeKind
from rest_shim.jobs._grpc import JobsServicer, jobs_service
from rest_shim.jobs._model import JobBackend, JobState, JobView, NewJob, Submitted
from rest_shim.jobs._request import PROXY_PREFIX, ProxyOptions, prefers_async, split_proxy_options
from rest_shim.jobs._runner import EmbeddedJobs, run_job
from server.settings import Settings

__all__ = [
    "PROXY_PREFIX",
    "CallbackDelivery",
    "EmbeddedJobs",
    "JobBackend",
    "JobState",
    "JobView",
    "JobsServicer",
    "NewJob",
    "Outcome",
    "OutcomeKind",
    "ProxyOptions",
    "Submitted",
    "embedded_jobs",
    "jobs_service",
    "prefers_async",
    "run_job",
    "split_proxy_options",
]


def embedded_jobs(settings: Settings) -> EmbeddedJobs:
    """The embedded backend configured by ``CONNECTOR_PROXY_JOB*`` and ``CONNECTOR_PROXY_CALLBACK_*``."""
    delivery = CallbackDelivery(
        base_url=settings.callback_base_url,
        api_key=settings.callback_api_key,
        bearer_token=settings.callback_bearer_token,
        auth_identifier=settings.callback_auth_identifier,
        attempts=settings.callback_attempts,
        backoff_base=settings.callback_backoff_base,
        backoff_cap=settings.callback_backoff_cap,
        timeout=settings.callback_timeout,
    )
    return EmbeddedJobs(
        settings.jobs_db,
        delivery,
        workers=settings.job_workers,
        job_timeout=settings.job_timeout,
        retention=settings.jobs_retention,
        shutdown_grace=settings.shutdown_grace,
    )
