"""The gRPC load generator: ``ExampleService/Example`` over one grpc.aio channel.

``python -m bench.grpc_load --target 127.0.0.1:PORT -c 16 -d 3``

``-c`` coroutines each keep one call in flight, issuing the next as soon as the last one
returns (closed loop, like wrk's connections). A Python client costs about as much CPU per
call as the server does, so at ``-c 16`` on two cores the client is part of what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import grpc
from spiff.connector.example.v1 import example_pb2, example_pb2_grpc

from bench.load import RESULT_PREFIX, percentile

__all__ = ["main"]


async def _run(target: str, concurrency: int, duration: float, message: str) -> dict[str, float]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = example_pb2_grpc.ExampleServiceStub(channel)  # type: ignore[no-untyped-call]
        request = example_pb2.ExampleRequest(message=message)
        await stub.Example(request, timeout=10)  # connect before the clock starts
        latencies: list[float] = []
        errors = 0
        start = time.perf_counter()
        deadline = start + duration

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    await stub.Example(request, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(latencies),
        "duration_s": elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_load", description=__doc__)
    parser.add_argument("--target", required=True, help="host:port of the gRPC server")
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument("-d", "--duration", type=float, default=3.0)
    parser.add_argument("--message", default="hi")
    args = parser.parse_args()
    result = asyncio.run(_run(args.target, args.concurrency, args.duration, args.message))
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
