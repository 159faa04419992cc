"""The ai connector: chat completions from any OpenAI-compatible server, over one aiohttp pool.

Requests (ai/LlmRequest):
    model            the model, as the server names it.
    messages         OpenAI's list of messages ({role, content, ...}), or a text: one user message.
    tools            OpenAI's list of tools; an empty list sends none.
    tool_choice      "auto", "none", "required" or an object naming one tool.
    response_format  a JSON Schema, OpenAI's {name, schema, strict}, or a whole response_format;
                     the first two are sent as {"type": "json_schema", "json_schema": {...}}. The
                     content is then parsed as JSON into ``parsed`` (a Markdown code fence around it
                     is taken off); it is not validated against the schema.
    temperature, max_tokens
                     sent when given; the proto states their ranges.
    extra_body       more request fields (top_p, seed, stop, max_completion_tokens...); the
                     parameters above win over them.
    api_key          sent as ``Authorization: Bearer``; a leading "Bearer " is dropped. Never logged,
                     never in messages (a server's 401 or 403 text is not repeated: OpenAI's quotes
                     part of the key), never in results.
    api_base         the API base URL; ``/chat/completions`` is appended.
    timeout          seconds for the whole call, retries included (default 120), never past the
                     call's deadline (less 0.1 s, so the timeout is reported as AiTimeout with its
                     logs rather than as the caller's DeadlineExceeded).
    max_retries      attempts after the first (default 2) on 429 (but insufficient_quota), 5xx and
                     connection failures, waiting the server's retry-after-ms or Retry-After, else
                     0.5 s doubling up to 8 s less up to a quarter, while the wait fits in the time left.

Configuration (keyword-only constructor arguments, defaulting to the environment):
    CONNECTOR_PROXY_AI_API_BASE  the API base URL of calls without api_base (default
                                 https://api.openai.com/v1).
    CONNECTOR_PROXY_AI_API_KEY   the key of calls without api_key, sent only to that base URL: a
                                 diagram naming another api_base cannot carry the operator's key
                                 there.

Results: the first choice's message (``content``, ``role``, ``tool_calls``, and all of it as
``message``, to append to the next call's messages), ``parsed``, ``finish_reason``, ``model``,
``usage`` and ``id``. Errors are listed in the proto (``AiAuthenticationFailed``, ``AiRateLimited``,
``AiContextLengthExceeded``...); log lines name the URL, the model and counts, the status, the
finish reason, the tokens and the time, never a message's content or the key.

Why aiohttp and not the openai SDK: the project's outbound HTTP is aiohttp, with the egress policy
in its resolver and middleware (``connectors._egress``) and one pooled session per connector
(``connectors._sessions``); the SDK is built on httpx, so it would need a second egress
integration, and it would add a dependency (pydantic included) to the image and the start-up for
one JSON POST. Its retries and timeouts are per client, where a call's must fit in the command's
deadline. The protocol is small: the request is JSON, the answer is JSON, errors are
``{"error": {"message", "type", "param", "code"}}``.

Modules: ``_outgoing`` validates the parameters into the call to send, ``_exchange`` sends it
(retries, backoff, Retry-After), ``_answer`` turns the final answer into the result or the error.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import aiohttp
from spiff.connector.ai.v1 import ai_pb2, ai_pb2_grpc

from connectors._egress import egress_session
from connectors._sessions import SessionPool
from server.egress import EgressPolicy

from ._answer import result
from ._exchange import exchange
from ._outgoing import DEFAULT_API_BASE, KEY, base_url, prepare

__all__ = ["AiService"]

USER_AGENT = "spiff-connector-proxy"


def _new_session(egress: EgressPolicy) -> aiohttp.ClientSession:
    # No cookie jar: one pool serves every process instance and key.
    return egress_session(
        egress, "ai", cookie_jar=aiohttp.DummyCookieJar(), headers={"User-Agent": USER_AGENT}
    )


class AiService(ai_pb2_grpc.AiServiceServicer):
    """Asks chat models with one pooled aiohttp session, opened on first use.

    Args:
        api_base: the API base URL of calls without ``api_base``; default
            ``CONNECTOR_PROXY_AI_API_BASE``, else https://api.openai.com/v1.
        api_key: the key of calls without ``api_key`` that go to ``api_base``; default
            ``CONNECTOR_PROXY_AI_API_KEY``, else none.
        backoff: seconds before the second attempt when the server gives no Retry-After.
        session_factory: makes the session, inside the running event loop; by default one whose
            connections follow ``egress``.
        egress: where calls may go; by default the proxy's egress settings (``server.egress``).

    Raises:
        ValueError: the configured API base or key is unusable (the server then refuses to start).
    """

    def __init__(
        self,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        backoff: float = 0.5,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
        egress: EgressPolicy | None = None,
    ) -> None:
        base = api_base if api_base is not None else os.environ.get("CONNECTOR_PROXY_AI_API_BASE", "")
        url = base_url(base or DEFAULT_API_BASE)
        if url is None:
            # The value is not repeated: it could hold credentials.
            msg = (
                "the AI API base URL (CONNECTOR_PROXY_AI_API_BASE) must be an absolute http:// or "
                "https:// URL without credentials, query or fragment"
            )
            raise ValueError(msg)
        self._url = url
        key = api_key if api_key is not None else os.environ.get("CONNECTOR_PROXY_AI_API_KEY", "")
        self._key = key.strip()
        if self._key and not KEY.fullmatch(self._key):
            msg = "the AI API key (CONNECTOR_PROXY_AI_API_KEY) must be printable ASCII without spaces"
            raise ValueError(msg)
        self._backoff = backoff
        if session_factory is None:
            session_factory = functools.partial(_new_session, egress or EgressPolicy.from_env())
        self._sessions = SessionPool(session_factory)

    async def aclose(self) -> None:
        """Closes the pooled session; the next call opens a new one."""
        await self._sessions.aclose()

    async def LlmRequest(self, request: ai_pb2.LlmRequestRequest, context: Any) -> ai_pb2.LlmRequestResponse:
        outgoing = prepare(request, self._url, self._key)
        answer = await exchange(self._sessions, outgoing, context, self._backoff)
        return result(answer, outgoing)
