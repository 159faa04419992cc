"""A fake spiff-arena backend on loopback that records callbacks and answers as a test scripts it.

Each request takes the next scripted answer (then ``default``): ``"200"`` (completed),
``"200:retry"`` (retry_scheduled), ``"400"`` (not_waiting_for_callback), ``"400:<error_code>"``,
``"401"``, ``"403"`` (not_authorized), ``"404"``, ``"500"`` (instance locked), ``"drop"`` (the
connection is closed without an answer), or ``"hang"`` (no answer until the caller goes away,
30 s at most). Answers follow spec §4.4, RFC 7807-style bodies included.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Callback:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _problem(status: int, code: str, message: str) -> dict[str, Any]:
    return {
        "type": "about:blank",
        "title": code,
        "detail": message,
        "status": status,
        "error_code": code,
        "message": message,
    }


def _answer(action: str) -> tuple[int, dict[str, Any]] | None:
    status_text, _, code = action.partition(":")
    if status_text == "drop":
        return None
    status = int(status_text)
    if status == 200:
        if code == "retry":
            return 200, {"ok": True, "status": "retry_scheduled", "retries_remaining": 2}
        return 200, {"ok": True, "status": "completed", "process_instance_id": 42}
    defaults = {
        400: ("not_waiting_for_callback", "This process instance is not waiting for a callback."),
        401: ("invalid_token", "The token is not valid."),
        403: ("not_authorized", "User is not authorized to perform this action."),
        404: ("not_found", "No route."),
        500: ("internal_server_error", "The process instance is locked."),
    }
    default_code, message = defaults.get(status, ("error", "An error."))
    return status, _problem(status, code or default_code, message)


class FakeSpiff:
    """``with FakeSpiff() as spiff:`` serves on ``spiff.url`` until the block ends."""

    def __init__(self, default: str = "200") -> None:
        self.default = default
        self.calls: list[Callback] = []
        self._script: deque[str] = deque()
        self._changed = threading.Condition()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection

            def do_PUT(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                call = Callback(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                with fake._changed:
                    action = fake._script.popleft() if fake._script else fake.default
                    fake.calls.append(call)
                    fake._changed.notify_all()
                if action == "hang":
                    self.connection.settimeout(30)
                    with contextlib.suppress(OSError):
                        self.rfile.read(1)  # returns when the caller closes the connection
                answer = None if action == "hang" else _answer(action)
                if answer is None:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.wfile = io.BytesIO()  # what the handler still writes goes nowhere
                    return
                status, payload = answer
                data = json.dumps(payload).encode()
                content_type = "application/json" if status == 200 else "application/problem+json"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), name="fake-spiff", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def script(self, *actions: str) -> None:
        with self._changed:
            self._script.extend(actions)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Callback]:
        """Blocks until ``count`` callbacks arrived; returns them all."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.calls) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    msg = f"{len(self.calls)} callback(s) after {timeout} s, expected {count}"
                    raise AssertionError(msg)
                self._changed.wait(remaining)
            return list(self.calls)

    def __enter__(self) -> FakeSpiff:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
