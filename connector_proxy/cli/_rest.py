"""The proxy's REST API as the command line calls it: one request, its JSON answer.

The standard library's ``http.client`` is enough for one request at a time, and it never follows a
redirect, so the API key goes to the proxy named and nowhere else.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connector_proxy.cli._errors import Unreachable, key_refused

__all__ = ["API_KEY_HEADER", "Answer", "RestClient", "check_url", "error_of"]

API_KEY_HEADER = "Spiff-Connector-Proxy-Api-Key"


@dataclass(frozen=True)
class Answer:
    """The proxy's answer: its HTTP status and its JSON."""

    status: int
    payload: Any


def check_url(url: str) -> urllib.parse.SplitResult:
    """The parts of an absolute http(s) URL.

    Raises:
        ValueError: it is not one.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        msg = f"{url!r} is not an http:// or https:// URL"
        raise ValueError(msg)
    return parts


def error_of(payload: Any) -> tuple[str, str] | None:
    """``(error_code, message)`` of an answer that carries an error (an envelope or a plain error)."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return str(error.get("error_code") or "Error"), str(error.get("message") or "")
    return None


class RestClient:
    """Requests to the proxy at ``url`` (its path prefix included), with the API key when given."""

    def __init__(self, url: str, api_key: str | None, timeout: float) -> None:
        self.url = url.rstrip("/")
        self._parts = check_url(url)
        self._api_key = api_key
        self._timeout = timeout

    def get(self, path: str, query: Mapping[str, str] | None = None) -> Answer:
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        return self.request("GET", path)

    def post(self, path: str, body: Any = None, headers: Mapping[str, str] | None = None) -> Answer:
        return self.request("POST", path, body, headers)

    def request(
        self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> Answer:
        """One request; the answer's JSON whatever its status.

        Raises:
            Unreachable: no answer, or one that is not JSON.
            Unauthorized: the proxy refused the API key.
        """
        sent = {"Accept": "application/json", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False, allow_nan=False).encode()
            sent["Content-Type"] = "application/json"
        if self._api_key:
            sent[API_KEY_HEADER] = self._api_key
        kind = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
        connection = kind(self._parts.hostname or "", self._parts.port, timeout=self._timeout)
        try:
            connection.request(method, self._parts.path.rstrip("/") + path, body=data, headers=sent)
            response = connection.getresponse()
            status, raw = response.status, response.read()
        except TimeoutError:
            msg = f"the proxy at {self.url} did not answer within {self._timeout:g} s"
            raise Unreachable(msg) from None
        except (OSError, http.client.HTTPException) as exc:
            msg = f"cannot reach the proxy at {self.url}: {exc}"
            raise Unreachable(msg) from None
        finally:
            connection.close()
        try:
            payload = json.loads(raw)
        except ValueError:
            msg = f"{self.url} answered {method} {path} with {status} and no JSON: is it the proxy?"
            raise Unreachable(msg) from None
        if status == 401 and isinstance(payload, dict) and payload.get("error") == "Unauthorized":
            raise key_refused(self._api_key)
        return Answer(status, payload)
