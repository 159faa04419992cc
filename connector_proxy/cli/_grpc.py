"""The proxy's gRPC port as the command line calls it.

A command is found by server reflection (the port reflects its local connectors and the upstreams
it fronts), its request is built from the JSON the REST shim takes, with the shim's own decoder, and
its failure is read from the ``grpc-status-details-bin`` trailer. Jobs are read and redelivered with
``spiff.proxy.v1.JobsService``, in the same JSON as ``/v1/jobs``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf import message, timestamp_pb2
from google.rpc import status_pb2
from grpc_reflection.v1alpha import reflection_pb2
from spiff.proxy.v1 import jobs_pb2

from connector_proxy.cli._errors import (
    CliError,
    CommandFailed,
    RequestRefused,
    Unreachable,
    answered,
    key_refused,
)
from rest_shim import Catalogue
from rest_shim._transcode import encode_message
from server import json_values
from server.errors import Failure
from server.upstreams import DiscoveryError, logs_of, read_schema
from server.wire import API_KEY_METADATA, STATUS_DETAILS_KEY, grpc_options

__all__ = [
    "Outcome",
    "Session",
    "call_command",
    "catalogue",
    "get_job",
    "list_commands",
    "list_jobs",
    "redeliver_job",
    "run",
]

# Room for large task data and results: twice the proxy's default body limit, as its own channels.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_JOBS = "/spiff.proxy.v1.JobsService/"
_REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
# JobsService answers with bare status codes; REST's error codes for the same answers.
_JOB_ERROR_CODES = {
    grpc.StatusCode.NOT_FOUND: "JobNotFound",
    grpc.StatusCode.FAILED_PRECONDITION: "JobNotRedeliverable",
    grpc.StatusCode.UNAVAILABLE: "JobsUnavailable",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidParameters",
}
_STATE_ORDER = {
    name.removeprefix("JOB_STATE_").lower(): number for name, number in jobs_pb2.JobState.items() if number
}
T = TypeVar("T")


@dataclass(frozen=True)
class Session:
    """An open channel to the proxy's gRPC port, with what every call sends."""

    channel: grpc.aio.Channel
    target: str
    metadata: tuple[tuple[str, str], ...]
    api_key: str | None
    timeout: float

    def failure(
        self, exc: grpc.aio.AioRpcError, response_class: type[message.Message]
    ) -> tuple[CliError, Any]:
        """The error of a failed call, and its partial result as JSON (None when there is none)."""
        trailing = exc.trailing_metadata() or ()
        status = next(
            (
                status_pb2.Status.FromString(value)
                for key, value in trailing
                if key == STATUS_DETAILS_KEY and isinstance(value, bytes)
            ),
            None,
        )
        code = exc.code()
        if status is None and code == grpc.StatusCode.UNAUTHENTICATED:
            return key_refused(self.api_key), None
        if status is None and code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return Unreachable(f"{self.target} did not answer within {self.timeout:g} s"), None
        failure = Failure.from_status(code, exc.details() or "", status, response_class, logs_of(trailing))
        details = [
            f"{v.field}: {v.description}"
            for v in failure.violations
            if f"{v.field} {v.description}" not in failure.message
        ]
        partial = encode_message(failure.result) if failure.result is not None else None
        return answered(failure.error_code, failure.message or code.name, details), partial


@dataclass(frozen=True)
class Outcome:
    """A command's answer: the response (or the partial result of a failure) as JSON, its
    ``spiff__logs`` lines, and the error when it failed."""

    response: Any
    logs: tuple[str, ...]
    error: CliError | None = None


def _channel(target: str) -> tuple[grpc.aio.Channel, str]:
    options = grpc_options(MAX_MESSAGE_BYTES)
    if target.startswith("grpcs://"):
        address = target.removeprefix("grpcs://")
        return grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(), options=options), address
    address = target.removeprefix("grpc://")
    return grpc.aio.insecure_channel(address, options=options), address


def run(target: str, api_key: str | None, timeout: float, work: Callable[[Session], Awaitable[T]]) -> T:
    """Runs ``work`` with a session on ``target`` (``host:port``, or ``grpcs://host:port`` for TLS
    with the system's roots) once it is connected.

    Raises:
        Unreachable: no connection within ``timeout``.
    """

    async def main() -> T:
        channel, address = _channel(target)
        async with channel:
            try:
                await asyncio.wait_for(channel.channel_ready(), timeout)
            except TimeoutError:
                msg = f"cannot reach the proxy's gRPC port at {address} within {timeout:g} s"
                raise Unreachable(msg) from None
            metadata = ((API_KEY_METADATA, api_key),) if api_key else ()
            return await work(Session(channel, address, metadata, api_key, timeout))

    return asyncio.run(main())


async def catalogue(session: Session) -> Catalogue:
    """The commands the gRPC port serves, read by server reflection.

    Raises:
        Unauthorized: the API key was refused.
        Unreachable: the server offers no usable reflection.
    """
    if await _refuses_key(session):
        raise key_refused(session.api_key)
    try:
        schema = await read_schema(session.channel, metadata=session.metadata, timeout=session.timeout)
        return Catalogue(schema.services())
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            raise key_refused(session.api_key) from None
        msg = f"{session.target} offers no server reflection: {exc.code().name} {exc.details()}"
        raise Unreachable(msg) from None
    except (DiscoveryError, ValueError) as exc:
        msg = f"the schema {session.target} reflects is not usable: {exc}"
        raise Unreachable(msg) from None


async def _refuses_key(session: Session) -> bool:
    """Whether the server refuses the API key, asked with reflection's list as a unary call.

    Asked before the reflection stream opens: a server that refuses the key ends that stream at
    once, and the stream's next write can race the end and fail as INTERNAL instead of
    UNAUTHENTICATED. A unary call sends its request and its end together, so its status is the
    server's.
    """
    probe: grpc.aio.UnaryUnaryMultiCallable[Any, Any] = session.channel.unary_unary(
        _REFLECTION,
        request_serializer=lambda request: request.SerializeToString(),
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    try:
        await probe(request, timeout=session.timeout, metadata=session.metadata)
    except grpc.aio.AioRpcError as exc:
        return exc.code() == grpc.StatusCode.UNAUTHENTICATED
    return False


async def list_commands(session: Session) -> Any:
    """``/v1/commands``' JSON, built from reflection the way the shim builds it."""
    return json.loads((await catalogue(session)).commands_body)


async def call_command(session: Session, command_id: str, body: dict[str, Any]) -> Outcome:
    """Calls ``<connector>/<Command>`` with the JSON body ``/v1/do`` would take.

    Raises:
        RequestRefused: there is no such command, or the body does not make a valid request.
    """
    commands = await catalogue(session)
    connector, _, name = command_id.partition("/")
    spec = commands.find(connector, name)
    if spec is None:
        msg = f"{session.target} serves no command {command_id!r} (see connector-proxy commands --grpc)"
        raise RequestRefused(msg, error_code="command_not_found")
    decoded = spec.decoder.decode(body)
    logs = tuple(f"Ignored parameter {key!r}: {spec.id} has no such parameter." for key in decoded.ignored)
    if decoded.message is None:
        problems = "; ".join(f"{v.field} {v.description}" for v in decoded.violations)
        msg = f"Invalid parameters for {spec.id}: {problems}."
        return Outcome(None, logs, RequestRefused(msg, error_code="InvalidParameters"))
    method: grpc.aio.UnaryUnaryMultiCallable[message.Message, message.Message] = session.channel.unary_unary(
        spec.full_method,
        request_serializer=lambda request: request.SerializeToString(),
        response_deserializer=spec.response_class.FromString,
    )
    call = method(decoded.message, timeout=session.timeout, metadata=session.metadata)
    try:
        response = await call
    except grpc.aio.AioRpcError as exc:
        error, partial = session.failure(exc, spec.response_class)
        return Outcome(partial, logs + logs_of(exc.trailing_metadata() or ()), error)
    return Outcome(encode_message(response), logs + logs_of(await call.trailing_metadata() or ()))


async def _jobs_call(
    session: Session, name: str, request: message.Message, reply: type[message.Message]
) -> Any:
    method: grpc.aio.UnaryUnaryMultiCallable[message.Message, Any] = session.channel.unary_unary(
        _JOBS + name,
        request_serializer=lambda sent: sent.SerializeToString(),
        response_deserializer=reply.FromString,
    )
    try:
        return await method(request, timeout=session.timeout, metadata=session.metadata)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            msg = f"{session.target} runs no jobs (it serves no spiff.proxy.v1.JobsService)"
            raise CommandFailed(msg, error_code="NotFound") from None
        error_code = _JOB_ERROR_CODES.get(exc.code())
        if error_code is None:
            raise session.failure(exc, reply)[0] from None
        raise answered(error_code, exc.details() or exc.code().name) from None


def _time(stamp: timestamp_pb2.Timestamp) -> str:
    return json_values.iso_timestamp(stamp.ToNanoseconds() / 1e9)


def _job_json(job: jobs_pb2.Job) -> dict[str, Any]:
    """A job as ``GET /v1/jobs/{id}`` shows it."""
    return {
        "id": job.id,
        "command": job.command,
        "task_id": job.task_id or None,
        "state": jobs_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower(),
        "attempts": job.attempts,
        "delivery_attempts": job.delivery_attempts,
        "last_error": job.last_error or None,
        "created_at": _time(job.created_at),
        "updated_at": _time(job.updated_at),
        "worker": job.worker or None,
    }


async def get_job(session: Session, job_id: str) -> dict[str, Any]:
    reply = await _jobs_call(session, "GetJob", jobs_pb2.GetJobRequest(id=job_id), jobs_pb2.GetJobResponse)
    return _job_json(reply.job)


async def redeliver_job(session: Session, job_id: str) -> dict[str, Any]:
    request = jobs_pb2.RedeliverJobRequest(id=job_id)
    reply = await _jobs_call(session, "RedeliverJob", request, jobs_pb2.RedeliverJobResponse)
    return _job_json(reply.job)


async def list_jobs(session: Session, state: str | None, limit: int) -> dict[str, Any]:
    """``GET /v1/jobs``' JSON: the newest jobs and the number in each state."""
    wanted = f"JOB_STATE_{state.upper()}" if state else "JOB_STATE_UNSPECIFIED"
    request = jobs_pb2.ListJobsRequest(state=wanted, limit=limit)
    reply = await _jobs_call(session, "ListJobs", request, jobs_pb2.ListJobsResponse)
    # In /v1/jobs' order (the life of a job), not the map's.
    counts = sorted(reply.counts.items(), key=lambda item: _STATE_ORDER.get(item[0], len(_STATE_ORDER)))
    return {"jobs": [_job_json(job) for job in reply.jobs], "counts": dict(counts)}
