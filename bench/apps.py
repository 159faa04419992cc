"""The comparison systems, each run in its own process with the proxy's uvicorn settings.

``python -m bench.apps floor --port N --do-body FILE --commands-body FILE``
    The framework floor: a bare Starlette app whose POST ``/v1/do/{connector}/{command}``
    reads the body and returns the bytes of the proxy's ``example/Example`` reply, and whose
    ``GET /v1/commands`` returns the bytes of the proxy's catalogue. No parsing, no dispatch.

``python -m bench.apps target --port N``
    The upstream of the http connector: a bare ASGI app answering ``GET /json`` with a small
    JSON body, as fast as uvicorn can serve it.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["TARGET_BODY", "floor_app", "target_app"]

TARGET_BODY = b'{"id":42,"name":"bench","ok":true,"tags":["a","b","c"],"price":12.5}'
_LIVE = b'{"ok":true}'

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _JSONResponse(Response):
    media_type = "application/json"


def floor_app(do_body: bytes, commands_body: bytes) -> Starlette:
    """A bare Starlette app with the proxy's routes and canned replies."""

    async def liveness(request: Request) -> Response:
        return _JSONResponse(_LIVE)

    async def commands(request: Request) -> Response:
        return _JSONResponse(commands_body)

    async def do(request: Request) -> Response:
        await request.body()
        return _JSONResponse(do_body)

    return Starlette(
        routes=[
            Route("/liveness", liveness),
            Route("/v1/commands", commands),
            Route("/v1/do/{connector}/{command}", do, methods=["POST"]),
        ]
    )


def _headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


async def target_app(scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /json`` and ``GET /liveness`` answer 200 with JSON; anything else 404."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/json":
        status, body = 200, TARGET_BODY
    elif path == "/liveness":
        status, body = 200, _LIVE
    else:
        status, body = 404, b'{"error":"not found"}'
    await send({"type": "http.response.start", "status": status, "headers": _headers(body)})
    await send({"type": "http.response.body", "body": body})


def _serve(app: Any, port: int, lifespan: Literal["on", "off"]) -> None:
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan=lifespan,
        access_log=False,
        log_level="warning",
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.apps", description=__doc__)
    sub = parser.add_subparsers(dest="app", required=True)
    floor = sub.add_parser("floor", help="the bare Starlette floor")
    floor.add_argument("--port", type=int, required=True)
    floor.add_argument("--do-body", type=Path, required=True)
    floor.add_argument("--commands-body", type=Path, required=True)
    target = sub.add_parser("target", help="the http connector's upstream")
    target.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.app == "floor":
        _serve(floor_app(args.do_body.read_bytes(), args.commands_body.read_bytes()), args.port, "on")
    else:
        _serve(target_app, args.port, "off")


if __name__ == "__main__":
    main()
