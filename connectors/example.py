"""Example connector: echoes a message, calling nothing (smoke tests, demos, benchmarks).

``Delay`` is long-running (declared ``long_running`` in its proto): the proxy answers 202 at
once and PUTs the result to spiff-arena's callback URL when the wait is over.
"""

from __future__ import annotations

import asyncio
from typing import Any

from spiff.connector.example.v1 import example_pb2, example_pb2_grpc


class ExampleService(example_pb2_grpc.ExampleServiceServicer):
    async def Example(self, request: example_pb2.ExampleRequest, context: Any) -> example_pb2.ExampleResponse:
        return example_pb2.ExampleResponse(
            connector_response=f"You passed the example connector: '{request.message}'. Have a good day!",
            message=request.message,
        )

    async def Delay(self, request: example_pb2.DelayRequest, context: Any) -> example_pb2.DelayResponse:
        seconds = request.seconds  # 0 to 86400: declared in the proto, checked before this runs
        await asyncio.sleep(seconds)
        return example_pb2.DelayResponse(message=request.message, waited_seconds=seconds)
