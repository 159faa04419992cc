"""Example connector: echoes a message, calling nothing (smoke tests, demos, benchmarks)."""

from __future__ import annotations

from typing import Any

from spiff.connector.example.v1 import example_pb2, example_pb2_grpc


class ExampleService(example_pb2_grpc.ExampleServiceServicer):
    async def Example(self, request: example_pb2.ExampleRequest, context: Any) -> example_pb2.ExampleResponse:
        return example_pb2.ExampleResponse(
            connector_response=f"You passed the example connector: '{request.message}'. Have a good day!",
            message=request.message,
        )
