"""One job's life in a worker, whichever backend stores it: run the command, then deliver.

:func:`execute_job` turns a claimed job into the envelope its callback carries;
:func:`deliver_job` PUTs it and records every attempt in the backend's :class:`Ledger`. The
embedded runner and the broker worker differ only in where they claim jobs and keep records.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry import trace

from jobs._delivery import CallbackDelivery, Outcome, OutcomeKind
from rest_shim._catalog import CommandSpec
from rest_shim._jobs import JobState
from rest_shim._reply import render_reply
from rest_shim._status import error_envelope
from server import json_values
from server.invocation import Invoker

__all__ = [
    "Ledger",
    "PendingDelivery",
    "context_of",
    "context_text",
    "deliver_job",
    "execute_job",
    "run_job",
]

logger = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)  # a no-op unless connector_proxy turned tracing on


@dataclass(frozen=True)
class PendingDelivery:
    """A job whose result waits to be PUT to its callback URL."""

    id: str
    command_id: str
    callback_url: str
    result: str
    delivery_attempts: int
    context: dict[str, str] = field(default_factory=dict)  # the accepting call's carrier


def context_text(context: dict[str, str]) -> str:
    """A job's carrier (:func:`server.correlation.carrier`) as a store keeps it: JSON, ``""`` for none."""
    return json.dumps(context) if context else ""


def context_of(text: str | None) -> dict[str, str]:
    """The carrier :func:`context_text` wrote (``""`` or a missing value: none)."""
    return json.loads(text) if text else {}


class Ledger(Protocol):
    """Where a backend records callbacks (the embedded SQLite store, or Redis)."""

    async def record_delivery(
        self, job_id: str, attempts: int, state: JobState, last_error: str | None
    ) -> None: ...

    async def counts(self) -> dict[JobState, int]: ...


async def run_job(
    specs: Mapping[str, CommandSpec],
    invoker: Invoker,
    command: str,
    request: bytes,
    *,
    timeout: float,
    logs: tuple[str, ...] = (),
) -> bytes:
    """Runs one job's command and renders the envelope its callback carries.

    The same envelope ``/v1/do`` would have answered synchronously; a failure is an error envelope
    with ``error_code`` and ``command_response.body``. Never raises for the command's sake: a
    command that disappeared since the job was accepted becomes ``command_not_found``.

    A refusal that started nothing and says when to try again (``ConnectorBusy``, an upstream's
    ``ProxyBusy``) is tried again after that wait, within ``timeout``: nobody waits for a job's
    answer, so a connector that is busy for a moment does not fail it.
    """
    spec = specs.get(command)
    if spec is None:
        message = f"The command {command} is no longer served by this proxy."
        return json_values.dumps(error_envelope(404, "command_not_found", message, logs)).encode()
    try:
        decoded = spec.request_class.FromString(request)
    except Exception:  # a job this proxy's schema cannot read any more
        logger.exception("job request for %s cannot be read", spec.id)
        message = f"The stored request for {spec.id} cannot be read by this proxy."
        return json_values.dumps(error_envelope(500, "Internal", message, logs)).encode()
    deadline = time.monotonic() + timeout
    reply = await invoker.invoke(spec.full_method, decoded, timeout)
    while reply.failure is not None and reply.failure.retry_after is not None:
        wait = reply.failure.retry_after
        remaining = deadline - time.monotonic() - wait
        if remaining <= 0:
            break
        logger.info("%s answered %s; trying again in %g s", spec.id, reply.failure.error_code, wait)
        await asyncio.sleep(wait)
        reply = await invoker.invoke(spec.full_method, decoded, remaining)
    _, body = render_reply(spec, reply, (*logs, *reply.logs))
    return body


async def execute_job(
    specs: Mapping[str, CommandSpec],
    invoker: Invoker,
    *,
    job_id: str,
    command: str,
    command_id: str,
    request: bytes,
    attempt: int,
    max_attempts: int,
    timeout: float,
) -> str:
    """Runs attempt number ``attempt`` of a job; returns the envelope text to deliver.

    Attempts after the first follow a process that stopped mid-run. After ``max_attempts`` the
    command is not started again (it may be what stops its process): the callback says so.
    """
    if attempt > max_attempts:
        logger.error(
            "job %s (%s) stopped its process %d times; not running it again", job_id, command_id, attempt - 1
        )
        message = (
            f"The job was started {attempt - 1} times and its process stopped each time before it "
            "finished; it is not run again."
        )
        envelope = error_envelope(500, "JobAbandoned", message, (f"Job {job_id}.",))
        return json_values.dumps(envelope)
    logger.info("job %s (%s) started, attempt %d", job_id, command_id, attempt)
    logs: tuple[str, ...] = (f"Ran as job {job_id}.",)
    if attempt > 1:
        logs = (f"Ran as job {job_id}, attempt {attempt}: the process running an earlier one stopped.",)
    started = time.monotonic()
    # A span in the trace of the call that made the job (its carrier is restored around this).
    with _tracer.start_as_current_span(
        f"job run {command_id}",
        kind=trace.SpanKind.CONSUMER,
        attributes={"spiff.job.id": job_id, "spiff.command": command_id, "spiff.job.attempt": attempt},
        record_exception=False,
    ) as span:
        try:
            result = await run_job(specs, invoker, command, request, timeout=timeout, logs=logs)
        except Exception:
            # Invokers answer failures as replies; this is a bug or a broken channel.
            span.set_status(trace.Status(trace.StatusCode.ERROR, "Internal"))
            logger.exception("job %s (%s) could not be run", job_id, command_id)
            message = "The proxy failed unexpectedly while running the command; its log has the details."
            result = json_values.dumps(error_envelope(500, "Internal", message, logs)).encode()
    logger.info("job %s (%s) ran in %.2f s", job_id, command_id, time.monotonic() - started)
    return result.decode()


async def deliver_job(ledger: Ledger, delivery: CallbackDelivery, job: PendingDelivery) -> JobState:
    """PUTs the job's envelope until delivered, failed for good, or out of attempts; records
    each attempt in ``ledger`` and returns the final state."""

    async def record_retry(attempt: int, outcome: Outcome) -> None:
        await ledger.record_delivery(job.id, attempt, JobState.DELIVERING, outcome.detail)

    outcome, attempts = await delivery.deliver(
        job.callback_url, job.result.encode(), done=job.delivery_attempts, on_retry=record_retry
    )
    state = JobState.FAILED if outcome.kind is OutcomeKind.FAILED else JobState.DELIVERED
    await ledger.record_delivery(job.id, attempts, state, outcome.detail)
    counts = format_counts(await ledger.counts())
    if state is JobState.FAILED:
        logger.error(
            "job %s (%s) failed: its callback was not delivered: %s; jobs %s",
            job.id,
            job.command_id,
            outcome.detail,
            counts,
        )
    elif outcome.detail:
        logger.warning("job %s (%s) delivered: %s; jobs %s", job.id, job.command_id, outcome.detail, counts)
    else:
        logger.info(
            "job %s (%s) delivered after %d attempt(s); jobs %s", job.id, job.command_id, attempts, counts
        )
    return state


def format_counts(counts: Mapping[JobState, int]) -> str:
    """``queued=0 running=1 ...`` for log lines."""
    return " ".join(f"{state.value}={count}" for state, count in counts.items())
