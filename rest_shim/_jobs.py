"""What the REST shim knows about jobs: their states, their public view, and the backend interface.

A *job* is one accepted long-running call of a command: the shim answered 202 and owes
spiff-arena a callback (a PUT of the v2 envelope to ``spiff__callback_url``). Where jobs are
stored and which process runs them is a backend's business; the shim only talks to
:class:`JobBackend`. The embedded backend (:class:`jobs.EmbeddedJobs`) keeps them in a
local SQLite file and runs them in this process; a broker backend implements the same methods on a
task engine, reusing :func:`jobs.run_job` and :class:`jobs.CallbackDelivery`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from server import json_values

if TYPE_CHECKING:
    from rest_shim._catalog import Catalogue
    from server.invocation import Invoker

__all__ = [
    "DEFAULT_MAX_PENDING",
    "CannotRedeliver",
    "JobBackend",
    "JobState",
    "JobView",
    "JobsBusy",
    "JobsUnavailable",
    "NewJob",
    "Submitted",
]


class JobsUnavailable(Exception):
    """The backend's services (broker, store) cannot be reached: the request is answered 503
    ``JobsUnavailable`` and nothing was accepted."""


DEFAULT_MAX_PENDING = 10_000  # jobs a backend holds pending unless told otherwise


class JobsBusy(Exception):
    """As many jobs as the backend may hold are still pending (queued, running or delivering):
    the request is answered 503 ``JobsBusy`` with ``Retry-After`` and nothing was accepted."""

    retry_after = 5.0  # seconds: pending jobs drain at the pace of their commands

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} jobs are still pending, as many as this proxy holds")
        self.limit = limit


class CannotRedeliver(Exception):
    """The job cannot be delivered again; the message says why (it is not ``failed``, its command
    never ran, or its task has another pending job)."""


class JobState(enum.StrEnum):
    """A job's life: queued → running → delivering → delivered | failed.

    A proxy that stops mid-run puts ``running`` jobs back to ``queued`` when it starts again
    (at-least-once execution); ``delivering`` jobs resume their callback.
    """

    QUEUED = "queued"
    RUNNING = "running"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    FAILED = "failed"

    @property
    def pending(self) -> bool:
        """The job still owes its callback: a second POST for its task joins it."""
        return self in (JobState.QUEUED, JobState.RUNNING, JobState.DELIVERING)


@dataclass(frozen=True)
class NewJob:
    """What the shim hands a backend when it accepts a call."""

    command: str  # the full gRPC method, e.g. /spiff.connector.example.v1.ExampleService/Delay
    command_id: str  # e.g. example/Delay
    request: bytes  # the decoded, validated request message, serialized
    callback_url: str  # spiff__callback_url as received (rewritten only when delivered)
    task_id: str | None  # spiff__task_id; jobs of the same task are not run twice at once
    # What travels with the call (server.correlation.carrier): its request id, trace context.
    context: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Submitted:
    """The answer to a submission: the job that owes the callback, and whether it is new."""

    job_id: str
    state: JobState
    created: bool


@dataclass(frozen=True)
class JobView:
    """A job as operators see it (REST and gRPC): never its parameters, result or credentials."""

    id: str
    command: str  # the command id, e.g. example/Delay
    task_id: str | None
    state: JobState
    attempts: int
    delivery_attempts: int
    last_error: str | None
    created_at: float  # seconds since the epoch
    updated_at: float
    worker: str | None = None  # the process running or delivering it (broker mode): host:pid

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "command": self.command,
            "task_id": self.task_id,
            "state": self.state.value,
            "attempts": self.attempts,
            "delivery_attempts": self.delivery_attempts,
            "last_error": self.last_error,
            "created_at": json_values.iso_timestamp(self.created_at),
            "updated_at": json_values.iso_timestamp(self.updated_at),
            "worker": self.worker,
        }


class JobBackend(Protocol):
    """Where the shim puts accepted jobs and reads their state.

    ``start`` runs in the app's lifespan, after the invoker is ready; ``close`` before it is
    closed. ``submit`` must have made the job durable when it returns: the shim answers 202 only
    then. A backend is idempotent per task: while a job for ``task_id`` is pending, ``submit``
    returns that job (``created=False``) instead of creating another. A backend holds a bounded
    number of pending jobs: beyond it, ``submit`` raises :class:`JobsBusy` (joining a task's
    pending job is still answered). Any method may raise :class:`JobsUnavailable`.
    """

    async def start(self, catalogue: Catalogue, invoker: Invoker) -> None: ...

    def use_catalogue(self, catalogue: Catalogue) -> None:
        """Runs jobs with the commands of ``catalogue`` from now on (upstreams changed)."""
        ...

    async def close(self) -> None: ...

    async def readiness_problem(self) -> str | None:
        """Why the backend could not take a job now (its store closed or not answering, its
        broker disconnected), or None; asked by ``/readiness``, so it answers within seconds."""
        ...

    def callback_problem(self, url: str) -> str | None:
        """Why the backend would not deliver to ``url`` (checked before accepting), or None."""
        ...

    async def submit(self, job: NewJob) -> Submitted: ...

    async def get(self, job_id: str) -> JobView | None: ...

    async def list(self, state: JobState | None, limit: int) -> list[JobView]:
        """The newest jobs first, at most ``limit``."""
        ...

    async def counts(self) -> dict[JobState, int]:
        """The number of jobs in each state (every state present, zeros included)."""
        ...

    async def redeliver(self, job_id: str) -> JobView | None:
        """Sends a failed job's callback again (after an operator fixed what made it fail), with
        a fresh count of attempts; the job is ``delivering`` again and pending for its task.
        None when there is no such job; :class:`CannotRedeliver` when it cannot be."""
        ...
