"""The embedded job backend: jobs in a local SQLite file, run by workers in this process.

Execution is at-least-once: a job whose process dies while it runs is run again when the proxy
starts (a long-running command should be idempotent, or tolerate a re-run). Delivery is
at-least-once too, and spiff-arena answers a repeated callback with 400
``not_waiting_for_callback``, which counts as delivered: so the callback takes effect once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from pathlib import Path

from jobs._delivery import CallbackDelivery
from jobs._lifecycle import PendingDelivery, deliver_job, execute_job, format_counts
from jobs._store import ClaimedJob, JobStore
from rest_shim._catalog import Catalogue, CommandSpec
from rest_shim._jobs import DEFAULT_MAX_PENDING, CannotRedeliver, JobState, JobView, NewJob, Submitted
from server import correlation
from server.invocation import Invoker

__all__ = ["EmbeddedJobs"]

logger = logging.getLogger(__name__)

_IDLE_POLL = 5.0  # seconds a worker sleeps when no job is queued, unless woken by a submission
_PURGE_EVERY = 3600.0
_READINESS_TIMEOUT = 2.0  # seconds the store may take to answer the readiness check


class EmbeddedJobs:
    """Jobs in one SQLite file (``CONNECTOR_PROXY_JOBS_DB``), run by ``workers`` tasks in this process.

    Args:
        path: the SQLite file.
        delivery: how callbacks are sent.
        workers: jobs run at once.
        job_timeout: seconds one command may run (spiff-arena's 45 s does not apply).
        run_attempts: starts of one job, counting restarts mid-run, before it is given up with an
            error callback (``JobAbandoned``) instead of being run again.
        retention: seconds delivered and failed jobs are kept (then deleted).
        shutdown_grace: seconds running jobs and callbacks get to finish when the proxy stops;
            then they are stopped, and resume at the next start.
    """

    def __init__(
        self,
        path: str | Path,
        delivery: CallbackDelivery,
        *,
        workers: int = 4,
        job_timeout: float = 3600.0,
        run_attempts: int = 3,
        retention: float = 7 * 24 * 3600.0,
        shutdown_grace: float = 5.0,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        if workers < 1:
            msg = "workers must be at least 1"
            raise ValueError(msg)
        self.store = JobStore(path)
        self.delivery = delivery
        self.workers = workers
        self.job_timeout = job_timeout
        self.run_attempts = run_attempts
        self.retention = retention
        self.shutdown_grace = shutdown_grace
        self.max_pending = max_pending
        self._specs: dict[str, CommandSpec] = {}
        self._invoker: Invoker | None = None
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._worker_tasks: list[asyncio.Task[None]] = []
        self._deliveries: set[asyncio.Task[None]] = set()
        self._running: set[asyncio.Task[None]] = set()
        self._housekeeping: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def use_catalogue(self, catalogue: Catalogue) -> None:
        self._specs = {spec.full_method: spec for spec in catalogue.commands.values()}

    async def start(self, catalogue: Catalogue, invoker: Invoker) -> None:
        """Opens the store, recovers what a previous process left, and starts the workers."""
        self.use_catalogue(catalogue)
        self._invoker = invoker
        self._stopping = False
        self._wakeup = asyncio.Event()
        await self.store.open()
        try:
            await self.delivery.start()
            requeued = await self.store.call(self.store.requeue_running)
            if requeued:
                logger.warning(
                    "%d job(s) were running when the proxy stopped; they run again (at-least-once)", requeued
                )
            purged = await self.store.call(self.store.purge, time.time() - self.retention)
            if purged:
                logger.info("deleted %d finished job(s) older than the retention", purged)
            pending = await self.store.call(self.store.deliveries)
        except BaseException:
            await self.delivery.close()
            await self.store.close()
            raise
        if any(spec.long_running for spec in self._specs.values()) and not self.delivery.credential:
            logger.warning(
                "no callback credential is configured (CONNECTOR_PROXY_CALLBACK_API_KEY or "
                "CONNECTOR_PROXY_CALLBACK_BEARER_TOKEN): spiff-arena refuses anonymous callbacks with 403"
            )
        for job in pending:
            self._spawn_delivery(job)
        self._worker_tasks = [
            asyncio.create_task(self._work(), name=f"job-worker-{n}") for n in range(self.workers)
        ]
        self._housekeeping = asyncio.create_task(self._purge_periodically(), name="job-purge")
        counts = await self.counts()
        logger.info(
            "job runner started: %d workers, store %s; jobs %s",
            self.workers,
            self.store.path,
            format_counts(counts),
        )

    async def close(self) -> None:
        """Stops taking jobs; gives running jobs and callbacks ``shutdown_grace`` seconds, then stops
        them. A stopped job goes back to ``queued`` and a stopped callback stays ``delivering``,
        so both resume at the next start."""
        self._stopping = True
        self._wakeup.set()
        busy = [*self._running, *self._deliveries]
        if busy and self.shutdown_grace > 0:
            logger.info(
                "waiting up to %.0f s for %d running job(s) and callback(s)", self.shutdown_grace, len(busy)
            )
            await asyncio.wait(busy, timeout=self.shutdown_grace)
        tasks = [*self._worker_tasks, *self._running, *self._deliveries]
        if self._housekeeping is not None:
            tasks.append(self._housekeeping)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._worker_tasks.clear()
        self._housekeeping = None
        try:
            requeued = await self.store.call(self.store.requeue_running)
            if requeued:
                logger.info("%d job(s) stopped mid-run; they run again at the next start", requeued)
        finally:
            await self.delivery.close()
            await self.store.close()

    # -- the backend interface ---------------------------------------------------------------

    async def readiness_problem(self) -> str | None:
        if self._stopping or not self._worker_tasks:
            return "the job runner is not running"
        try:
            await asyncio.wait_for(self.store.call(self.store.ping), _READINESS_TIMEOUT)
        except TimeoutError:
            return f"the job store did not answer within {_READINESS_TIMEOUT:g} s"
        except (sqlite3.Error, RuntimeError) as exc:
            return f"the job store cannot be read: {exc}"
        return None

    def callback_problem(self, url: str) -> str | None:
        return self.delivery.problem(url)

    async def submit(self, job: NewJob) -> Submitted:
        submitted = await self.store.call(self.store.submit, job, self.max_pending)
        if submitted.created:
            self._wakeup.set()
        return submitted

    async def get(self, job_id: str) -> JobView | None:
        return await self.store.call(self.store.get, job_id)

    async def list(self, state: JobState | None, limit: int) -> list[JobView]:
        return await self.store.call(self.store.list, state, limit)

    async def counts(self) -> dict[JobState, int]:
        return await self.store.call(self.store.counts)

    async def redeliver(self, job_id: str) -> JobView | None:
        outcome = await self.store.call(self.store.redeliver, job_id)
        if isinstance(outcome, str):
            raise CannotRedeliver(outcome)
        if outcome is None:
            return None
        logger.info("job %s (%s): its callback is sent again", job_id, outcome.command_id)
        self._spawn_delivery(outcome)
        return await self.get(job_id)

    # -- workers -----------------------------------------------------------------------------

    async def _work(self) -> None:
        while not self._stopping:
            try:
                await self._work_once()
            except Exception:
                # The store failed (disk full, I/O error): say so, and try again shortly.
                logger.exception("job worker error")
                await asyncio.sleep(1.0)

    async def _work_once(self) -> None:
        # Cleared before claiming: a submission committed after this point sets it again, so a
        # worker never sleeps through a job nobody claimed.
        self._wakeup.clear()
        job = await self.store.call(self.store.claim)
        if job is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), _IDLE_POLL)
            return
        # The run is a task of its own, so close() can give it the grace period.
        run = asyncio.create_task(self._run(job), name=f"job-{job.id}")
        self._running.add(run)
        try:
            await asyncio.shield(run)
        finally:
            if run.done():
                self._running.discard(run)
            else:
                run.add_done_callback(self._running.discard)

    async def _run(self, job: ClaimedJob) -> None:
        assert self._invoker is not None  # noqa: S101 - set by start()
        with correlation.restored(job.context):  # the call that made the job: request id, trace
            result = await execute_job(
                self._specs,
                self._invoker,
                job_id=job.id,
                command=job.command,
                command_id=job.command_id,
                request=job.request,
                attempt=job.attempts,
                max_attempts=self.run_attempts,
                timeout=self.job_timeout,
            )
            await self.store.call(self.store.finish_run, job.id, result)
        delivery = PendingDelivery(job.id, job.command_id, job.callback_url, result, 0, job.context)
        self._spawn_delivery(delivery)

    # -- callbacks ---------------------------------------------------------------------------

    def _spawn_delivery(self, job: PendingDelivery) -> None:
        task = asyncio.create_task(self._deliver(job), name=f"callback-{job.id}")
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, job: PendingDelivery) -> None:
        try:
            with correlation.restored(job.context):
                await deliver_job(self, self.delivery, job)
        except Exception:
            # The store failed; the job stays ``delivering`` and is retried at the next start.
            logger.exception("job %s (%s): callback bookkeeping failed", job.id, job.command_id)

    async def record_delivery(
        self, job_id: str, attempts: int, state: JobState, last_error: str | None
    ) -> None:
        """One callback attempt's outcome (the :class:`~jobs.Ledger` of this backend)."""
        await self.store.call(self.store.record_delivery, job_id, attempts, state, last_error)

    async def _purge_periodically(self) -> None:
        while True:
            await asyncio.sleep(_PURGE_EVERY)
            try:
                await self.store.call(self.store.purge, time.time() - self.retention)
            except Exception:
                logger.exception("could not delete old jobs")
