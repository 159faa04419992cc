"""One POST to Slack and its answer: the proxy from the environment, the exchange within the call's
deadline, transport failures as command errors, and the answer read (text, Slack's JSON reply,
Retry-After)."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from connectors._answers import json_or_none, text_of
from connectors._sessions import SessionPool, failure_reason
from connectors._timing import ms_since
from server import errors, log, run_blocking
from server.egress import EgressDenied

from ._message import Outgoing

__all__ = ["Answer", "env_proxy", "exchange"]


@dataclass(frozen=True)
class Answer:
    status: int
    retry_after: str | None
    text: str
    reply: dict[str, Any] | None  # Slack's JSON reply: an object with a boolean "ok"


async def env_proxy(url: URL) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy HTTPS_PROXY / HTTP_PROXY / NO_PROXY give for ``url`` (in a thread: it may read ~/.netrc)."""
    try:
        return await run_blocking(get_env_proxy_for_url, url)
    except LookupError:
        return None, None


async def exchange(
    sessions: SessionPool,
    outgoing: Outgoing,
    deadline: float,
    budget: float,
    attempt: int,
    proxy: URL | None,
    proxy_auth: aiohttp.BasicAuth | None,
) -> Answer:
    suffix = f", attempt {attempt} of 2" if attempt > 1 else ""
    log(f"{outgoing.target} ({outgoing.about}{suffix})")
    started = time.perf_counter()
    remaining = deadline - asyncio.get_running_loop().time()
    try:
        if remaining <= 0:  # aiohttp reads a total of 0 as "no timeout"
            raise TimeoutError
        async with sessions.get().post(
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
            status, retry_header, charset = (
                response.status,
                response.headers.get("Retry-After"),
                response.charset,
            )
    except EgressDenied:
        log(f"-> refused by the egress policy after {ms_since(started)} ms")
        raise
    except TimeoutError:
        log(f"-> no answer after {ms_since(started)} ms")
        message_text = (
            f"{outgoing.target} did not answer within {round(max(budget, 0), 1):g} s; "
            "the message may have been posted."
        )
        raise errors.DeadlineExceeded(message_text, error_code="UpstreamTimeout") from None
    except aiohttp.ClientError as exc:
        reason = failure_reason(exc)
        log(f"-> {reason} after {ms_since(started)} ms")
        message_text = f"{outgoing.target} failed: {reason}"
        raise errors.Unavailable(message_text, error_code="ConnectionError") from None
    answer = _answer(status, retry_header, charset, content)
    outcome = ""
    if answer.reply is not None:
        outcome = " ok" if answer.reply["ok"] else f" ok: false ({answer.reply.get('error')})"
    log(f"-> {status}{outcome} in {ms_since(started)} ms")
    return answer


def _answer(status: int, retry_after: str | None, charset: str | None, content: bytes) -> Answer:
    text = text_of(content, charset)
    reply = json_or_none(text)  # not JSON: not a Slack reply
    if not (isinstance(reply, dict) and isinstance(reply.get("ok"), bool)):
        reply = None
    return Answer(status, retry_after, text, reply)
