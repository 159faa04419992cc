"""THE table from gRPC status codes to HTTP statuses (google/rpc/code.proto's mapping),
and spiff's v2 response envelope."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

__all__ = ["HTTP_STATUS", "envelope", "error_envelope"]

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


def envelope(
    command_response: dict[str, Any], error: dict[str, str] | None, logs: Sequence[str]
) -> dict[str, Any]:
    """spiff's v2 envelope; ``spiff__logs`` is always a list and the version the integer 2."""
    return {
        "command_response": command_response,
        "command_response_version": 2,
        "error": error,
        "spiff__logs": list(logs),
    }


def error_envelope(status: int, error_code: str, message: str, logs: Sequence[str] = ()) -> dict[str, Any]:
    """The envelope of a call that never reached a command (bad body, unknown command...)."""
    return envelope(
        {"body": None, "mimetype": "application/json", "http_status": status, "headers": {}},
        {"error_code": error_code, "message": message},
        logs,
    )
