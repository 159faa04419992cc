"""The slack connector: posts messages with Slack's Web API chat.postMessage, over one aiohttp pool.

Requests (slack/PostMessage):
    token       a bot token (xoxb-...), sent as ``Authorization: Bearer``; a leading "Bearer " is
                dropped. Never logged, never in messages or results.
    channel     channel, group, DM or user id, or a #name.
    message     the text (mrkdwn); with blocks, the notification fallback.
    blocks      optional Block Kit: a list of block objects, Block Kit Builder's ``{"blocks": [...]}``,
                or either as JSON text. null or [] sends none.
    thread_ts   optional: reply in the thread of this parent ts.
    api_url     optional per-call API base URL (GovSlack, a test double); chat.postMessage is appended.

The payload is JSON (``{"channel", "text", "blocks"?, "thread_ts"?}``,
``Content-Type: application/json; charset=utf-8``), as Slack recommends for bot tokens.

Configuration (keyword-only constructor arguments, defaulting to the environment):
    CONNECTOR_PROXY_SLACK_API_URL         API base URL, default https://slack.com/api/.
    CONNECTOR_PROXY_SLACK_TIMEOUT         seconds for the whole call, retry included (default 20),
                                          never past the command's deadline (less 0.1 s).
    CONNECTOR_PROXY_SLACK_MAX_RETRY_WAIT  an HTTP 429 whose Retry-After is at most this many seconds
                                          (default 5) is waited out and the call tried once more,
                                          when the wait plus 1 s still fits in the timeout. 0 never
                                          retries. Only 429 is retried: Slack posted nothing then,
                                          whereas after a 5xx or a timeout it may have.
HTTPS_PROXY / HTTP_PROXY / NO_PROXY are honoured, as the incumbent (requests) and slack_sdk do;
~/.netrc is not read (it could add a second Authorization).

Results: ``body`` is Slack's reply as a JSON object (the incumbent sent it as a JSON string),
``http_status`` Slack's status, ``headers`` only ``retry-after`` on 429.

Errors (``error.error_code``, gRPC code):
    SlackMessageFailed      from Slack's error   ok: false; the message is response_metadata.messages
                                                 joined with ". ", else Slack's error string (as the
                                                 incumbent's); the body is Slack's reply.
                                                 UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND,
                                                 RESOURCE_EXHAUSTED or UNAVAILABLE by the error
                                                 string (see _errors.SLACK_ERRORS), UNAVAILABLE for any
                                                 Slack 5xx, else INVALID_ARGUMENT.
    SlackRateLimited        RESOURCE_EXHAUSTED   HTTP 429 (after the optional retry); the message
                                                 says the Retry-After seconds.
    SlackUnavailable        UNAVAILABLE          HTTP 5xx without a Slack JSON reply; body
                                                 ``{"raw_response": text}``.
    SlackUnexpectedResponse FAILED_PRECONDITION  anything else that is not a Slack reply (a wrong
                                                 api_url answering an HTML 404...).
    UpstreamTimeout         DEADLINE_EXCEEDED    no complete answer in time.
    ConnectionError         UNAVAILABLE          refused, DNS, TLS, dropped connection.
    EgressDenied            PERMISSION_DENIED    the egress policy (server.egress) does not allow the
                                                 API host (or the proxy); nothing was sent.
    InvalidParameters       INVALID_ARGUMENT     bad token, blocks or api_url.

Why aiohttp and not slack_sdk's AsyncWebClient: for an HTML 502 (what a gateway in front of
Slack answers) the SDK never reads the body (``SlackApiError.response.data == {}``), so the raw
text cannot be returned; its timeout is per client rather than per call; without a session it
opens and closes an aiohttp session per call. chat.postMessage is one JSON POST, which the
project's aiohttp does directly with a pooled, lazily opened, closed-on-shutdown session.

Modules: ``_message`` validates the request into the call to send, ``_exchange`` makes one POST and
reads the answer, ``_errors`` turns the final answer into the result or the documented error.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
from collections.abc import Callable
from typing import Any

import aiohttp
from spiff.connector.slack.v1 import slack_pb2, slack_pb2_grpc

from connectors._egress import egress_session
from connectors._retry_after import retry_after
from connectors._sessions import SessionPool
from connectors._timing import time_budget
from server import log
from server.egress import EgressPolicy

from ._errors import rate_limited, result
from ._exchange import env_proxy, exchange
from ._message import method_url, prepare

__all__ = ["SlackService"]

DEFAULT_API_URL = "https://slack.com/api/"
DEFAULT_TIMEOUT = 20.0
DEFAULT_MAX_RETRY_WAIT = 5.0
DEADLINE_MARGIN = 0.1
RETRY_ROOM = 1.0  # seconds the second attempt needs after waiting out Retry-After
USER_AGENT = "spiff-connector-proxy"


def _new_session(egress: EgressPolicy) -> aiohttp.ClientSession:
    # No cookie jar: one pool serves every process instance and token.
    return egress_session(
        egress, "slack", cookie_jar=aiohttp.DummyCookieJar(), headers={"User-Agent": USER_AGENT}
    )


def _env_float(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        msg = f"{name} must be a number of seconds, not {text!r}"
        raise ValueError(msg)
    return value


class SlackService(slack_pb2_grpc.SlackServiceServicer):
    """Posts with one pooled aiohttp session, opened on first use.

    Args:
        api_url: the Web API base URL; default ``CONNECTOR_PROXY_SLACK_API_URL``, else
            https://slack.com/api/.
        timeout: seconds per call, retry included; default ``CONNECTOR_PROXY_SLACK_TIMEOUT``, else 20.
        max_retry_wait: the longest Retry-After waited out once; 0 never retries. Default
            ``CONNECTOR_PROXY_SLACK_MAX_RETRY_WAIT``, else 5.
        session_factory: makes the session, inside the running event loop; by default one whose
            connections follow ``egress``.
        egress: where calls may go; by default the proxy's egress settings (``server.egress``).

    Raises:
        ValueError: a configured value is unusable (the server then refuses to start).
    """

    def __init__(
        self,
        *,
        api_url: str | None = None,
        timeout: float | None = None,
        max_retry_wait: float | None = None,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
        egress: EgressPolicy | None = None,
    ) -> None:
        base = api_url if api_url is not None else os.environ.get("CONNECTOR_PROXY_SLACK_API_URL", "")
        url = method_url(base or DEFAULT_API_URL)
        if url is None:
            # The value is not repeated: it could hold credentials.
            msg = (
                "the Slack API URL (CONNECTOR_PROXY_SLACK_API_URL) must be an absolute http:// or "
                "https:// URL without credentials"
            )
            raise ValueError(msg)
        self._url = url
        self._timeout = (
            timeout if timeout is not None else _env_float("CONNECTOR_PROXY_SLACK_TIMEOUT", DEFAULT_TIMEOUT)
        )
        self._max_retry_wait = (
            max_retry_wait
            if max_retry_wait is not None
            else _env_float("CONNECTOR_PROXY_SLACK_MAX_RETRY_WAIT", DEFAULT_MAX_RETRY_WAIT)
        )
        if not (math.isfinite(self._timeout) and self._timeout > 0):
            msg = f"the Slack timeout must be a number of seconds greater than 0, not {self._timeout}"
            raise ValueError(msg)
        if session_factory is None:
            session_factory = functools.partial(_new_session, egress or EgressPolicy.from_env())
        self._sessions = SessionPool(session_factory)

    async def aclose(self) -> None:
        """Closes the pooled session; the next call opens a new one."""
        await self._sessions.aclose()

    async def PostMessage(
        self, request: slack_pb2.PostMessageRequest, context: Any
    ) -> slack_pb2.PostMessageResponse:
        outgoing = prepare(request, self._url)
        loop = asyncio.get_running_loop()
        budget = time_budget(self._timeout, context, DEADLINE_MARGIN)
        deadline = loop.time() + budget
        proxy, proxy_auth = await env_proxy(outgoing.url)
        attempts = 1
        while True:
            answer = await exchange(self._sessions, outgoing, deadline, budget, attempts, proxy, proxy_auth)
            if answer.status != 429:
                return result(answer, outgoing)
            wait = retry_after(answer.retry_after)
            pause = self._pause(wait, deadline) if attempts == 1 else None
            if pause is None:
                raise rate_limited(answer, wait, attempts)
            log(f"Rate limited: retrying once in {pause:g} s.")
            await asyncio.sleep(pause)
            attempts += 1

    def _pause(self, wait: float | None, deadline: float) -> float | None:
        """How long to wait before the one retry of a 429; None when there is none."""
        if wait is None or self._max_retry_wait <= 0 or wait > self._max_retry_wait:
            return None
        if asyncio.get_running_loop().time() + wait + RETRY_ROOM > deadline:
            log("No time left to wait out Retry-After.")
            return None
        return wait
