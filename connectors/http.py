"""The http connector: GET, HEAD, POST, PUT, PATCH and DELETE to any http(s) URL, over one aiohttp pool.

Every ``<Verb>Request`` and ``<Verb>RequestV2`` pair behaves identically.

Requests:
    url          absolute http:// or https:// URL; credentials in it become basic auth.
    headers      JSON object of names to values. Strings are sent as they are, booleans as
                 true/false, numbers as text, lists and objects as JSON text; null drops the header.
    params       JSON object added to the URL's query; a list value repeats the key. Values are
                 converted as for headers.
    data         the body of POST, PUT, PATCH and DELETE, sent as ``body_format`` says:
                 json (default; Content-Type application/json), form (an object, urlencoded like
                 params), raw (a string as is, anything else as its JSON text; Content-Type
                 text/plain; charset=utf-8) or none (no body). A Content-Type the caller gives, in
                 any casing, is never replaced. No data means no body.
    basic_auth_username / basic_auth_password
                 basic auth, sent only when a password is given (the username may be empty).
    attempts     GET and HEAD only: tries while the upstream answers 5xx or cannot be reached,
                 clamped to 1..10, with exponential backoff (0.2 s, 0.4 s, ... at most 2 s).
    timeout      seconds for the whole exchange, retries included (default 30), and never past
                 the call's own deadline (less a 0.1 s margin, so the timeout is reported as
                 UpstreamTimeout with its logs rather than as the caller's DeadlineExceeded).
    include_response_headers
                 return the upstream headers, names in lower case, repeated ones joined with ", ".

Results: ``body`` is the parsed JSON when the upstream Content-Type mentions json, the
xmltodict form of XML (application/xml, text/xml, */*+xml), else ``{"raw_response": text}``
(also for an empty body, and for JSON or XML that does not parse, with a log line).
``http_status`` is the upstream status, ``mimetype`` always application/json.

Errors (``error.error_code``, gRPC code):
    InvalidParameters   INVALID_ARGUMENT     bad url, headers, params, data, body_format, timeout or auth.
    HttpError<status>   from the status      the final upstream status is 300 or more; the result (body,
                                             http_status, headers) comes along. 400 INVALID_ARGUMENT,
                                             401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 NOT_FOUND,
                                             409 ABORTED, 429 RESOURCE_EXHAUSTED, 501 UNIMPLEMENTED,
                                             504 DEADLINE_EXCEEDED, other 5xx UNAVAILABLE, other 3xx
                                             and 4xx FAILED_PRECONDITION.
    UpstreamTimeout     DEADLINE_EXCEEDED    no complete answer within the timeout.
    ConnectionError     UNAVAILABLE          refused, DNS failure, TLS failure, dropped connection...
    TooManyRedirects    FAILED_PRECONDITION  more than 10 redirects.
    InvalidRedirect     FAILED_PRECONDITION  a redirect to something that is not an http(s) URL.

Logs and messages name the method and the URL without its query, fragment or credentials;
header values, query values, bodies and passwords are never logged.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, TypeGuard, TypeVar
from urllib.parse import urlencode
from xml.parsers.expat import ExpatError

import aiohttp
import xmltodict
from google.protobuf import message
from multidict import CIMultiDict, CIMultiDictProxy
from spiff.connector.http.v1 import http_pb2, http_pb2_grpc
from spiff.connector.v1 import types_pb2
from yarl import URL

from connectors._sessions import SessionPool
from server import errors, json_values, log

__all__ = ["HttpService"]

USER_AGENT = "spiff-connector-proxy"
DEFAULT_TIMEOUT = 30.0
MAX_ATTEMPTS = 10
MAX_BACKOFF = 2.0
DEADLINE_MARGIN = 0.1
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_XML_TYPES = ("application/xml", "text/xml")
_NO_DEFAULT_CONTENT_TYPE = frozenset({"Content-Type"})  # for requests without a body

_Response = TypeVar("_Response", bound=message.Message)


class _Request(Protocol):
    """The parameters every http command has."""

    DESCRIPTOR: Any  # the message type's descriptor
    url: str
    headers: types_pb2.JsonValue
    params: types_pb2.JsonValue
    basic_auth_username: str
    basic_auth_password: str
    include_response_headers: bool
    timeout: float

    def HasField(self, field_name: str) -> bool: ...


class _RetryingRequest(_Request, Protocol):
    attempts: int


class _BodyRequest(_Request, Protocol):
    data: types_pb2.JsonValue
    body_format: str


# Asked of the message type: hasattr on a protobuf message costs an exception when it says no.
def _retries(request: _Request) -> TypeGuard[_RetryingRequest]:
    return "attempts" in request.DESCRIPTOR.fields_by_name


def _has_body(request: _Request) -> TypeGuard[_BodyRequest]:
    return "data" in request.DESCRIPTOR.fields_by_name


_ERROR_BY_STATUS: dict[int, type[errors.CommandError]] = {
    400: errors.InvalidArgument,
    401: errors.Unauthenticated,
    403: errors.PermissionDenied,
    404: errors.NotFound,
    409: errors.Aborted,
    429: errors.ResourceExhausted,
    501: errors.Unimplemented,
    504: errors.DeadlineExceeded,
}


def _error_class(status: int) -> type[errors.CommandError]:
    fallback = errors.Unavailable if status >= 500 else errors.FailedPrecondition
    return _ERROR_BY_STATUS.get(status, fallback)


class _Outgoing(NamedTuple):
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


class _Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    content_type: str
    charset: str | None
    content: bytes


def _new_session() -> aiohttp.ClientSession:
    # No cookie jar: one pool serves every process instance, which must not share cookies.
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), headers={"User-Agent": USER_AGENT})


class HttpService(http_pb2_grpc.HttpServiceServicer):
    """Sends each command's request with one pooled aiohttp session, opened on first use.

    Args:
        session_factory: makes the session, inside the running event loop.
        backoff: seconds before the second attempt; each later one waits twice as long.
    """

    def __init__(
        self, *, session_factory: Callable[[], aiohttp.ClientSession] = _new_session, backoff: float = 0.2
    ) -> None:
        self._sessions = SessionPool(session_factory)
        self._backoff = backoff

    async def aclose(self) -> None:
        """Closes the pooled session; the next call opens a new one."""
        await self._sessions.aclose()

    async def GetRequest(
        self, request: http_pb2.GetRequestRequest, context: Any
    ) -> http_pb2.GetRequestResponse:
        return await self._send("GET", request, context, http_pb2.GetRequestResponse)

    async def GetRequestV2(
        self, request: http_pb2.GetRequestV2Request, context: Any
    ) -> http_pb2.GetRequestV2Response:
        return await self._send("GET", request, context, http_pb2.GetRequestV2Response)

    async def HeadRequest(
        self, request: http_pb2.HeadRequestRequest, context: Any
    ) -> http_pb2.HeadRequestResponse:
        return await self._send("HEAD", request, context, http_pb2.HeadRequestResponse)

    async def HeadRequestV2(
        self, request: http_pb2.HeadRequestV2Request, context: Any
    ) -> http_pb2.HeadRequestV2Response:
        return await self._send("HEAD", request, context, http_pb2.HeadRequestV2Response)

    async def PostRequest(
        self, request: http_pb2.PostRequestRequest, context: Any
    ) -> http_pb2.PostRequestResponse:
        return await self._send("POST", request, context, http_pb2.PostRequestResponse)

    async def PostRequestV2(
        self, request: http_pb2.PostRequestV2Request, context: Any
    ) -> http_pb2.PostRequestV2Response:
        return await self._send("POST", request, context, http_pb2.PostRequestV2Response)

    async def PutRequest(
        self, request: http_pb2.PutRequestRequest, context: Any
    ) -> http_pb2.PutRequestResponse:
        return await self._send("PUT", request, context, http_pb2.PutRequestResponse)

    async def PutRequestV2(
        self, request: http_pb2.PutRequestV2Request, context: Any
    ) -> http_pb2.PutRequestV2Response:
        return await self._send("PUT", request, context, http_pb2.PutRequestV2Response)

    async def PatchRequest(
        self, request: http_pb2.PatchRequestRequest, context: Any
    ) -> http_pb2.PatchRequestResponse:
        return await self._send("PATCH", request, context, http_pb2.PatchRequestResponse)

    async def PatchRequestV2(
        self, request: http_pb2.PatchRequestV2Request, context: Any
    ) -> http_pb2.PatchRequestV2Response:
        return await self._send("PATCH", request, context, http_pb2.PatchRequestV2Response)

    async def DeleteRequest(
        self, request: http_pb2.DeleteRequestRequest, context: Any
    ) -> http_pb2.DeleteRequestResponse:
        return await self._send("DELETE", request, context, http_pb2.DeleteRequestResponse)

    async def DeleteRequestV2(
        self, request: http_pb2.DeleteRequestV2Request, context: Any
    ) -> http_pb2.DeleteRequestV2Response:
        return await self._send("DELETE", request, context, http_pb2.DeleteRequestV2Response)

    async def _send(
        self, method: str, request: _Request, context: Any, response_type: type[_Response]
    ) -> _Response:
        outgoing = _prepare(method, request)
        answer = await self._exchange(outgoing, context)
        response = response_type(
            body=_body(answer),
            http_status=answer.status,
            headers=answer.headers or None,  # an empty dict still costs a map update
            mimetype="application/json",
        )
        if answer.status >= 300:
            error = _error_class(answer.status)
            message_text = f"HTTP {answer.status} from {outgoing.target}"
            raise error(message_text, error_code=f"HttpError{answer.status}", result=response)
        return response

    async def _exchange(self, outgoing: _Outgoing, context: Any) -> _Answer:
        """Sends the request, retrying on 5xx and connection errors while attempts and time remain."""
        loop = asyncio.get_running_loop()
        budget = outgoing.timeout
        remaining = context.time_remaining()
        if remaining is not None:
            budget = min(budget, remaining - DEADLINE_MARGIN)
        deadline = loop.time() + budget
        session = self._sessions.get()
        attempt = 1
        while True:
            suffix = f" (attempt {attempt} of {outgoing.attempts})" if outgoing.attempts > 1 else ""
            log(f"{outgoing.target}{suffix}")
            started = time.perf_counter()
            try:
                answer = await _once(session, outgoing, deadline - loop.time())
            except TimeoutError:
                log(f"-> no answer after {_ms(started)} ms")
                message_text = f"{outgoing.target} did not answer within {max(budget, 0):.3g} s"
                raise errors.DeadlineExceeded(message_text, error_code="UpstreamTimeout") from None
            except aiohttp.TooManyRedirects:
                log(f"-> too many redirects after {_ms(started)} ms")
                message_text = f"{outgoing.target} redirected more than 10 times"
                raise errors.FailedPrecondition(message_text, error_code="TooManyRedirects") from None
            except aiohttp.RedirectClientError:
                log(f"-> a redirect to an invalid location after {_ms(started)} ms")
                message_text = f"{outgoing.target} redirected to something that is not an http(s) URL"
                raise errors.FailedPrecondition(message_text, error_code="InvalidRedirect") from None
            except aiohttp.ClientError as exc:
                reason = _reason(exc)
                log(f"-> {reason} after {_ms(started)} ms")
                if not await self._pause(attempt, outgoing.attempts, deadline):
                    message_text = f"{outgoing.target} failed: {reason}"
                    raise errors.Unavailable(message_text, error_code="ConnectionError") from None
            else:
                log(f"-> {answer.status} in {_ms(started)} ms")
                if answer.status < 500 or not await self._pause(attempt, outgoing.attempts, deadline):
                    return answer
            attempt += 1

    async def _pause(self, attempt: int, attempts: int, deadline: float) -> bool:
        """Waits before the next attempt; False when there is none (last attempt, or no time left)."""
        if attempt >= attempts:
            return False
        delay = min(self._backoff * 2 ** (attempt - 1), MAX_BACKOFF)
        if asyncio.get_running_loop().time() + delay >= deadline:
            log("No time left for another attempt.")
            return False
        log(f"Retrying in {delay:g} s.")
        await asyncio.sleep(delay)
        return True


async def _once(session: aiohttp.ClientSession, outgoing: _Outgoing, remaining: float) -> _Answer:
    if remaining <= 0:  # aiohttp reads a total of 0 as "no timeout"
        raise TimeoutError
    async with session.request(
        outgoing.method,
        outgoing.url,
        params=outgoing.params,
        headers=outgoing.headers,
        data=outgoing.body,
        skip_auto_headers=outgoing.skip_auto_headers,
        # ceil_threshold: aiohttp rounds timeouts of 5 s and more up to a whole second, which
        # could end the call after its own deadline; an exact deadline is the point here.
        timeout=aiohttp.ClientTimeout(total=remaining, ceil_threshold=math.inf),
    ) as response:
        content = await response.read()
        headers = _joined(response.headers) if outgoing.include_headers else {}
        return _Answer(response.status, headers, response.content_type, response.charset, content)


def _prepare(method: str, request: _Request) -> _Outgoing:
    """Validates the parameters, reporting every bad one at once."""
    bad: list[errors.Violation] = []
    url = _url(request.url, bad)
    headers = _headers(_json(request.headers, "headers", bad), bad)
    params = _json(request.params, "params", bad)
    if params is not None and not isinstance(params, dict):
        bad.append(errors.Violation("params", "must be an object"))
    body = None
    skip_auto_headers = None
    if _has_body(request):
        body_format = request.body_format if request.HasField("body_format") else "json"
        body = _encode_body(_json(request.data, "data", bad), body_format, headers, bad)
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
    if url is not None and (url.user or url.password) and "Authorization" in headers:
        bad.append(errors.Violation("url", "has credentials, which cannot be combined with other auth"))
    timeout = request.timeout if request.HasField("timeout") else DEFAULT_TIMEOUT
    if not (math.isfinite(timeout) and timeout > 0):
        bad.append(errors.Violation("timeout", "must be a number of seconds greater than 0"))
    if bad or url is None:
        problems = "; ".join(f"{v.field} {v.description}" for v in bad)
        message_text = f"Invalid parameters: {problems}."
        raise errors.InvalidParameters(message_text, violations=bad)
    return _Outgoing(
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
    return url


def _redacted(url: URL) -> str:
    """The URL without credentials, query or fragment (building new URLs only if it has some)."""
    if url.raw_user is not None or url.raw_password is not None or url.raw_query_string or url.raw_fragment:
        url = url.with_user(None).with_query(None).with_fragment(None)
    return str(url)


def _json(value: types_pb2.JsonValue, name: str, bad: list[errors.Violation]) -> Any:
    try:
        return json_values.load(value)
    except ValueError:
        bad.append(errors.Violation(name, "is not valid JSON"))
        return None


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


def _joined(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    joined: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        joined[key] = f"{joined[key]}, {value}" if key in joined else value
    return joined


def _body(answer: _Answer) -> types_pb2.JsonValue:
    """The response body as JSON: parsed JSON or XML, else ``{"raw_response": text}``."""
    try:
        text = answer.content.decode(answer.charset or "utf-8", errors="replace")
    except LookupError:
        text = answer.content.decode("utf-8", errors="replace")
    kind = answer.content_type
    try:
        if text and "json" in kind:
            return json_values.dump(json_values.loads(text.removeprefix("\ufeff")))
        if text and (kind in _XML_TYPES or kind.endswith("+xml")):
            return json_values.dump(xmltodict.parse(text))
    except (ValueError, RecursionError, ExpatError):
        log(f"The {kind} response body does not parse; it is returned as raw_response.")
    return json_values.dump({"raw_response": text})


def _reason(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        detail = exc.os_error.strerror or type(exc.os_error).__name__
        return f"cannot connect to {exc.host}:{exc.port} ({detail})"
    return type(exc).__name__


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
