"""One attempt: the request sent once and the upstream's answer read (status, headers, body), then
the body as JSON and what a final status of 300 or more means as a command error."""

from __future__ import annotations

import math
from typing import NamedTuple
from xml.parsers.expat import ExpatError

import aiohttp
import xmltodict
from multidict import CIMultiDictProxy
from spiff.connector.v1 import types_pb2

from connectors._answers import text_of
from server import errors, json_values, log

from ._outgoing import Outgoing

__all__ = ["Answer", "error_class", "json_body", "send_once"]

_XML_TYPES = ("application/xml", "text/xml")

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


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    content_type: str
    charset: str | None
    content: bytes


async def send_once(session: aiohttp.ClientSession, outgoing: Outgoing, remaining: float) -> Answer:
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
        return Answer(response.status, headers, response.content_type, response.charset, content)


def _joined(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    joined: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        joined[key] = f"{joined[key]}, {value}" if key in joined else value
    return joined


def json_body(answer: Answer) -> types_pb2.JsonValue:
    """The response body as JSON: parsed JSON or XML, else ``{"raw_response": text}``."""
    text = text_of(answer.content, answer.charset)
    kind = answer.content_type
    try:
        if text and "json" in kind:
            return json_values.dump(json_values.loads(text.removeprefix("\ufeff")))
        if text and (kind in _XML_TYPES or kind.endswith("+xml")):
            return json_values.dump(xmltodict.parse(text))
    except (ValueError, RecursionError, ExpatError):
        log(f"The {kind} response body does not parse; it is returned as raw_response.")
    return json_values.dump({"raw_response": text})


def error_class(status: int) -> type[errors.CommandError]:
    fallback = errors.Unavailable if status >= 500 else errors.FailedPrecondition
    return _ERROR_BY_STATUS.get(status, fallback)
