"""The scale-out job backend: jobs on RabbitMQ through taskiq, their state in Redis.

The shim (:class:`BrokerJobs`) stores a job's record in Redis, publishes its message to a durable
quorum queue and waits for RabbitMQ's confirm before answering 202. Worker processes
(``python -m connector_proxy --worker``, each running :class:`BrokerWorker`) take messages,
run the command, deliver the callback, and only then acknowledge the message. A worker that dies
at any point leaves its message unacknowledged, and RabbitMQ hands it to another worker as soon
as the dead one's connection closes; that worker finds in Redis how far the job got (a command
that ran is not run again; only its callback is owed).

Why taskiq on RabbitMQ: taskiq is asyncio-native (a job is a coroutine on the worker's loop,
next to grpc.aio channels and aiohttp sessions, with no thread or fork per job), and RabbitMQ
redelivers an unacknowledged message the moment its consumer's connection drops, where
Redis-based engines wait for a visibility timeout or the job timeout to expire.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from jobs._delivery import CallbackDelivery
from jobs._lifecycle import PendingDelivery, deliver_job, execute_job, format_counts
from jobs._redis_store import RedisJobStore
from rest_shim._catalog import Catalogue, CommandSpec
from rest_shim._jobs import (
    DEFAULT_MAX_PENDING,
    CannotRedeliver,
    JobState,
    JobsUnavailable,
    JobView,
    NewJob,
    Submitted,
)
from server import correlation
from server.invocation import Invoker

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from taskiq import AsyncBroker

__all__ = ["TASK_NAME", "BrokerJobs", "BrokerWorker", "connect_redis", "taskiq_broker"]

logger = logging.getLogger(__name__)

TASK_NAME = "spiff_connector_proxy.run_job"
_PURGE_EVERY = 3600.0
_READINESS_TIMEOUT = 2.0  # seconds Redis may take to answer the readiness check


def taskiq_broker(url: str, namespace: str, *, prefetch: int) -> AsyncBroker:
    """The taskiq broker of a namespace: exchange ``<ns>``, quorum queue ``<ns>.jobs``.

    ``prefetch`` is how many jobs one worker process holds at once (RabbitMQ's QoS): each
    unacknowledged message is a job that process is running or delivering.
    """
    from taskiq_aio_pika import AioPikaBroker, Exchange, Queue

    return AioPikaBroker(
        url,
        qos=prefetch,
        exchange=Exchange(name=namespace),
        task_queues=[Queue(name=f"{namespace}.jobs")],
        dead_letter_queue=Queue(name=f"{namespace}.dead_letter"),
    )


def connect_redis(url: str, *, retries: int) -> Redis:
    """A Redis client that waits out an outage: ``retries`` retries with jittered exponential
    backoff (capped at 10 s) on connection errors and timeouts; -1 retries for ever."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeoutError

    return Redis.from_url(
        url,
        retry=Retry(ExponentialWithJitterBackoff(cap=10.0, base=0.1), retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        socket_connect_timeout=5.0,
        socket_timeout=10.0,  # a Redis that stops answering is an error (and retried), not a hang
        health_check_interval=30,
    )


def _redis_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return (RedisError, OSError)


@contextlib.contextmanager
def _store_unavailable() -> Iterator[None]:
    """Redis errors (after the client's retries) become :class:`JobsUnavailable`."""
    try:
        yield
    except _redis_errors() as exc:
        msg = f"the job store (Redis) is unreachable: {type(exc).__name__}"
        raise JobsUnavailable(msg) from exc


class BrokerJobs:
    """The shim's side of the broker mode (a :class:`~jobs.JobBackend`).

    Args:
        broker_url: RabbitMQ, e.g. ``amqp://guest:guest@127.0.0.1:5672/``.
        redis_url: the job state, e.g. ``redis://127.0.0.1:6379/0``.
        namespace: the queue and key prefix shared with the workers.
        delivery: only consulted for :meth:`callback_problem` (the workers deliver).
        retention: seconds delivered and failed jobs are kept.
        publish_timeout: seconds a submission may wait for RabbitMQ's confirm before the request
            is answered 503 ``JobsUnavailable``.
    """

    def __init__(
        self,
        broker_url: str,
        redis_url: str,
        namespace: str,
        delivery: CallbackDelivery,
        *,
        retention: float = 7 * 24 * 3600.0,
        publish_timeout: float = 10.0,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.broker_url = broker_url
        self.redis_url = redis_url
        self.namespace = namespace
        self.delivery = delivery
        self.retention = retention
        self.publish_timeout = publish_timeout
        self.max_pending = max_pending
        self._broker: AsyncBroker | None = None
        self._store: RedisJobStore | None = None
        self._housekeeping: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"BrokerJobs(namespace={self.namespace!r})"  # the URLs may hold passwords

    @property
    def store(self) -> RedisJobStore:
        if self._store is None:
            msg = "BrokerJobs.start() was not called"
            raise RuntimeError(msg)
        return self._store

    def use_catalogue(self, catalogue: Catalogue) -> None:
        """Nothing to do: the workers run the jobs, with their own catalogue."""

    async def start(self, catalogue: Catalogue, invoker: Invoker) -> None:
        """Connects to Redis and RabbitMQ (failing start-up when either is unreachable)."""
        redis = connect_redis(self.redis_url, retries=3)
        try:
            await redis.ping()
            self._store = RedisJobStore(redis, self.namespace)
            await self._purge()
            broker = taskiq_broker(self.broker_url, self.namespace, prefetch=1)
            await broker.startup()
        except BaseException:
            await redis.aclose()
            self._store = None
            raise
        self._broker = broker
        self._housekeeping = asyncio.create_task(self._purge_periodically(), name="job-purge")
        logger.info(
            "jobs go to the broker (namespace %s); jobs %s",
            self.namespace,
            format_counts(await self.counts()),
        )

    async def close(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
            self._housekeeping = None
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
        if self._store is not None:
            await self._store.redis.aclose()
            self._store = None

    async def _purge(self) -> None:
        """Deletes finished jobs past the retention (every proxy does; the work is idempotent)."""
        purged, batch = 0, -1
        while batch != 0:
            batch = await self.store.purge(time.time() - self.retention)
            purged += batch
        if purged:
            logger.info("deleted %d finished job(s) older than the retention", purged)

    async def _purge_periodically(self) -> None:
        while True:
            await asyncio.sleep(_PURGE_EVERY)
            try:
                await self._purge()
            except _redis_errors():
                logger.exception("could not delete old jobs")

    async def readiness_problem(self) -> str | None:
        if self._store is None or self._broker is None:
            return "the job broker is not connected"
        connection = getattr(self._broker, "write_conn", None)
        if connection is not None and not connection.connected.is_set():
            return "RabbitMQ is not connected (reconnecting)"
        try:
            await asyncio.wait_for(self._store.redis.ping(), _READINESS_TIMEOUT)
        except TimeoutError:
            return f"Redis did not answer within {_READINESS_TIMEOUT:g} s"
        except _redis_errors() as exc:
            return f"Redis cannot be reached: {type(exc).__name__}"
        return None

    def callback_problem(self, url: str) -> str | None:
        return self.delivery.problem(url)

    async def submit(self, job: NewJob) -> Submitted:
        """Records the job, then publishes it; returns once RabbitMQ has confirmed it (persisted)."""
        job_id = str(uuid.uuid4())
        created_at = time.time()
        with _store_unavailable():
            submitted = await self.store.submit(job_id, job, self.max_pending)
        if not submitted.created:
            return submitted
        try:
            await self.publish(job_id, job, created_at)
        except JobsUnavailable as exc:
            logger.error("job %s (%s) could not be published: %s", job_id, job.command_id, exc.__cause__)
            try:
                await self.store.withdraw(job_id)
            except _redis_errors():
                logger.exception(
                    "job %s could not be withdrawn; a new request for its task replaces it", job_id
                )
            raise
        try:
            await self.store.published(job_id)
        except _redis_errors():
            # The message is safe in RabbitMQ; only the abandoned-job guard loses its mark.
            logger.warning("job %s published, but its record could not be marked so", job_id)
        return submitted

    async def publish(self, job_id: str, job: NewJob, created_at: float) -> None:
        """Sends the job's message and waits for RabbitMQ's confirm, up to ``publish_timeout``
        (no record is written: :meth:`submit` does that first). Raises :class:`JobsUnavailable`
        when RabbitMQ does not take it."""
        from taskiq.kicker import AsyncKicker

        if self._broker is None:
            msg = "BrokerJobs.start() was not called"
            raise RuntimeError(msg)
        kicker: AsyncKicker[Any, None] = AsyncKicker(TASK_NAME, self._broker, {})
        sending = kicker.with_task_id(job_id).kiq(
            job_id=job_id,
            command=job.command,
            command_id=job.command_id,
            request=base64.b64encode(job.request).decode(),
            callback_url=job.callback_url,
            task_id=job.task_id or "",
            created_at=created_at,
            context=job.context,
        )
        try:
            await asyncio.wait_for(sending, self.publish_timeout)
        except Exception as exc:
            msg = f"the job broker (RabbitMQ) did not take the job: {type(exc).__name__}"
            raise JobsUnavailable(msg) from exc

    async def get(self, job_id: str) -> JobView | None:
        with _store_unavailable():
            return await self.store.get(job_id)

    async def redeliver(self, job_id: str) -> JobView | None:
        with _store_unavailable():
            outcome = await self.store.redeliver(job_id)
        if isinstance(outcome, str):
            raise CannotRedeliver(outcome)
        if outcome is None:
            return None
        job, created_at = outcome
        try:
            await self.publish(job_id, job, created_at)
        except JobsUnavailable as exc:
            detail = f"its message could not be published again: {type(exc.__cause__).__name__}"
            with contextlib.suppress(*_redis_errors()):
                await self.store.record_delivery(job_id, 0, JobState.FAILED, f"Redelivery failed: {detail}.")
            raise
        logger.info("job %s (%s): its callback is sent again", job_id, job.command_id)
        return await self.get(job_id)

    async def list(self, state: JobState | None, limit: int) -> list[JobView]:
        with _store_unavailable():
            return await self.store.list(state, limit)

    async def counts(self) -> dict[JobState, int]:
        with _store_unavailable():
            return await self.store.counts()


class BrokerWorker:
    """Runs the jobs a taskiq receiver hands it (one per worker process).

    Args:
        store: the job state (its Redis client should retry for ever: the message stays
            unacknowledged, so safe, while Redis is away).
        delivery: how callbacks are sent.
        job_timeout: seconds one command may run.
        run_attempts: starts of one job (counting worker deaths mid-run) before it is given up.
        name: how job records name this worker; ``host:pid`` by default.
    """

    def __init__(
        self,
        store: RedisJobStore,
        delivery: CallbackDelivery,
        *,
        job_timeout: float = 3600.0,
        run_attempts: int = 3,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.delivery = delivery
        self.job_timeout = job_timeout
        self.run_attempts = run_attempts
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._specs: Mapping[str, CommandSpec] = {}
        self._invoker: Invoker | None = None

    def use_catalogue(self, catalogue: Catalogue) -> None:
        self._specs = {spec.full_method: spec for spec in catalogue.commands.values()}

    async def start(self, catalogue: Catalogue, invoker: Invoker) -> None:
        self.use_catalogue(catalogue)
        self._invoker = invoker
        await self.delivery.start()
        if not self.delivery.credential:
            logger.warning(
                "no callback credential is configured (CONNECTOR_PROXY_CALLBACK_API_KEY or "
                "CONNECTOR_PROXY_CALLBACK_BEARER_TOKEN): spiff-arena refuses anonymous callbacks with 403"
            )
        logger.info("job worker %s ready: %d commands", self.name, len(self._specs))

    async def close(self) -> None:
        await self.delivery.close()

    def register(self, broker: AsyncBroker) -> None:
        """Makes this worker the handler of ``broker``'s job messages."""

        # taskiq registers plain functions (it renames them), not bound methods.
        async def run_job_message(
            job_id: str,
            command: str,
            command_id: str,
            request: str,
            callback_url: str,
            task_id: str,
            created_at: float,
            context: dict[str, str] | None = None,  # absent from messages of older proxies
        ) -> None:
            with correlation.restored(context):  # the call that made the job: request id, trace
                await self.run(
                    job_id, command, command_id, request, callback_url, task_id, created_at, context or {}
                )

        broker.register_task(run_job_message, task_name=TASK_NAME)

    async def record_delivery(
        self, job_id: str, attempts: int, state: JobState, last_error: str | None
    ) -> None:
        await self.store.record_delivery(job_id, attempts, state, last_error)

    async def counts(self) -> dict[JobState, int]:
        return await self.store.counts()

    async def run(
        self,
        job_id: str,
        command: str,
        command_id: str,
        request: str,
        callback_url: str,
        task_id: str,
        created_at: float,
        context: dict[str, str] | None = None,
    ) -> None:
        """One job's message: run it (unless it ran already), then deliver its callback.
        ``context`` is the accepting call's carrier (:func:`server.correlation.carrier`)."""
        if self._invoker is None:
            msg = "BrokerWorker.start() was not called"
            raise RuntimeError(msg)
        context = context or {}
        job = NewJob(command, command_id, b"", callback_url, task_id or None, context)
        claim = await self.store.claim(job_id, self.name, job, created_at)
        if claim.state in (JobState.DELIVERED, JobState.FAILED):
            logger.info("job %s (%s) is %s already; nothing to do", job_id, command_id, claim.state.value)
            return
        try:
            if claim.state is JobState.RUNNING:
                result = await execute_job(
                    self._specs,
                    self._invoker,
                    job_id=job_id,
                    command=command,
                    command_id=command_id,
                    request=base64.b64decode(request),
                    attempt=claim.attempts,
                    max_attempts=self.run_attempts,
                    timeout=self.job_timeout,
                )
                await self.store.finish_run(job_id, result)
            elif claim.result is not None:
                # An earlier worker ran the command and died before its callback was done.
                logger.info("job %s (%s): resuming its callback", job_id, command_id)
                result = claim.result
            else:
                msg = f"the job's record is {claim.state.value} but holds no result to deliver"
                raise RuntimeError(msg)
            pending = PendingDelivery(
                job_id, command_id, callback_url, result, claim.delivery_attempts, context
            )
            await deliver_job(self, self.delivery, pending)
        except Exception as exc:
            # A bug, or a record this worker cannot make sense of: the message is acknowledged
            # (running it again would fail again), so the job must not look pending for ever.
            logger.exception("job %s (%s): the worker failed", job_id, command_id)
            detail = f"The worker failed: {type(exc).__name__}: {exc}; its log has the details."
            with contextlib.suppress(Exception):
                await self.store.record_delivery(job_id, claim.delivery_attempts, JobState.FAILED, detail)
            raise
