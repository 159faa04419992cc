"""Long-running commands: jobs accepted with 202 and delivered by a callback PUT (README
"Long-running commands"; spiff-protocol §4).

The shim talks to a :class:`JobBackend`. :class:`EmbeddedJobs` is the default one: a local
SQLite store and workers in the proxy's process. :class:`BrokerJobs` is the scale-out one: jobs
on RabbitMQ through taskiq, run by worker processes (:class:`BrokerWorker`, started by
``python -m connector_proxy --worker``), their state in Redis. Both run a job the same way
(:mod:`jobs._lifecycle`) and deliver it with :class:`CallbackDelivery`.
"""

from __future__ import annotations

from jobs._broker import BrokerJobs, BrokerWorker, connect_redis, taskiq_broker
from jobs._delivery import CallbackDelivery, Outcome, OutcomeKind
from jobs._grpc import JobsServicer, jobs_service
from jobs._lifecycle import run_job
from jobs._redis_store import RedisJobStore
from jobs._runner import EmbeddedJobs
from rest_shim import (
    PROXY_PREFIX,
    CannotRedeliver,
    JobBackend,
    JobState,
    JobsUnavailable,
    JobView,
    NewJob,
    ProxyOptions,
    Submitted,
    prefers_async,
    split_proxy_options,
)
from server.settings import Settings

__all__ = [
    "PROXY_PREFIX",
    "BrokerJobs",
    "BrokerWorker",
    "CallbackDelivery",
    "CannotRedeliver",
    "EmbeddedJobs",
    "JobBackend",
    "JobState",
    "JobView",
    "JobsServicer",
    "JobsUnavailable",
    "NewJob",
    "Outcome",
    "OutcomeKind",
    "ProxyOptions",
    "RedisJobStore",
    "Submitted",
    "broker_worker",
    "callback_delivery",
    "connect_redis",
    "embedded_jobs",
    "job_backend",
    "jobs_service",
    "prefers_async",
    "run_job",
    "split_proxy_options",
    "taskiq_broker",
]


def callback_delivery(settings: Settings) -> CallbackDelivery:
    """Callbacks as ``CONNECTOR_PROXY_CALLBACK_*`` configure them."""
    return CallbackDelivery(
        base_url=settings.callback_base_url,
        api_key=settings.callback_api_key,
        bearer_token=settings.callback_bearer_token,
        auth_identifier=settings.callback_auth_identifier,
        attempts=settings.callback_attempts,
        backoff_base=settings.callback_backoff_base,
        backoff_cap=settings.callback_backoff_cap,
        timeout=settings.callback_timeout,
    )


def embedded_jobs(settings: Settings) -> EmbeddedJobs:
    """The embedded backend configured by ``CONNECTOR_PROXY_JOB*`` and ``CONNECTOR_PROXY_CALLBACK_*``."""
    return EmbeddedJobs(
        settings.jobs_db,
        callback_delivery(settings),
        workers=settings.job_workers,
        job_timeout=settings.job_timeout,
        run_attempts=settings.job_run_attempts,
        retention=settings.jobs_retention,
        shutdown_grace=settings.shutdown_grace,
        max_pending=settings.max_pending_jobs,
    )


def job_backend(settings: Settings) -> JobBackend:
    """The broker backend when ``CONNECTOR_PROXY_JOBS_BROKER_URL`` is set, else the embedded one."""
    if settings.jobs_broker_url is None:
        return embedded_jobs(settings)
    return BrokerJobs(
        settings.jobs_broker_url,
        settings.jobs_redis_url,
        settings.jobs_namespace,
        callback_delivery(settings),
        retention=settings.jobs_retention,
        max_pending=settings.max_pending_jobs,
    )


def broker_worker(settings: Settings) -> BrokerWorker:
    """A worker process's runner; its Redis client waits out outages for ever (the job's message
    stays unacknowledged, so safe in RabbitMQ, meanwhile)."""
    store = RedisJobStore(connect_redis(settings.jobs_redis_url, retries=-1), settings.jobs_namespace)
    return BrokerWorker(
        store,
        callback_delivery(settings),
        job_timeout=settings.job_timeout,
        run_attempts=settings.job_run_attempts,
    )
