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
                                                 string (see _SLACK_ERRORS), UNAVAILABLE for any
                                                 Slack 5xx, else INVALID_ARGUMENT.
    SlackRateLimited        RESOURCE_EXHAUSTED   HTTP 429 (after the optional retry); the message
                                                 says the Retry-After seconds.
    SlackUnavailable        UNAVAILABLE          HTTP 5xx without a Slack JSON reply; body
                                                 ``{"raw_response": text}``.
    SlackUnexpectedResponse FAILED_PRECONDITION  anything else that is not a Slack reply (a wrong
                                                 api_url answering an HTML 404...).
    UpstreamTimeout         DEADLINE_EXCEEDED    no complete answer in time.
    ConnectionError         UNAVAILABLE          refused, DNS, TLS, dropped connection.
    InvalidParameters       INVALID_ARGUMENT     bad token, blocks or api_url.

Why aiohttp and not slack_sdk's AsyncWebClient: for an HTML 502 (what a gateway in front of
Slack answers) the SDK never reads the body (``SlackApiError.response.data == {}``), so the raw
text cannot be returned; its timeout is per client rather than per call; without a session it
opens and closes an aiohttp session per call. chat.postMessage is one JSON POST, which the
project's aiohttp does directly with a pooled, lazily opened, closed-on-shutdown session.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import email.utils
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
from aiohttp.helpers import get_env_proxy_for_url
from spiff.connector.slack.v1 import slack_pb2, slack_pb2_grpc
from spiff.connector.v1 import types_pb2
from yarl import URL

from connectors._sessions import SessionPool
from server import errors, json_values, log

__all__ = ["SlackService"]

API_METHOD = "chat.postMessage"
DEFAULT_API_URL = "https://slack.com/api/"
DEFAULT_TIMEOUT = 20.0
DEFAULT_MAX_RETRY_WAIT = 5.0
DEADLINE_MARGIN = 0.1
RETRY_ROOM = 1.0  # seconds the second attempt needs after waiting out Retry-After
USER_AGENT = "spiff-connector-proxy"
_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: anything else breaks the header
_BEARER = re.compile(r"\Abearer\s+", re.IGNORECASE)

_STATUS: dict[grpc.StatusCode, int] = {  # google/rpc/code.proto's mapping, for the codes used here
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
}


def _codes(cls: type[errors.CommandError], *names: str) -> dict[str, type[errors.CommandError]]:
    return dict.fromkeys(names, cls)


# Slack's error strings (chat.postMessage's and the Web API's common ones) by what they mean for a
# retry: the caller's token, rights or target are wrong (4xx, spiff does not retry), Slack is busy
# or broken (429/503, spiff may retry). Anything else is INVALID_ARGUMENT.
_SLACK_ERRORS: dict[str, type[errors.CommandError]] = {
    **_codes(
        errors.Unauthenticated,
        "not_authed",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
        "token_expired",
    ),
    **_codes(
        errors.PermissionDenied,
        "access_denied",
        "ekm_access_denied",
        "enterprise_is_restricted",
        "missing_scope",
        "no_permission",
        "not_allowed_token_type",
        "not_in_channel",
        "org_login_required",
        "restricted_action",
        "restricted_action_non_threadable_channel",
        "restricted_action_read_only_channel",
        "restricted_action_thread_locked",
        "restricted_action_thread_only_channel",
        "team_access_not_granted",
        "two_factor_setup_required",
        "is_archived",
        "messages_tab_disabled",
    ),
    **_codes(
        errors.NotFound,
        "channel_not_found",
        "duplicate_channel_not_found",
        "duplicate_message_not_found",
        "message_not_found",
        "thread_not_found",
        "user_not_found",
    ),
    **_codes(errors.ResourceExhausted, "rate_limited", "ratelimited", "message_limit_exceeded"),
    **_codes(errors.Unavailable, "internal_error", "fatal_error", "service_unavailable", "request_timeout"),
}


@dataclass(frozen=True)
class _Outgoing:
    """A validated call, ready to send (possibly twice)."""

    url: URL
    headers: dict[str, str]
    payload: bytes
    about: str  # what the log lines say the call is: no token, no text

    @property
    def target(self) -> str:
        return f"POST {self.url}"


@dataclass(frozen=True)
class _Answer:
    status: int
    retry_after: str | None
    text: str
    reply: dict[str, Any] | None  # Slack's JSON reply: an object with a boolean "ok"


def _new_session() -> aiohttp.ClientSession:
    # No cookie jar: one pool serves every process instance and token.
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), headers={"User-Agent": USER_AGENT})


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
        session_factory: makes the session, inside the running event loop.

    Raises:
        ValueError: a configured value is unusable (the server then refuses to start).
    """

    def __init__(
        self,
        *,
        api_url: str | None = None,
        timeout: float | None = None,
        max_retry_wait: float | None = None,
        session_factory: Callable[[], aiohttp.ClientSession] = _new_session,
    ) -> None:
        base = api_url if api_url is not None else os.environ.get("CONNECTOR_PROXY_SLACK_API_URL", "")
        method_url = _method_url(base or DEFAULT_API_URL)
        if method_url is None:
            # The value is not repeated: it could hold credentials.
            msg = (
                "the Slack API URL (CONNECTOR_PROXY_SLACK_API_URL) must be an absolute http:// or "
                "https:// URL without credentials"
            )
            raise ValueError(msg)
        self._url = method_url
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
        self._sessions = SessionPool(session_factory)

    async def aclose(self) -> None:
        """Closes the pooled session; the next call opens a new one."""
        await self._sessions.aclose()

    async def PostMessage(
        self, request: slack_pb2.PostMessageRequest, context: Any
    ) -> slack_pb2.PostMessageResponse:
        outgoing = self._prepare(request)
        loop = asyncio.get_running_loop()
        budget = self._timeout
        remaining = context.time_remaining()
        if remaining is not None:
            budget = min(budget, remaining - DEADLINE_MARGIN)
        deadline = loop.time() + budget
        proxy, proxy_auth = await _env_proxy(outgoing.url)
        attempts = 1
        while True:
            answer = await self._exchange(outgoing, deadline, budget, attempts, proxy, proxy_auth)
            if answer.status != 429:
                return _result(answer, outgoing)
            wait = _retry_after(answer.retry_after)
            pause = self._pause(wait, deadline) if attempts == 1 else None
            if pause is None:
                raise _rate_limited(answer, wait, attempts)
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

    def _prepare(self, request: slack_pb2.PostMessageRequest) -> _Outgoing:
        """Validates the parameters, reporting every bad one at once."""
        bad: list[errors.Violation] = []
        token = _BEARER.sub("", request.token.strip(), count=1)
        if not _TOKEN.fullmatch(token):
            bad.append(errors.Violation("token", "must be a Slack token: printable ASCII without spaces"))
        url = self._url
        if request.api_url.strip():
            given = _method_url(request.api_url)
            if given is None:
                bad.append(
                    errors.Violation(
                        "api_url", "must be an absolute http:// or https:// URL without credentials"
                    )
                )
            else:
                url = given
        blocks = _blocks(request.blocks, bad)
        if bad:
            problems = "; ".join(f"{v.field} {v.description}" for v in bad)
            message_text = f"Invalid parameters: {problems}."
            raise errors.InvalidParameters(message_text, violations=bad)
        payload: dict[str, Any] = {"channel": request.channel, "text": request.message}
        about = f"channel {request.channel}"
        if blocks:
            payload["blocks"] = blocks
            about += f", {len(blocks)} block{'s' if len(blocks) != 1 else ''}"
        if request.thread_ts.strip():
            payload["thread_ts"] = request.thread_ts.strip()
            about += f", thread {payload['thread_ts']}"
        return _Outgoing(
            url=url,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json; charset=utf-8"},
            payload=json_values.dumps(payload).encode(),
            about=about,
        )

    async def _exchange(
        self,
        outgoing: _Outgoing,
        deadline: float,
        budget: float,
        attempt: int,
        proxy: URL | None,
        proxy_auth: aiohttp.BasicAuth | None,
    ) -> _Answer:
        suffix = f", attempt {attempt} of 2" if attempt > 1 else ""
        log(f"{outgoing.target} ({outgoing.about}{suffix})")
        started = time.perf_counter()
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            if remaining <= 0:  # aiohttp reads a total of 0 as "no timeout"
                raise TimeoutError
            async with self._sessions.get().post(
                outgoing.url,
                data=outgoing.payload,
                headers=outgoing.headers,
                proxy=proxy,
                proxy_auth=proxy_auth,
                allow_redirects=False,  # a redirect would replay the POST, and the token, elsewhere
                # No rounding up to a whole second (aiohttp's default from 5 s): the deadline is exact.
                timeout=aiohttp.ClientTimeout(total=remaining, ceil_threshold=math.inf),
            ) as response:
                content = await response.read()
                status, retry_after, charset = (
                    response.status,
                    response.headers.get("Retry-After"),
                    response.charset,
                )
        except TimeoutError:
            log(f"-> no answer after {_ms(started)} ms")
            message_text = (
                f"{outgoing.target} did not answer within {round(max(budget, 0), 1):g} s; "
                "the message may have been posted."
            )
            raise errors.DeadlineExceeded(message_text, error_code="UpstreamTimeout") from None
        except aiohttp.ClientError as exc:
            reason = _reason(exc)
            log(f"-> {reason} after {_ms(started)} ms")
            message_text = f"{outgoing.target} failed: {reason}"
            raise errors.Unavailable(message_text, error_code="ConnectionError") from None
        answer = _answer(status, retry_after, charset, content)
        outcome = ""
        if answer.reply is not None:
            outcome = " ok" if answer.reply["ok"] else f" ok: false ({answer.reply.get('error')})"
        log(f"-> {status}{outcome} in {_ms(started)} ms")
        return answer


async def _env_proxy(url: URL) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy HTTPS_PROXY / HTTP_PROXY / NO_PROXY give for ``url`` (in a thread: it may read ~/.netrc)."""
    try:
        return await asyncio.to_thread(get_env_proxy_for_url, url)
    except LookupError:
        return None, None


def _method_url(text: str) -> URL | None:
    """``<base>/chat.postMessage`` for an absolute http(s) base URL without credentials."""
    try:
        url = URL(text.strip())
    except (TypeError, ValueError):
        return None
    if url.scheme not in ("http", "https") or not url.host or url.user or url.password:
        return None
    path = url.path if url.path.endswith("/") else url.path + "/"
    return url.with_path(path + API_METHOD).with_query(None).with_fragment(None)


def _blocks(value: types_pb2.JsonValue, bad: list[errors.Violation]) -> list[Any] | None:
    try:
        blocks = json_values.load(value)
        if isinstance(blocks, str):
            blocks = json_values.loads(blocks) if blocks.strip() else None
    except ValueError:
        bad.append(errors.Violation("blocks", "is not valid JSON"))
        return None
    if isinstance(blocks, dict) and "blocks" in blocks:  # Block Kit Builder's payload
        blocks = blocks["blocks"]
    if blocks is None:
        return None
    if not isinstance(blocks, list):
        bad.append(errors.Violation("blocks", "must be a list of Block Kit blocks"))
        return None
    for index, block in enumerate(blocks):
        if not isinstance(block, dict):
            bad.append(errors.Violation(f"blocks[{index}]", "must be a Block Kit block (an object)"))
    return blocks


def _answer(status: int, retry_after: str | None, charset: str | None, content: bytes) -> _Answer:
    try:
        text = content.decode(charset or "utf-8", errors="replace")
    except LookupError:
        text = content.decode("utf-8", errors="replace")
    reply: Any = None
    with contextlib.suppress(ValueError):  # not JSON: not a Slack reply
        reply = json_values.loads(text.removeprefix("\ufeff")) if text.strip() else None
    if not (isinstance(reply, dict) and isinstance(reply.get("ok"), bool)):
        reply = None
    return _Answer(status, retry_after, text, reply)


def _result(answer: _Answer, outgoing: _Outgoing) -> slack_pb2.PostMessageResponse:
    """The result of a final answer other than 429, or the error it is."""
    reply = answer.reply
    if reply is None:
        response = slack_pb2.PostMessageResponse(
            body=json_values.dump({"raw_response": answer.text}), http_status=answer.status
        )
        message_text = f"{outgoing.target} answered HTTP {answer.status}, which is not a Slack reply"
        if answer.status >= 500:
            raise errors.Unavailable(message_text, error_code="SlackUnavailable", result=response)
        message_text += "; is the API URL right?"
        raise errors.FailedPrecondition(message_text, error_code="SlackUnexpectedResponse", result=response)
    _log_warnings(reply)
    body = json_values.dump(reply)
    if reply["ok"] and answer.status < 300:
        return slack_pb2.PostMessageResponse(body=body, http_status=answer.status)
    slack_error = reply.get("error")
    slack_error = slack_error if isinstance(slack_error, str) and slack_error else f"HTTP {answer.status}"
    if answer.status >= 500:
        error_class: type[errors.CommandError] = errors.Unavailable
    else:
        error_class = _SLACK_ERRORS.get(slack_error, errors.InvalidArgument)
    metadata = reply.get("response_metadata")
    details = metadata.get("messages") if isinstance(metadata, dict) else None
    details = [item for item in details if isinstance(item, str)] if isinstance(details, list) else []
    message_text = ". ".join(details) or slack_error  # the incumbent's message
    http_status = answer.status if answer.status >= 400 else _STATUS[error_class.code]
    response = slack_pb2.PostMessageResponse(body=body, http_status=http_status)
    raise error_class(message_text, error_code="SlackMessageFailed", result=response)


def _rate_limited(answer: _Answer, wait: float | None, attempts: int) -> errors.CommandError:
    body = answer.reply if answer.reply is not None else {"raw_response": answer.text}
    headers = {"retry-after": answer.retry_after} if answer.retry_after is not None else {}
    response = slack_pb2.PostMessageResponse(
        body=json_values.dump(body), http_status=answer.status, headers=headers
    )
    after = f"retry after {math.ceil(wait)} s" if wait is not None else "no Retry-After given"
    again = " (also after one retry)" if attempts > 1 else ""
    message_text = f"Slack rate limited {API_METHOD}{again}: {after}."
    return errors.ResourceExhausted(message_text, error_code="SlackRateLimited", result=response)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date; None if neither."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        seconds = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _log_warnings(reply: dict[str, Any]) -> None:
    """Slack's warnings (``warning`` and ``response_metadata.warnings``), e.g. missing_charset."""
    found: list[str] = []
    if isinstance(reply.get("warning"), str):
        found.extend(reply["warning"].split(","))
    metadata = reply.get("response_metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("warnings"), list):
        found.extend(item for item in metadata["warnings"] if isinstance(item, str))
    unique = list(dict.fromkeys(item.strip() for item in found if item.strip()))
    if unique:
        log(f"Slack warns: {', '.join(unique)}")


def _reason(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        detail = exc.os_error.strerror or type(exc.os_error).__name__
        return f"cannot connect to {exc.host}:{exc.port} ({detail})"
    return type(exc).__name__


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
