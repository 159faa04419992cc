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
    oauth2_token_set
                 a token set of the http/OAuth2 handler (``secret:http/OAuth2``), sent as a bearer
                 token; the server refreshes an expired one first, and a 401 answer brings one
                 refresh and one more try (``server.refresh_refused_token``).
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
    EgressDenied        PERMISSION_DENIED    the egress policy (server.egress) does not allow the host,
                                             also for a redirect; nothing was sent.
    UpstreamTimeout     DEADLINE_EXCEEDED    no complete answer within the timeout.
    ConnectionError     UNAVAILABLE          refused, DNS failure, TLS failure, dropped connection...
    TooManyRedirects    FAILED_PRECONDITION  more than 10 redirects.
    InvalidRedirect     FAILED_PRECONDITION  a redirect to something that is not an http(s) URL.

Logs and messages name the method and the URL without its query, fragment or credentials;
header values, query values, bodies and passwords are never logged.

Modules: ``_outgoing`` validates the parameters into the request to send, ``_retries`` sends it
(retries and backoff), ``_answer`` reads the upstream's answer and turns it into the result.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
from google.protobuf import message
from spiff.connector.http.v1 import http_pb2, http_pb2_grpc

from connectors._egress import egress_session
from connectors._sessions import SessionPool
from server import log, refresh_refused_token
from server.egress import EgressPolicy

from ._answer import error_class, json_body
from ._outgoing import Request, prepare
from ._retries import exchange

__all__ = ["HttpService"]

USER_AGENT = "spiff-connector-proxy"

_Response = TypeVar("_Response", bound=message.Message)


def _new_session(egress: EgressPolicy) -> aiohttp.ClientSession:
    # No cookie jar: one pool serves every process instance, which must not share cookies.
    return egress_session(
        egress, "http", cookie_jar=aiohttp.DummyCookieJar(), headers={"User-Agent": USER_AGENT}
    )


class HttpService(http_pb2_grpc.HttpServiceServicer):
    """Sends each command's request with one pooled aiohttp session, opened on first use.

    Args:
        session_factory: makes the session, inside the running event loop; by default one whose
            connections follow ``egress``.
        backoff: seconds before the second attempt; each later one waits twice as long.
        egress: where requests may go; by default the proxy's egress settings (``server.egress``).
    """

    def __init__(
        self,
        *,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
        backoff: float = 0.2,
        egress: EgressPolicy | None = None,
    ) -> None:
        if session_factory is None:
            session_factory = functools.partial(_new_session, egress or EgressPolicy.from_env())
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
        self, method: str, request: Request, context: Any, response_type: type[_Response]
    ) -> _Response:
        outgoing = prepare(method, request)
        answer = await exchange(self._sessions, outgoing, context, self._backoff)
        # A token refused (revoked, or expired before its expires_at or with none): refreshed, sent again.
        refused = answer.status == 401 and bool(request.oauth2_token_set)
        if refused and await refresh_refused_token("oauth2_token_set") is not None:
            log("-> 401: the OAuth token set was refreshed; sending again")
            outgoing = prepare(method, request)
            answer = await exchange(self._sessions, outgoing, context, self._backoff)
        response = response_type(
            body=json_body(answer),
            http_status=answer.status,
            headers=answer.headers or None,  # an empty dict still costs a map update
            mimetype="application/json",
        )
        if answer.status >= 300:
            error = error_class(answer.status)
            message_text = f"HTTP {answer.status} from {outgoing.target}"
            raise error(message_text, error_code=f"HttpError{answer.status}", result=response)
        return response
