"""A real HTTP server on 127.0.0.1 for the http connector's tests, run in a background thread.

Routes (any method):
    /json              JSON with integers beyond 2**53 and non-ASCII text
    /text              text/plain
    /latin1            text/plain; charset=latin-1
    /xml, /atom        application/xml, application/atom+xml
    /badjson, /nan     application/json that does not parse (strictly)
    /empty             204
    /redirect          302 to /json;  /loop: 302 to itself;  /ftp: 302 to an ftp:// URL
    /missing           404 application/problem+json
    /status/<n>        status n with a JSON body
    /flaky/<key>?fail=<n>   503 for the first n hits of <key>, then 200 (hits are counted per key)
    /slow?seconds=<s>  answers after s seconds
    /basic             200 for Authorization "Basic user:pass" (see BASIC_*), else 401
    /echo              the request as JSON: method, path, query pairs, headers, body
    /headers           JSON with X-Single once and X-Multi twice
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

BASIC_USER = "alice"
BASIC_PASSWORD = "pw-S3cr3t-value"

BIG = 12345678901234567890123
EDGE = 2**53 + 1
JSON_TEXT = f'{{"big": {BIG}, "edge": {EDGE}, "ratio": 0.5, "list": [1, 2, 3], "text": "héllo"}}'
XML_TEXT = '<root><item id="1">a</item><item>b</item></root>'


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeouts) leaves a broken pipe behind: expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _send(
        self, status: int, body: bytes | str = b"", content_type: str = "application/json", **extra: Any
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
        for name, values in extra.items():
            for value in values if isinstance(values, list) else [values]:
                self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD" and status != 204:
            self.wfile.write(data)

    def _json(self, status: int, value: Any, **extra: Any) -> None:
        self._send(status, json.dumps(value), **extra)

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        path, query = parts.path, dict(parse_qsl(parts.query))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if path == "/json":
            self._send(200, JSON_TEXT)
        elif path == "/text":
            self._send(200, "hello, world", "text/plain")
        elif path == "/latin1":
            self._send(200, "café".encode("latin-1"), "text/plain; charset=latin-1")
        elif path == "/xml":
            self._send(200, XML_TEXT, "application/xml")
        elif path == "/atom":
            self._send(200, XML_TEXT, "application/atom+xml")
        elif path == "/badjson":
            self._send(200, "{not json", "application/json")
        elif path == "/nan":
            self._send(200, '{"x": NaN}', "application/json")
        elif path == "/empty":
            self._send(204)
        elif path == "/redirect":
            self._send(302, "", "text/plain", Location="/json")
        elif path == "/ftp":
            self._send(302, "", "text/plain", Location="ftp://example.com/file")
        elif path == "/loop":
            self._send(302, "", "text/plain", Location="/loop")
        elif path == "/missing":
            self._send(404, '{"title": "no such item", "id": 7}', "application/problem+json")
        elif path.startswith("/status/"):
            status = int(path.removeprefix("/status/"))
            self._json(status, {"status": status})
        elif path.startswith("/flaky/"):
            key = path.removeprefix("/flaky/")
            with self.server.lock:
                self.server.hits[key] += 1
                hits = self.server.hits[key]
            if hits <= int(query.get("fail", "0")):
                self._json(503, {"hit": hits})
            else:
                self._json(200, {"hit": hits})
        elif path == "/slow":
            time.sleep(float(query.get("seconds", "2")))
            self._json(200, {"slow": True})
        elif path == "/basic":
            expected = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") == f"Basic {expected}":
                self._json(200, {"authenticated": True})
            else:
                self._json(401, {"authenticated": False}, WWW_Authenticate='Basic realm="test"')
        elif path == "/echo":
            self._json(
                200,
                {
                    "method": self.command,
                    "path": path,
                    "query": parse_qsl(parts.query, keep_blank_values=True),
                    "headers": {name.lower(): value for name, value in self.headers.items()},
                    "content_types": self.headers.get_all("Content-Type") or [],
                    "body": body.decode(),
                },
            )
        elif path == "/headers":
            self._json(200, {"ok": True}, X_Single="one", X_Multi=["a", "b"])
        else:
            self._json(404, {"error": f"no route {path}"})


class HttpTarget:
    """Starts the server on an OS-assigned port; use as a context manager."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="http-target", daemon=True
        )
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def hits(self, key: str) -> int:
        with self._server.lock:
            return self._server.hits[key]

    def __enter__(self) -> HttpTarget:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
