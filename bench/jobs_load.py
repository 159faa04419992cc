"""The jobs load generator: ``example/Delay`` jobs through ``POST /v1/do``, timed to their callbacks.

``python -m bench.jobs_load --port P --receiver-port R --callback-base URL -c 16 -d 3 --latency-duration 3``

The proxy's callbacks go to the receiver (``python -m bench.apps receiver``, another process),
which records when each one arrived. Every job has its own ``spiff__task_id`` (a uuid4), which
its callback URL carries, so each callback is matched to its POST. Two phases:

1. latency: one job at a time, each sent once the previous one's callback has arrived, for
   ``--latency-duration`` seconds: POST to callback with nothing queued.
2. burst: ``-c`` keep-alive connections, each POSTing its next job as soon as the previous 202
   is read (like wrk), for ``-d`` seconds; then it waits for the callbacks. Accepted per second
   is 202s over the sending time; drained per second is jobs called back over the time from the
   first POST to the last callback.

Anything but a 202 (or a socket error, or no answer within 10 s) is an error. Each task id's
callbacks are counted: none (missing), more than one (duplicates), a bad one (no API key, or not
a successful envelope), or one for a POST that was not answered 202 (unexpected). Both processes
read ``time.monotonic()``, the system-wide CLOCK_MONOTONIC. Prints one ``BENCH_RESULT`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import aiohttp

from bench.load import RESULT_PREFIX, percentile
from bench.pyload import content_length, request_bytes

__all__ = ["main"]

DO_PATH = "/v1/do/example/Delay"
REQUEST_TIMEOUT = 10.0
CALLBACK_TIMEOUT = 30.0  # seconds the latency phase waits for one job's callback
TAKE_BATCH = 5000


def job_body(task: str, callback_base: str) -> bytes:
    """A ``Delay`` of 0 s whose callback names ``task``."""
    return json.dumps(
        {
            "seconds": 0,
            "message": "x",
            "spiff__task_id": task,
            "spiff__callback_url": f"{callback_base}/v1.0/tasks/1/{task}/callback",
        },
        separators=(",", ":"),
    ).encode()


class ProxyConnection:
    """One keep-alive HTTP/1.1 connection to the proxy, opened on first use and after an error."""

    def __init__(self, port: int, callback_base: str) -> None:
        self.port = port
        self.callback_base = callback_base
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, task: str) -> int:
        """POSTs ``task``'s job: the HTTP status, or 0 for a socket error or a timeout."""
        request = request_bytes("POST", f"127.0.0.1:{self.port}", DO_PATH, job_body(task, self.callback_base))
        try:
            return await asyncio.wait_for(self._exchange(request), REQUEST_TIMEOUT)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            self.close()
            return 0

    async def _exchange(self, request: bytes) -> int:
        if self._streams is None:
            self._streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self._streams
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(content_length(head))
        return int(head[9:12])

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def _stats(receiver: aiohttp.ClientSession) -> dict[str, int]:
    async with receiver.get("/bench/stats") as response:
        stats: dict[str, int] = await response.json()
        return stats


async def _wait_callback(receiver: aiohttp.ClientSession, task: str) -> list[float]:
    async with receiver.get(f"/bench/wait/{task}", params={"timeout": str(CALLBACK_TIMEOUT)}) as response:
        arrivals: list[float] = (await response.json())["arrivals"]
        return arrivals


async def _take(receiver: aiohttp.ClientSession, tasks: list[str]) -> tuple[dict[str, list[float]], set[str]]:
    """The callbacks' arrival times of ``tasks`` (those called back), and those with a bad one."""
    arrivals: dict[str, list[float]] = {}
    bad: set[str] = set()
    for start in range(0, len(tasks), TAKE_BATCH):
        async with receiver.post("/bench/take", json=tasks[start : start + TAKE_BATCH]) as response:
            taken = await response.json()
        arrivals.update(taken["arrivals"])
        bad.update(taken["bad"])
    return arrivals, bad


def _callback_counts(accepted: list[str], arrivals: dict[str, list[float]], bad: set[str]) -> dict[str, int]:
    """Each accepted job must be called back exactly once, with a good callback, and no other job."""
    accepted_set = set(accepted)
    return {
        "delivered": sum(1 for task in accepted if task in arrivals),
        "missing": sum(1 for task in accepted if task not in arrivals),
        "duplicates": sum(len(times) - 1 for task, times in arrivals.items() if task in accepted_set),
        "bad": len(bad),
        "unexpected": sum(len(times) for task, times in arrivals.items() if task not in accepted_set),
    }


def _ms(values: list[float], pct: float) -> float:
    return round(percentile(sorted(values), pct) * 1000, 3)


async def latency_phase(
    port: int, receiver: aiohttp.ClientSession, callback_base: str, duration: float
) -> dict[str, Any]:
    """One job at a time for ``duration`` seconds: POST to callback, and POST to 202."""
    conn = ProxyConnection(port, callback_base)
    sent: list[str] = []
    accepted: list[str] = []
    starts: dict[str, float] = {}
    accept_latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + duration
    try:
        while time.monotonic() < deadline:
            task = str(uuid.uuid4())
            sent.append(task)
            starts[task] = time.monotonic()
            if await conn.post(task) != 202:
                errors += 1
                continue
            accept_latencies.append(time.monotonic() - starts[task])
            accepted.append(task)
            await _wait_callback(receiver, task)
    finally:
        conn.close()
    arrivals, bad = await _take(receiver, sent)
    latencies = [arrivals[task][0] - starts[task] for task in accepted if task in arrivals]
    return {
        "jobs": len(accepted),
        "errors": errors,
        "p50_ms": _ms(latencies, 50),
        "p99_ms": _ms(latencies, 99),
        "accept_p50_ms": _ms(accept_latencies, 50),
        **_callback_counts(accepted, arrivals, bad),
    }


async def _drain(receiver: aiohttp.ClientSession, before: int, expected: int, stall: float) -> bool:
    """Waits until ``expected`` more callbacks than ``before`` arrived, or none came for ``stall`` s."""
    seen, progress_at = before, time.monotonic()
    while True:
        count = (await _stats(receiver))["callbacks"]
        if count - before >= expected:
            return True
        now = time.monotonic()
        if count != seen:
            seen, progress_at = count, now
        elif now - progress_at > stall:
            return False
        await asyncio.sleep(0.05)


async def burst_phase(
    port: int,
    receiver: aiohttp.ClientSession,
    callback_base: str,
    connections: int,
    duration: float,
    stall: float,
) -> dict[str, Any]:
    """``connections`` closed loops of POSTs for ``duration`` seconds, then the drain."""
    before = (await _stats(receiver))["callbacks"]
    starts: dict[str, float] = {}
    accepted: list[str] = []
    errors = 0
    began = time.monotonic()
    deadline = began + duration

    async def worker() -> None:
        nonlocal errors
        conn = ProxyConnection(port, callback_base)
        try:
            while time.monotonic() < deadline:
                task = str(uuid.uuid4())
                starts[task] = time.monotonic()
                if await conn.post(task) == 202:
                    accepted.append(task)
                else:
                    errors += 1
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.monotonic() - began
    drained = await _drain(receiver, before, len(accepted), stall)
    arrivals, bad = await _take(receiver, list(starts))
    firsts = {task: arrivals[task][0] for task in accepted if task in arrivals}
    drain_s = max(firsts.values()) - min(starts.values()) if firsts else 0.0
    queued = [firsts[task] - starts[task] for task in firsts]
    return {
        "sent": len(starts),
        "accepted": len(accepted),
        "errors": errors,
        "duration_s": round(elapsed, 4),
        "accepted_rps": round(len(accepted) / elapsed, 1) if elapsed else 0.0,
        "drain_s": round(drain_s, 4),
        "drained_rps": round(len(firsts) / drain_s, 1) if drain_s else 0.0,
        "drained": drained,
        "queued_p50_ms": _ms(queued, 50),
        "queued_p99_ms": _ms(queued, 99),
        **_callback_counts(accepted, arrivals, bad),
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    async with aiohttp.ClientSession(f"http://127.0.0.1:{args.receiver_port}") as receiver:
        if args.latency_duration > 0:
            result["latency"] = await latency_phase(
                args.port, receiver, args.callback_base, args.latency_duration
            )
        if args.duration > 0:
            result["burst"] = await burst_phase(
                args.port, receiver, args.callback_base, args.connections, args.duration, args.stall
            )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.jobs_load", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="the proxy's REST port")
    parser.add_argument("--receiver-port", type=int, required=True, help="the callback receiver's port")
    parser.add_argument(
        "--callback-base", required=True, help="the base of the callback URLs sent (scheme://host:port)"
    )
    parser.add_argument("-c", "--connections", type=int, default=16)
    parser.add_argument("-d", "--duration", type=float, default=3.0, help="seconds of the burst, 0 for none")
    parser.add_argument(
        "--latency-duration", type=float, default=3.0, help="seconds of the latency phase, 0 for none"
    )
    parser.add_argument(
        "--stall", type=float, default=30.0, help="seconds without a callback before the drain gives up"
    )
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(_run(args))
    else:
        result = uvloop.run(_run(args))
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
