"""A command's parameters validated (every bad one reported at once) into the request to send:
the URL and its redacted form for logs, headers, query pairs, the encoded body, basic auth, attempts
and timeout."""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple, Protocol, TypeGuard
from urllib.parse import urlencode

import aiohttp
from multidict import CIMultiDict
from spiff.connector.v1 import types_pb2
from yarl import URL

from connectors._egress import is_host_name
from server import access_token, errors, json_values, log

__all__ = ["DEFAULT_TIMEOUT", "MAX_ATTEMPTS", "Outgoing", "Request", "prepare"]

DEFAULT_TIMEOUT = 30.0
MAX_ATTEMPTS = 10
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NO_DEFAULT_CONTENT_TYPE = frozenset({"Content-Type"})  # for requests without a body


class Request(Protocol):
    """The parameters every http command has."""

    DESCRIPTOR: Any  # the message type's descriptor
    url: str
    headers: types_pb2.JsonValue
    params: types_pb2.JsonValue
    basic_auth_username: str
    basic_auth_password: str
    oauth2_token_set: str
    include_response_headers: bool
    timeout: float

    def HasField(self, field_name: str) -> bool: ...


class _RetryingRequest(Request, Protocol):
    attempts: int


class _BodyRequest(Request, Protocol):
    data: types_pb2.JsonValue
    body_format: str


# Asked of the message type: hasattr on a protobuf message costs an exception when it says no.
def _retries(request: Request) -> TypeGuard[_RetryingRequest]:
    return "attempts" in request.DESCRIPTOR.fields_by_name


def _has_body(request: Request) -> TypeGuard[_BodyRequest]:
    return "data" in request.DESCRIPTOR.fields_by_name


class Outgoing(NamedTuple):
    """A validated request, ready to send (possibly several times)."""

    method: str
    url: URL
    headers: CIMultiDict[str]
    params: list[tuple[str, str]]
    body: bytes | None
    skip_auto_headers: frozenset[str] | None
    attempts: int
    timeout: float
    include_headers: bool
    target: str  # method and URL without query, fragment or credentials: safe for logs and messages


def prepare(method: str, request: Request) -> Outgoing:
    """Validates the parameters, reporting every bad one at once."""
    bad: list[errors.Violation] = []
    url = _url(request.url, bad)
    headers = _headers(json_values.load_parameter(request.headers, "headers", bad), bad)
    params = json_values.load_parameter(request.params, "params", bad)
    if params is not None and not isinstance(params, dict):
        bad.append(errors.Violation("params", "must be an object"))
    body = None
    skip_auto_headers = None
    if _has_body(request):
        body_format = request.body_format if request.HasField("body_format") else "json"
        body = _encode_body(json_values.load_parameter(request.data, "data", bad), body_format, headers, bad)
        if body is None:  # else aiohttp gives POST, PUT and PATCH an application/octet-stream one
            skip_auto_headers = _NO_DEFAULT_CONTENT_TYPE  # (only then: skipping costs a header copy)
    if request.basic_auth_password:
        if "Authorization" in headers:
            bad.append(
                errors.Violation("basic_auth_password", "cannot be combined with an Authorization header")
            )
        elif ":" in request.basic_auth_username:
            bad.append(errors.Violation("basic_auth_username", "must not contain ':'"))
        else:
            headers["Authorization"] = aiohttp.encode_basic_auth(
                request.basic_auth_username, request.basic_auth_password
            )
    if request.oauth2_token_set:
        if "Authorization" in headers:
            problem = "cannot be combined with basic auth or an Authorization header"
            bad.append(errors.Violation("oauth2_token_set", problem))
        else:  # the server has checked the set, and refreshed it if it had expired
            headers["Authorization"] = f"Bearer {access_token(request.oauth2_token_set)}"
    if url is not None and (url.user or url.password) and "Authorization" in headers:
        bad.append(errors.Violation("url", "has credentials, which cannot be combined with other auth"))
    timeout = request.timeout if request.HasField("timeout") else DEFAULT_TIMEOUT
    if not (math.isfinite(timeout) and timeout > 0):
        bad.append(errors.Violation("timeout", "must be a number of seconds greater than 0"))
    if bad or url is None:
        problems = "; ".join(f"{v.field} {v.description}" for v in bad)
        message_text = f"Invalid parameters: {problems}."
        raise errors.InvalidParameters(message_text, violations=bad)
    return Outgoing(
        method=method,
        url=url,
        headers=headers,
        params=_pairs(params) if isinstance(params, dict) else [],
        body=body,
        skip_auto_headers=skip_auto_headers,
        attempts=_attempts(request) if _retries(request) else 1,
        timeout=timeout,
        include_headers=request.include_response_headers,
        target=f"{method} {_redacted(url)}",
    )


def _url(text: str, bad: list[errors.Violation]) -> URL | None:
    try:
        url = URL(text.strip())
    except (TypeError, ValueError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        bad.append(errors.Violation("url", "must be an absolute http:// or https:// URL"))
        return None
    if not is_host_name(url.raw_host or ""):
        bad.append(
            errors.Violation("url", "has a host name that cannot be looked up (an empty or over-long label)")
        )
        return None
    return url


def _redacted(url: URL) -> str:
    """The URL without credentials, query or fragment (building new URLs only if it has some)."""
    if url.raw_user is not None or url.raw_password is not None or url.raw_query_string or url.raw_fragment:
        url = url.with_user(None).with_query(None).with_fragment(None)
    return str(url)


def _text(value: Any) -> str:
    """A header, query or form value as text: JSON's spelling for booleans, lists and objects."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json_values.dumps(value)


def _pairs(values: dict[str, Any]) -> list[tuple[str, str]]:
    """Query or form pairs: a list repeats its key, null is left out."""
    pairs = []
    for key, value in values.items():
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                pairs.append((key, _text(item)))
    return pairs


def _headers(value: Any, bad: list[errors.Violation]) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    if value is None:
        return headers
    if not isinstance(value, dict):
        bad.append(errors.Violation("headers", "must be an object of header names to values"))
        return headers
    for name, item in value.items():
        if item is None:
            continue
        text = _text(item)
        if not _HEADER_NAME.fullmatch(name):
            bad.append(errors.Violation(f"headers[{name!r}]", "is not a valid header name"))
        elif any(char in text for char in "\r\n\0"):
            bad.append(errors.Violation(f"headers[{name!r}]", "must not contain line breaks"))
        else:
            headers[name] = text
    return headers


def _encode_body(
    data: Any, body_format: str, headers: CIMultiDict[str], bad: list[errors.Violation]
) -> bytes | None:
    """The request body, setting a Content-Type unless the caller gave one."""
    if body_format == "none" or data is None:
        return None
    if body_format == "json":
        text, content_type = json_values.dumps(data), "application/json"
    elif body_format == "form":
        if not isinstance(data, dict):
            bad.append(errors.Violation("data", "must be an object when body_format is form"))
            return None
        text, content_type = urlencode(_pairs(data)), "application/x-www-form-urlencoded"
    elif body_format == "raw":
        text = data if isinstance(data, str) else json_values.dumps(data)
        content_type = "text/plain; charset=utf-8"
    else:
        bad.append(errors.Violation("body_format", "must be one of json, form, raw, none"))
        return None
    headers.setdefault("Content-Type", content_type)
    return text.encode()


def _attempts(request: _RetryingRequest) -> int:
    wanted = request.attempts if request.HasField("attempts") else 1
    attempts = min(max(wanted, 1), MAX_ATTEMPTS)
    if attempts != wanted:
        log(f"attempts must be between 1 and {MAX_ATTEMPTS}; using {attempts} instead of {wanted}.")
    return attempts
