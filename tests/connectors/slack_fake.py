"""A fake Slack Web API on 127.0.0.1 for the slack connector's tests, run in a background thread.

``POST <prefix>/api/chat.postMessage`` (any prefix) behaves like Slack for a bot token:

    no Authorization            200 {"ok": false, "error": "not_authed"}
    Bearer other than TOKEN     200 {"ok": false, "error": "invalid_auth"}
    unknown channel             200 {"ok": false, "error": "channel_not_found"}
    no text and no blocks       200 {"ok": false, "error": "no_text"}
    a block without "type"      200 {"ok": false, "error": "invalid_blocks",
                                     "response_metadata": {"messages": [...]}}
    otherwise                   200 {"ok": true, "channel": <id>, "ts": <new ts>, "message": {...}}

The body may be JSON (``application/json``; without ``charset=utf-8`` Slack adds the warning
missing_charset) or a form (``blocks`` as JSON text), as Slack accepts both.

Canned answers (:meth:`FakeSlack.queue`) are given to the next calls, in order, before that
behaviour: 429 with Retry-After, an HTML 502, a slow answer... Every request is recorded,
including requests a proxy forwards with an absolute URL. Any other path answers an HTML 404.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

TOKEN = "xoxb-1111-2222-FakeS3cr3tT0ken"
CHANNELS = {"C0123456789": "C0123456789", "#general": "C0123456789", "U0123ABCDEF": "D0123456789"}


@dataclass(frozen=True)
class Canned:
    """One prepared answer."""

    status: int = 200
    body: Any = None  # JSON-able, or str/bytes sent as they are
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Recorded:
    """One request as the fake saw it."""

    target: str  # the request line's target: a path, or an absolute URL through a proxy
    path: str
    headers: dict[str, str]  # names in lower case
    content_type: str
    payload: dict[str, Any]  # the JSON object, or the form with blocks parsed


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.canned: deque[Canned] = deque()
        self.requests: list[Recorded] = []
        self.next_ts = 1712345678_000100

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeouts) leaves a broken pipe behind: expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not path.endswith("/api/chat.postMessage"):
            self._send(404, "<html><body><h1>404 Not Found</h1></body></html>", "text/html")
            return
        content_type = self.headers.get("Content-Type", "")
        payload = _payload(content_type, raw)
        with self.server.lock:
            self.server.requests.append(
                Recorded(
                    target=self.path,
                    path=path,
                    headers={name.lower(): value for name, value in self.headers.items()},
                    content_type=content_type,
                    payload=payload,
                )
            )
            canned = self.server.canned.popleft() if self.server.canned else None
        if canned is not None:
            time.sleep(canned.delay)
            body = canned.body
            text = body if isinstance(body, str | bytes) else json.dumps(body)
            self._send(canned.status, text, canned.content_type, canned.headers)
            return
        reply = self._slack(payload)
        if content_type.startswith("application/json") and "charset=utf-8" not in content_type.lower():
            reply |= {"warning": "missing_charset", "response_metadata": {"warnings": ["missing_charset"]}}
        self._send(200, json.dumps(reply))

    def do_GET(self) -> None:
        self._send(404, "<html><body><h1>404 Not Found</h1></body></html>", "text/html")

    def _slack(self, payload: dict[str, Any]) -> dict[str, Any]:
        auth = self.headers.get("Authorization")
        if auth is None:
            return {"ok": False, "error": "not_authed"}
        if auth != f"Bearer {TOKEN}":
            return {"ok": False, "error": "invalid_auth"}
        channel = CHANNELS.get(str(payload.get("channel")))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        blocks = payload.get("blocks")
        if not payload.get("text") and not blocks:
            return {"ok": False, "error": "no_text"}
        if blocks is not None:
            bad = [i for i, block in enumerate(blocks) if not isinstance(block, dict) or "type" not in block]
            if bad:
                messages = [f"[ERROR] missing required field: type [json-pointer:/blocks/{i}]" for i in bad]
                return {"ok": False, "error": "invalid_blocks", "response_metadata": {"messages": messages}}
        with self.server.lock:
            self.server.next_ts += 1
            number = self.server.next_ts
        ts = f"{number // 1_000_000}.{number % 1_000_000:06d}"
        message: dict[str, Any] = {
            "type": "message",
            "user": "U0BOT00001",
            "bot_id": "B0BOT00001",
            "text": payload.get("text", ""),
            "ts": ts,
        }
        if blocks:
            message["blocks"] = blocks
        if payload.get("thread_ts"):
            message["thread_ts"] = payload["thread_ts"]
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _send(
        self,
        status: int,
        body: str | bytes,
        content_type: str = "application/json; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _payload(content_type: str, raw: bytes) -> dict[str, Any]:
    if content_type.startswith("application/json"):
        value = json.loads(raw or b"{}")
        return value if isinstance(value, dict) else {"_not_an_object": value}
    form: dict[str, Any] = dict(parse_qsl(raw.decode()))
    if "blocks" in form:
        form["blocks"] = json.loads(form["blocks"])
    return form


class FakeSlack:
    """Starts the fake on an OS-assigned port; use as a context manager."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-slack", daemon=True
        )
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.api_url = f"{self.origin}/api/"

    @property
    def requests(self) -> list[Recorded]:
        with self._server.lock:
            return list(self._server.requests)

    def queue(self, *answers: Canned) -> None:
        """Answers for the next calls, in order."""
        with self._server.lock:
            self._server.canned.extend(answers)

    def reset(self) -> None:
        with self._server.lock:
            self._server.canned.clear()
            self._server.requests.clear()

    def __enter__(self) -> FakeSlack:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
