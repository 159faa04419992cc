"""The proxy's one error vocabulary, shared by connectors, the gRPC server and the REST shim.

    CommandError                     a command failed; carries a gRPC code and a stable error_code
     ├── Cancelled                   CANCELLED
     ├── Unknown                     UNKNOWN
     ├── InvalidArgument             INVALID_ARGUMENT: the caller sent something unusable
     │    └── InvalidParameters      parameters of the wrong type, missing or out of range
     ├── DeadlineExceeded            DEADLINE_EXCEEDED
     ├── NotFound                    NOT_FOUND
     ├── AlreadyExists               ALREADY_EXISTS
     ├── PermissionDenied            PERMISSION_DENIED
     │    └── EgressDenied           the egress policy does not allow the connection
     ├── ResourceExhausted           RESOURCE_EXHAUSTED (e.g. rate limited)
     ├── FailedPrecondition          FAILED_PRECONDITION
     ├── Aborted                     ABORTED (e.g. a conflict)
     ├── OutOfRange                  OUT_OF_RANGE
     ├── Unimplemented               UNIMPLEMENTED
     ├── Internal                    INTERNAL
     ├── Unavailable                 UNAVAILABLE: an upstream could not be reached; worth retrying
     │    ├── ConnectorBusy          every thread of the connector's pool is taken (a slow dependency)
     │    └── ProxyBusy              the process holds as many calls or body bytes as it may
     ├── DataLoss                    DATA_LOSS
     └── Unauthenticated             UNAUTHENTICATED

``for_code(code)`` gives the class of a gRPC code, for connectors that compute the code.

Over gRPC a failure travels as a google.rpc.Status whose details hold an ErrorInfo
(reason = error_code), a BadRequest for parameter violations, a RetryInfo when the caller
should try again later (REST: ``Retry-After``), and optionally the command's partial result (its
own response message, e.g. an upstream 404 body).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "CommandError",
    "ConnectorBusy",
    "DataLoss",
    "DeadlineExceeded",
    "EgressDenied",
    "FailedPrecondition",
    "Failure",
    "Internal",
    "InvalidArgument",
    "InvalidParameters",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ProxyBusy",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "Violation",
    "default_error_code",
    "for_code",
]

ERROR_DOMAIN = "spiff.connector"


@dataclass(frozen=True)
class Violation:
    """One bad parameter: its path (``schema.columns[2]``) and what is wrong with it."""

    field: str
    description: str


def default_error_code(code: grpc.StatusCode) -> str:
    """The error_code of a failure that names none: the gRPC code in CamelCase (``DeadlineExceeded``)."""
    return "".join(part.capitalize() for part in code.name.split("_"))


class CommandError(Exception):
    """A command failure with a gRPC code, a stable ``error_code`` and a message for people.

    Args:
        message: what went wrong, safe to show to a diagram author (never a secret).
        error_code: the stable code BPMN error events match; defaults to the class's.
        result: the command's partial result (its response message), rendered into
            ``command_response`` as on success, e.g. the body of an upstream 404.
        violations: the bad parameters, for InvalidParameters.
        retry_after: seconds after which trying again may succeed (REST: ``Retry-After``);
            defaults to the class's.
    """

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    error_code_default: ClassVar[str | None] = None
    retry_after_default: ClassVar[float | None] = None

    def __init__(
        self,
        message: str,
        *,
        error_code: str | None = None,
        result: Message | None = None,
        violations: Sequence[Violation] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code or self.error_code_default or default_error_code(self.code)
        self.result = result
        self.violations = tuple(violations)
        self.retry_after = retry_after if retry_after is not None else self.retry_after_default

    def to_failure(self) -> Failure:
        return Failure(
            self.code,
            self.error_code,
            self.message,
            self.violations,
            self.result,
            retry_after=self.retry_after,
        )


class InvalidArgument(CommandError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class InvalidParameters(InvalidArgument):
    error_code_default = "InvalidParameters"


class NotFound(CommandError):
    code = grpc.StatusCode.NOT_FOUND


class PermissionDenied(CommandError):
    code = grpc.StatusCode.PERMISSION_DENIED


class EgressDenied(PermissionDenied):
    """The egress policy (:mod:`server.egress`) does not allow the connection."""

    error_code_default = "EgressDenied"


class Unauthenticated(CommandError):
    code = grpc.StatusCode.UNAUTHENTICATED


class FailedPrecondition(CommandError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(CommandError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(CommandError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(CommandError):
    code = grpc.StatusCode.UNAVAILABLE


class ConnectorBusy(Unavailable):
    """Every thread of the connector's pool is taken: answered at once instead of queueing."""

    error_code_default = "ConnectorBusy"
    retry_after_default = 1.0


class ProxyBusy(Unavailable):
    """The process already holds as many calls, or bytes of bodies, as its settings allow."""

    error_code_default = "ProxyBusy"
    retry_after_default = 1.0


class Unimplemented(CommandError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(CommandError):
    code = grpc.StatusCode.INTERNAL


class Cancelled(CommandError):
    code = grpc.StatusCode.CANCELLED


class Unknown(CommandError):
    code = grpc.StatusCode.UNKNOWN


class AlreadyExists(CommandError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Aborted(CommandError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(CommandError):
    code = grpc.StatusCode.OUT_OF_RANGE


class DataLoss(CommandError):
    code = grpc.StatusCode.DATA_LOSS


_BY_CODE: dict[grpc.StatusCode, type[CommandError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


def for_code(code: grpc.StatusCode) -> type[CommandError]:
    """The error class of a gRPC code (OK has none).

    Raises:
        ValueError: for ``StatusCode.OK``, which is not a failure.
    """
    try:
        return _BY_CODE[code]
    except KeyError:
        msg = f"{code.name} is not an error code"
        raise ValueError(msg) from None


@dataclass(frozen=True)
class Failure:
    """A failed command as both transports deliver it to the REST shim."""

    code: grpc.StatusCode
    error_code: str
    message: str
    violations: tuple[Violation, ...] = ()
    result: Message | None = None
    logs: tuple[str, ...] = field(default=())
    retry_after: float | None = None  # seconds; sent as RetryInfo, answered as Retry-After

    def to_status(self) -> status_pb2.Status:
        """The google.rpc.Status that carries this failure over gRPC."""
        details = [_pack(error_details_pb2.ErrorInfo(reason=self.error_code, domain=ERROR_DOMAIN))]
        if self.violations:
            bad_request = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in self.violations
                ]
            )
            details.append(_pack(bad_request))
        if self.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromTimedelta(datetime.timedelta(seconds=self.retry_after))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        if self.result is not None:
            details.append(_pack(self.result))
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=details)

    @classmethod
    def from_status(
        cls,
        code: grpc.StatusCode,
        message_text: str,
        status: status_pb2.Status | None,
        response_class: type[Message],
        logs: tuple[str, ...] = (),
    ) -> Failure:
        """Rebuilds a failure from a gRPC status, reading whatever details it carries."""
        error_code = default_error_code(code)
        violations: list[Violation] = []
        result: Message | None = None
        retry_after: float | None = None
        for detail in status.details if status is not None else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                if info.reason:
                    error_code = info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                violations.extend(Violation(v.field, v.description) for v in bad_request.field_violations)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry_info = error_details_pb2.RetryInfo()
                detail.Unpack(retry_info)
                retry_after = retry_info.retry_delay.ToTimedelta().total_seconds()
            elif detail.Is(response_class.DESCRIPTOR):
                result = response_class()
                detail.Unpack(result)
        return cls(code, error_code, message_text, tuple(violations), result, logs, retry_after)


def _pack(msg: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed
