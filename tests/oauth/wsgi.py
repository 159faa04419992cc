"""A WSGI app (the tests' Flask stand-ins) served by werkzeug on 127.0.0.1:<free port> in a thread."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from werkzeug.serving import make_server

__all__ = ["serving"]


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serves ``app`` while the block runs; yields its base URL."""
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_port}"
    finally:
        http.shutdown()
        thread.join(5)
