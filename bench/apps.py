"""The comparison systems, each run in its own process with the proxy's uvicorn settings.

``python -m bench.apps floor --port N --do-body FILE --commands-body FILE``
    The framework floor: a bare Starlette app whose POST ``/v1/do/{connector}/{command}``
    reads the body and returns the bytes of the proxy's ``example/Example`` reply, and whose
    ``GET /v1/commands`` returns the bytes of the proxy's catalogue. No parsing, no dispatch.

``python -m bench.apps target --port N``
    The upstream of the http connector: a bare ASGI app answering ``GET /json`` with a small
    JSON body, as fast as uvicorn can serve it; for the soak (``bench.soak``) also ``POST /echo``
    (the size of the body it read) and a stand-in for Slack's ``POST /api/chat.postMessage``.

``python -m bench.apps receiver --port N --api-key KEY``
    The jobs benchmark's stand-in for spiff-arena's callback route: a bare ASGI app answering
    200 to ``PUT /v1.0/tasks/{instance}/{task}/callback`` and recording when each task's
    callbacks arrived (see :class:`CallbackReceiver` for the routes the load generator reads).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["TARGET_BODY", "CallbackReceiver", "floor_app", "target_app"]

TARGET_BODY = b'{"id":42,"name":"bench","ok":true,"tags":["a","b","c"],"price":12.5}'
_LIVE = b'{"ok":true}'
_SLACK_OK = b'{"ok":true,"channel":"C0123456789","ts":"1712345678.000100","message":{"type":"message"}}'
_SLACK_NOT_AUTHED = b'{"ok":false,"error":"not_authed"}'
_CALLBACK = re.compile(r"/v1\.0/tasks/[^/]+/([^/]+)/callback")
_WAIT = re.compile(r"/bench/wait/([^/]+)")

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
    """``GET /json`` and ``GET /liveness`` answer 200 with JSON; ``POST /echo`` 200 with the size
    of the body read; ``POST /api/chat.postMessage`` Slack's ``ok`` reply when the request carries
    a bearer token (else Slack's ``not_authed``); anything else 404."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/json":
        status, body = 200, TARGET_BODY
    elif path == "/liveness":
        status, body = 200, _LIVE
    elif scope["method"] == "POST" and path == "/echo":
        status, body = 200, b'{"received":%d}' % len(await _read_body(receive))
    elif scope["method"] == "POST" and path == "/api/chat.postMessage":
        await _read_body(receive)
        authorized = dict(scope["headers"]).get(b"authorization", b"").startswith(b"Bearer ")
        status, body = 200, _SLACK_OK if authorized else _SLACK_NOT_AUTHED
    else:
        status, body = 404, b'{"error":"not found"}'
    await send({"type": "http.response.start", "status": status, "headers": _headers(body)})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _reply(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _headers(body)})
    await send({"type": "http.response.body", "body": body})


def _successful_envelope(body: bytes) -> bool:
    """Whether ``body`` is the v2 envelope of a command that succeeded (``http_status`` 200)."""
    try:
        envelope = json.loads(body)
        return envelope["error"] is None and envelope["command_response"]["http_status"] == 200
    except (ValueError, KeyError, TypeError):
        return False


class CallbackReceiver:
    """spiff-arena's callback route, as far as the jobs benchmark needs it (one process, one loop).

    Routes:

    * ``PUT /v1.0/tasks/{instance}/{task}/callback``: 200 ``{"ok":true}``; records the arrival
      time (``time.monotonic()``, the system-wide CLOCK_MONOTONIC, so comparable with the load
      generator's clock) under ``task``, and marks the task bad when the callback lacks the API
      key or is not a successful command's envelope (it is answered 200 all the same, so that a
      bad callback is counted rather than retried).
    * ``GET /bench/wait/{task}?timeout=S``: waits up to S seconds for the task's first callback;
      answers ``{"arrivals": [t, ...]}`` (empty when none came).
    * ``GET /bench/stats``: ``{"callbacks": all received, "bad": tasks marked bad, "held": tasks
      recorded and not taken yet}``.
    * ``POST /bench/take`` with a JSON list of task ids: ``{"arrivals": {task: [t, ...]}, "bad":
      [task, ...]}`` for those of them that were called back; they are forgotten, so anything
      that arrives later for them (a late duplicate) is held again and shows in ``held``.
    * ``GET /liveness``: 200.
    """

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key.encode()
        self.arrivals: dict[str, list[float]] = {}
        self.bad: set[str] = set()
        self.callbacks = 0
        self._waiters: dict[str, asyncio.Event] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        arrived = time.monotonic()
        method, path = scope["method"], scope["path"]
        callback = _CALLBACK.fullmatch(path)
        wait = _WAIT.fullmatch(path)
        if method == "PUT" and callback:
            self._record(callback[1], arrived, scope, await _read_body(receive))
            await _reply(send, 200, _LIVE)
        elif method == "GET" and wait:
            query = parse_qs(scope.get("query_string", b"").decode())
            timeout = float(query.get("timeout", ["10"])[0])
            await _reply(send, 200, await self._wait(wait[1], timeout))
        elif method == "POST" and path == "/bench/take":
            await _reply(send, 200, self._take(json.loads(await _read_body(receive))))
        elif path == "/bench/stats":
            stats = {"callbacks": self.callbacks, "bad": len(self.bad), "held": len(self.arrivals)}
            await _reply(send, 200, json.dumps(stats).encode())
        elif path == "/liveness":
            await _reply(send, 200, _LIVE)
        else:
            await _reply(send, 404, b'{"error":"not found"}')

    def _record(self, task: str, arrived: float, scope: Scope, body: bytes) -> None:
        self.callbacks += 1
        self.arrivals.setdefault(task, []).append(arrived)
        key = dict(scope["headers"]).get(b"spiffworkflow-api-key")
        if key != self.api_key or not _successful_envelope(body):
            self.bad.add(task)
        waiter = self._waiters.pop(task, None)
        if waiter is not None:
            waiter.set()

    async def _wait(self, task: str, timeout: float) -> bytes:
        if task not in self.arrivals:
            waiter = self._waiters.setdefault(task, asyncio.Event())
            try:
                await asyncio.wait_for(waiter.wait(), timeout)
            except TimeoutError:
                self._waiters.pop(task, None)
        return json.dumps({"arrivals": self.arrivals.get(task, [])}).encode()

    def _take(self, tasks: list[str]) -> bytes:
        arrivals = {task: self.arrivals.pop(task) for task in tasks if task in self.arrivals}
        bad = [task for task in arrivals if task in self.bad]
        self.bad.difference_update(bad)
        return json.dumps({"arrivals": arrivals, "bad": bad}).encode()


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
    receiver = sub.add_parser("receiver", help="the jobs benchmark's callback receiver")
    receiver.add_argument("--port", type=int, required=True)
    receiver.add_argument("--api-key", required=True, help="the SpiffWorkflow-Api-Key callbacks must carry")
    args = parser.parse_args()
    if args.app == "floor":
        _serve(floor_app(args.do_body.read_bytes(), args.commands_body.read_bytes()), args.port, "on")
    elif args.app == "receiver":
        _serve(CallbackReceiver(args.api_key), args.port, "off")
    else:
        _serve(target_app, args.port, "off")


if __name__ == "__main__":
    main()
