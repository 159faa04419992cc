"""Rand connector: a uniformly random integer in a range, from the operating system's generator
(``secrets``, so nothing about earlier draws predicts the next)."""

from __future__ import annotations

import secrets
from typing import Any

from spiff.connector.rand.v1 import rand_pb2, rand_pb2_grpc

from server import errors


class RandService(rand_pb2_grpc.RandServiceServicer):
    async def Number(self, request: rand_pb2.NumberRequest, context: Any) -> rand_pb2.NumberResponse:
        low, high = request.min, request.max
        if low > high:
            problem = f"must not be greater than max ({high}): the range {low} to {high} is empty"
            msg = f"Invalid parameters for rand/Number: min {problem}."
            raise errors.InvalidParameters(msg, violations=[errors.Violation("min", problem)])
        return rand_pb2.NumberResponse(number=low + secrets.randbelow(high - low + 1))
