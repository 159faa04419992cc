"""The fallback HTTP load generator, for when wrk cannot be installed.

``python -m bench.pyload --url URL [--method POST --body JSON] -c 16 -d 3``

Keep-alive HTTP/1.1 over ``-c`` connections on uvloop, each sending its next request as soon
as the previous reply is read, like wrk. It is a Python client, so it saturates a core long
before wrk does: its numbers are lower bounds, and ratios between systems flatten.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit

from bench.load import RESULT_PREFIX, percentile

__all__ = ["content_length", "main", "request_bytes"]


def request_bytes(method: str, host: str, path: str, body: bytes | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


async def _worker(
    host: str, port: int, request: bytes, deadline: float, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(content_length(head))
            latencies.append(time.perf_counter() - started)
            if not head[9:12].startswith(b"2"):
                errors[0] += 1
    except (OSError, asyncio.IncompleteReadError):
        errors[0] += 1
    finally:
        writer.close()


async def _run(
    url: str, method: str, body: bytes | None, connections: int, duration: float
) -> dict[str, float]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    request = request_bytes(method, parts.netloc, path or "/", body)
    latencies: list[float] = []
    errors = [0]
    start = time.perf_counter()
    deadline = start + duration
    await asyncio.gather(
        *(_worker(host, port, request, deadline, latencies, errors) for _ in range(connections))
    )
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(latencies),
        "duration_s": elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "errors": errors[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pyload", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", default=None, help="the request body (sent as application/json)")
    parser.add_argument("-c", "--connections", type=int, default=16)
    parser.add_argument("-d", "--duration", type=float, default=3.0)
    args = parser.parse_args()
    body = args.body.encode() if args.body is not None else None
    try:
        import uvloop

        result = uvloop.run(_run(args.url, args.method, body, args.connections, args.duration))
    except ImportError:
        result = asyncio.run(_run(args.url, args.method, body, args.connections, args.duration))
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
