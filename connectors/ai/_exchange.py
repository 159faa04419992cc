"""Sending the call until it has a final answer: retries on 429, 5xx and connection errors with
exponential backoff (or the server's Retry-After), within the timeout and the call's deadline, and
transport failures as command errors."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from connectors._answers import json_or_none, text_of
from connectors._retry_after import retry_after
from connectors._sessions import SessionPool, failure_reason
from connectors._timing import ms_since, time_budget
from server import errors, log
from server.egress import EgressDenied

from ._outgoing import Outgoing

__all__ = ["Answer", "exchange"]

DEADLINE_MARGIN = 0.1
MAX_BACKOFF = 8.0
RETRY_ROOM = 0.1  # seconds an attempt needs at least, after the wait before it


@dataclass(frozen=True)
class Answer:
    """The server's answer: status, the wait it asked for, its text and its JSON (None if not JSON)."""

    status: int
    retry_after: float | None
    text: str
    reply: Any

    @property
    def error(self) -> dict[str, Any]:
        """OpenAI's ``{"error": {"message", "type", "param", "code"}}``, as far as the server gave it."""
        reply = self.reply if isinstance(self.reply, dict) else {}
        found = reply.get("error")
        if isinstance(found, dict):
            return found
        if isinstance(found, str):  # Ollama's {"error": "<text>"}
            return {"message": found}
        if isinstance(reply.get("message"), str):  # older vLLM's {"object": "error", "message", ...}
            return reply
        detail = reply.get("detail")  # FastAPI's {"detail": "<text>"}
        return {"message": detail} if isinstance(detail, str) else {}

    @property
    def quota_exhausted(self) -> bool:
        return self.status == 429 and self.error.get("code") == "insufficient_quota"

    @property
    def retryable(self) -> bool:
        return self.status >= 500 or (self.status == 429 and not self.quota_exhausted)


async def exchange(sessions: SessionPool, outgoing: Outgoing, context: Any, backoff: float) -> Answer:
    """Posts the call, again after a retryable answer or failure while attempts and time remain.

    Returns the final answer, which may be a failure the caller turns into an error (a 429 or 5xx
    after the last attempt included).

    Args:
        backoff: seconds before the second attempt when the server gives no Retry-After; each
            later one waits twice as long (at most ``MAX_BACKOFF``), less up to a quarter (jitter).
    """
    loop = asyncio.get_running_loop()
    budget = time_budget(outgoing.timeout, context, DEADLINE_MARGIN)
    deadline = loop.time() + budget
    session = sessions.get()
    attempt = 1
    while True:
        suffix = f", attempt {attempt} of {outgoing.attempts}" if attempt > 1 else ""
        log(f"{outgoing.target} ({outgoing.about}{suffix})")
        started = time.perf_counter()
        failure: errors.CommandError | None = None
        try:
            answer = await _post(session, outgoing, deadline - loop.time())
        except EgressDenied:
            log(f"-> refused by the egress policy after {ms_since(started)} ms")
            raise
        except TimeoutError:
            log(f"-> no answer after {ms_since(started)} ms")
            message_text = f"{outgoing.target} did not answer within {round(max(budget, 0), 1):g} s"
            raise errors.DeadlineExceeded(message_text, error_code="AiTimeout") from None
        except aiohttp.ClientError as exc:
            reason = failure_reason(exc)
            log(f"-> {reason} after {ms_since(started)} ms")
            message_text = f"{outgoing.target} failed: {reason}"
            failure = errors.Unavailable(message_text, error_code="AiUpstreamUnavailable")
            wait = None
        else:
            log(f"-> {answer.status}{_outcome(answer)} in {ms_since(started)} ms")
            if not answer.retryable:
                return answer
            wait = answer.retry_after
        if not await _pause(attempt, outgoing.attempts, deadline, backoff, wait):
            if failure is not None:
                raise failure
            return answer
        attempt += 1


async def _post(session: aiohttp.ClientSession, outgoing: Outgoing, remaining: float) -> Answer:
    if remaining <= 0:  # aiohttp reads a total of 0 as "no timeout"
        raise TimeoutError
    async with session.post(
        outgoing.url,
        data=outgoing.payload,
        headers=outgoing.headers,
        allow_redirects=False,  # a redirect would replay the call, and the key, elsewhere
        # No rounding up to a whole second (aiohttp's default from 5 s): the deadline is exact.
        timeout=aiohttp.ClientTimeout(total=remaining, ceil_threshold=math.inf),
    ) as response:
        content = await response.read()
        text = text_of(content, response.charset)
        return Answer(response.status, _wait(response.headers), text, json_or_none(text))


def _wait(headers: CIMultiDictProxy[str]) -> float | None:
    """The wait a server asks for: OpenAI's retry-after-ms (milliseconds), else Retry-After."""
    with contextlib.suppress(ValueError):
        milliseconds = float(headers.get("retry-after-ms", "nan"))
        if math.isfinite(milliseconds):
            return max(milliseconds / 1000, 0.0)
    return retry_after(headers.get("Retry-After"))


def _outcome(answer: Answer) -> str:
    """What the status line adds: the finish reason and tokens of a completion, an error's code."""
    if answer.status < 300 and isinstance(answer.reply, dict):
        choices = answer.reply.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        usage = answer.reply.get("usage")
        tokens = usage.get("total_tokens") if isinstance(usage, dict) else None
        parts = [f"finish_reason {choice.get('finish_reason')}"] if choice.get("finish_reason") else []
        parts += [f"{tokens} tokens"] if isinstance(tokens, int) else []
        return f" ({', '.join(parts)})" if parts else ""
    code = answer.error.get("code") or answer.error.get("type")
    return f" ({code})" if isinstance(code, str) and code.isidentifier() else ""


async def _pause(attempt: int, attempts: int, deadline: float, backoff: float, wait: float | None) -> bool:
    """Waits before the next attempt; False when there is none (last attempt, or no time left)."""
    if attempt >= attempts:
        return False
    if wait is None:
        wait = min(backoff * 2 ** (attempt - 1), MAX_BACKOFF) * (1 - random.random() / 4)  # noqa: S311
        said = ""
    else:
        said = " as the server asked"
    if asyncio.get_running_loop().time() + wait + RETRY_ROOM >= deadline:
        log("No time left for another attempt.")
        return False
    log(f"Retrying in {round(wait, 2):g} s{said}.")
    await asyncio.sleep(wait)
    return True
