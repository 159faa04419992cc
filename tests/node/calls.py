"""Calling jsonata/Evaluate over gRPC and reading the answer as the proxy does, and the
expressions the tests share."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from spiff.connector.jsonata.v1 import jsonata_pb2, jsonata_pb2_grpc

from server import json_values
from server.errors import Failure
from server.wire import LOG_METADATA_KEY, STATUS_DETAILS_KEY

_ABSENT: Any = object()

ENDLESS_TAIL_RECURSION = "($f := function($x){$f($x)}; $f(1))"
ENDLESS_RECURSION = "($f := function($x){1 + $f($x)}; $f(1))"
LONG_LOOP = "($loop := function($i){$i < 100000000 ? $loop($i + 1) : $i}; $loop(0))"
# Catastrophic backtracking: minutes inside one call of the regular expression engine, where
# JSONata's step hooks never run.
BACKTRACKING = '$match("' + "a" * 32 + '!", /(a+)+$/)'


@dataclass(frozen=True)
class Answer:
    """One call's outcome: the result's JSON value, or the failure, plus what the trailers held."""

    code: grpc.StatusCode
    details: str
    value: Any  # the result, parsed (None for a failure)
    logs: list[str]
    status_bytes: bytes | None  # grpc-status-details-bin as sent
    elapsed: float  # seconds

    @property
    def status(self) -> status_pb2.Status | None:
        return None if self.status_bytes is None else status_pb2.Status.FromString(self.status_bytes)

    @property
    def failure(self) -> Failure:
        """The failure as the proxy decodes an upstream's (server/upstreams: Failure.from_status)."""
        assert self.code != grpc.StatusCode.OK
        return Failure.from_status(
            self.code, self.details, self.status, jsonata_pb2.EvaluateResponse, tuple(self.logs)
        )

    @property
    def error_info(self) -> error_details_pb2.ErrorInfo:
        status = self.status
        assert status is not None, "the failure carries no grpc-status-details-bin"
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return info
        msg = "no ErrorInfo in the status details"
        raise AssertionError(msg)


def _trailers(metadata: Any) -> tuple[list[str], bytes | None]:
    logs: list[str] = []
    status: bytes | None = None
    for key, value in metadata or ():
        if key == LOG_METADATA_KEY:
            logs.append(value.decode())
        elif key == STATUS_DETAILS_KEY:
            status = value
    return logs, status


async def evaluate(
    channel: grpc.aio.Channel,
    expression: str,
    *,
    input: Any = _ABSENT,
    bindings: Any = _ABSENT,
    timeout: float = 10.0,
) -> Answer:
    """Calls jsonata/Evaluate; ``input`` and ``bindings`` are JSON values (absent when not given)."""
    request = jsonata_pb2.EvaluateRequest(expression=expression)
    if input is not _ABSENT:
        request.input.CopyFrom(json_values.dump(input))
    if bindings is not _ABSENT:
        request.bindings.CopyFrom(json_values.dump(bindings))
    return await evaluate_request(channel, request, timeout=timeout)


async def evaluate_request(
    channel: grpc.aio.Channel, request: jsonata_pb2.EvaluateRequest, *, timeout: float = 10.0
) -> Answer:
    stub = jsonata_pb2_grpc.JsonataServiceStub(channel)  # type: ignore[no-untyped-call]
    started = time.monotonic()
    call = stub.Evaluate(request, timeout=timeout)
    try:
        response = await call
    except grpc.aio.AioRpcError as exc:
        logs, status = _trailers(exc.trailing_metadata())
        return Answer(exc.code(), exc.details() or "", None, logs, status, time.monotonic() - started)
    logs, status = _trailers(await call.trailing_metadata())
    value = json_values.loads(response.result.json)
    return Answer(grpc.StatusCode.OK, "", value, logs, status, time.monotonic() - started)


def assert_failure(answer: Answer, code: grpc.StatusCode, error_code: str) -> None:
    assert (answer.code, answer.error_info.reason, answer.error_info.domain) == (
        code,
        error_code,
        "spiff.connector",
    )
    # The proxy's decoding of the trailer gives the same error_code and message.
    failure = answer.failure
    assert (failure.code, failure.error_code, failure.message) == (code, error_code, answer.details)
