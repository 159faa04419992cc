"""conformance/Echo, Fail and Sleep, written as any Python connector is."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
from spiff.connector.conformance.v1 import conformance_pb2, conformance_pb2_grpc

from server import errors, log
from server.errors import Violation


class Conformance(conformance_pb2_grpc.ConformanceServiceServicer):
    async def Echo(self, request: Any, context: Any) -> conformance_pb2.EchoResponse:
        if request.log:
            log(request.log)
        return conformance_pb2.EchoResponse(value=request.value)

    async def Fail(self, request: Any, context: Any) -> conformance_pb2.FailResponse:
        log(f"failing with {request.grpc_code} as asked")
        code = grpc.StatusCode[request.grpc_code]
        violations = [Violation(field, "is wrong") for field in request.bad_fields]
        raise errors.for_code(code)(request.message, error_code=request.error_code, violations=violations)

    async def Sleep(self, request: Any, context: Any) -> conformance_pb2.SleepResponse:
        log(f"sleeping {request.seconds:g} s")
        started = time.monotonic()
        await asyncio.sleep(request.seconds)
        return conformance_pb2.SleepResponse(slept=time.monotonic() - started)
