"""A gRPC port with room for one call: the second is refused at once, then admitted again."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from spiff.connector.example.v1 import example_pb2, example_pb2_grpc

from server.admission import Admission
from server.wire import STATUS_DETAILS_KEY
from tests.conftest import until

__all__ = ["one_call_at_a_time"]


async def one_call_at_a_time(port: int, admission: Admission) -> None:
    """While ``example/Delay`` holds the only place of ``admission``, ``example/Example`` on
    ``port`` is refused UNAVAILABLE with ErrorInfo ProxyBusy and a 1 s RetryInfo; once the held call
    is answered, it is served."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = example_pb2_grpc.ExampleServiceStub(channel)  # type: ignore[no-untyped-call]
        held = asyncio.ensure_future(stub.Delay(example_pb2.DelayRequest(seconds=1, message="m"), timeout=5))
        await until(lambda: admission.calls == 1, 5)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Example(example_pb2.ExampleRequest(message="hi"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        details = next(v for k, v in refused.value.trailing_metadata() or () if k == STATUS_DETAILS_KEY)
        status = status_pb2.Status.FromString(details)
        info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(info)
        assert info.reason == "ProxyBusy"
        assert any(d.Unpack(retry) for d in status.details)
        assert retry.retry_delay.seconds == 1
        assert (await held).waited_seconds == 1
        assert (await stub.Example(example_pb2.ExampleRequest(message="hi"), timeout=5)).message == "hi"
