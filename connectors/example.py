"""Example connector: echoes a message, calling nothing (smoke tests, demos, benchmarks).

``Delay`` is long-running (declared ``long_running`` in its proto): the proxy answers 202 at
once and PUTs the result to spiff-arena's callback URL when the wait is over.
"""

from __future__ import annotations

import asyncio
from typing import Any

from spiff.connector.example.v1 import example_pb2, example_pb2_grpc

from server import errors

MAX_DELAY_SECONDS = 86400


class ExampleService(example_pb2_grpc.ExampleServiceServicer):
    async def Example(self, request: example_pb2.ExampleRequest, context: Any) -> example_pb2.ExampleResponse:
        return example_pb2.ExampleResponse(
            connector_response=f"You passed the example connector: '{request.message}'. Have a good day!",
            message=request.message,
        )

    async def Delay(self, request: example_pb2.DelayRequest, context: Any) -> example_pb2.DelayResponse:
        seconds = request.seconds
        if not 0 <= seconds <= MAX_DELAY_SECONDS:
            problem = f"must be between 0 and {MAX_DELAY_SECONDS}"
            msg = f"Invalid parameters for example/Delay: seconds {problem}, got {seconds}."
            raise errors.InvalidParameters(msg, violations=[errors.Violation("seconds", problem)])
        await asyncio.sleep(seconds)
        return example_pb2.DelayResponse(message=request.message, waited_seconds=seconds)
