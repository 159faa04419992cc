"""``spiff.proxy.v1.JobsService``: the jobs, read-only, over gRPC (not a connector)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from spiff.proxy.v1 import jobs_pb2, jobs_pb2_grpc

from rest_shim._jobs import CannotRedeliver, JobBackend, JobState, JobsUnavailable, JobView
from server.app import ExtraService

__all__ = ["JobsServicer", "jobs_service"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

_TO_PROTO: dict[JobState, Any] = {
    state: jobs_pb2.JobState.Value(f"JOB_STATE_{state.name}") for state in JobState
}
_FROM_PROTO = {number: state for state, number in _TO_PROTO.items()}


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp


def job_message(view: JobView) -> jobs_pb2.Job:
    return jobs_pb2.Job(
        id=view.id,
        command=view.command,
        task_id=view.task_id or "",
        state=_TO_PROTO[view.state],
        attempts=view.attempts,
        delivery_attempts=view.delivery_attempts,
        last_error=view.last_error or "",
        created_at=_timestamp(view.created_at),
        updated_at=_timestamp(view.updated_at),
        worker=view.worker or "",
    )


class JobsServicer(jobs_pb2_grpc.JobsServiceServicer):
    def __init__(self, jobs: JobBackend) -> None:
        self.jobs = jobs

    # The method names are the RPCs', as the generated servicer has them.
    async def GetJob(self, request: jobs_pb2.GetJobRequest, context: Any) -> jobs_pb2.GetJobResponse:  # noqa: N802
        try:
            view = await self.jobs.get(request.id) if request.id else None
        except JobsUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"Jobs cannot be read: {exc}.")
        if view is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"There is no job {request.id!r}.")
        assert view is not None  # noqa: S101 - abort raises
        return jobs_pb2.GetJobResponse(job=job_message(view))

    async def RedeliverJob(  # noqa: N802
        self, request: jobs_pb2.RedeliverJobRequest, context: Any
    ) -> jobs_pb2.RedeliverJobResponse:
        try:
            view = await self.jobs.redeliver(request.id) if request.id else None
        except CannotRedeliver as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except JobsUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"The job cannot be delivered again: {exc}.")
        if view is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"There is no job {request.id!r}.")
        assert view is not None  # noqa: S101 - abort raises
        return jobs_pb2.RedeliverJobResponse(job=job_message(view))

    async def ListJobs(self, request: jobs_pb2.ListJobsRequest, context: Any) -> jobs_pb2.ListJobsResponse:  # noqa: N802
        state = _FROM_PROTO.get(request.state)
        if request.state and state is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Unknown job state {request.state}.")
        limit = min(request.limit, MAX_LIMIT) if request.limit > 0 else DEFAULT_LIMIT
        try:
            views = await self.jobs.list(state, limit)
            counts = await self.jobs.counts()
        except JobsUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"Jobs cannot be read: {exc}.")
        return jobs_pb2.ListJobsResponse(
            jobs=[job_message(v) for v in views], counts={s.value: n for s, n in counts.items()}
        )


def jobs_service(jobs: JobBackend) -> ExtraService:
    """The JobsService of ``jobs``, to host with ``create_server(..., services=[...])``."""
    servicer = JobsServicer(jobs)
    return ExtraService(
        name=jobs_pb2.DESCRIPTOR.services_by_name["JobsService"].full_name,
        add_to_server=lambda server: jobs_pb2_grpc.add_JobsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            servicer, server
        ),
    )
