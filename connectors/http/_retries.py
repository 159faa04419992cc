"""Sending a request until it has an answer: retries on 5xx and connection errors with exponential
backoff, within the timeout and the call's deadline, and transport failures as command errors."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from connectors._sessions import SessionPool, failure_reason
from connectors._timing import ms_since, time_budget
from server import errors, log
from server.egress import EgressDenied

from ._answer import Answer, send_once
from ._outgoing import Outgoing

__all__ = ["exchange"]

MAX_BACKOFF = 2.0
DEADLINE_MARGIN = 0.1


async def exchange(sessions: SessionPool, outgoing: Outgoing, context: Any, backoff: float) -> Answer:
    """Sends the request, retrying on 5xx and connection errors while attempts and time remain.

    Args:
        backoff: seconds before the second attempt; each later one waits twice as long.
    """
    loop = asyncio.get_running_loop()
    budget = time_budget(outgoing.timeout, context, DEADLINE_MARGIN)
    deadline = loop.time() + budget
    session = sessions.get()
    attempt = 1
    while True:
        suffix = f" (attempt {attempt} of {outgoing.attempts})" if outgoing.attempts > 1 else ""
        log(f"{outgoing.target}{suffix}")
        started = time.perf_counter()
        try:
            answer = await send_once(session, outgoing, deadline - loop.time())
        except EgressDenied:
            log(f"-> refused by the egress policy after {ms_since(started)} ms")
            raise
        except TimeoutError:
            log(f"-> no answer after {ms_since(started)} ms")
            message_text = f"{outgoing.target} did not answer within {max(budget, 0):.3g} s"
            raise errors.DeadlineExceeded(message_text, error_code="UpstreamTimeout") from None
        except aiohttp.TooManyRedirects:
            log(f"-> too many redirects after {ms_since(started)} ms")
            message_text = f"{outgoing.target} redirected more than 10 times"
            raise errors.FailedPrecondition(message_text, error_code="TooManyRedirects") from None
        except aiohttp.RedirectClientError:
            log(f"-> a redirect to an invalid location after {ms_since(started)} ms")
            message_text = f"{outgoing.target} redirected to something that is not an http(s) URL"
            raise errors.FailedPrecondition(message_text, error_code="InvalidRedirect") from None
        except aiohttp.ClientError as exc:
            reason = failure_reason(exc)
            log(f"-> {reason} after {ms_since(started)} ms")
            if not await _pause(attempt, outgoing.attempts, deadline, backoff):
                message_text = f"{outgoing.target} failed: {reason}"
                raise errors.Unavailable(message_text, error_code="ConnectionError") from None
        else:
            log(f"-> {answer.status} in {ms_since(started)} ms")
            if answer.status < 500 or not await _pause(attempt, outgoing.attempts, deadline, backoff):
                return answer
        attempt += 1


async def _pause(attempt: int, attempts: int, deadline: float, backoff: float) -> bool:
    """Waits before the next attempt; False when there is none (last attempt, or no time left)."""
    if attempt >= attempts:
        return False
    delay = min(backoff * 2 ** (attempt - 1), MAX_BACKOFF)
    if asyncio.get_running_loop().time() + delay >= deadline:
        log("No time left for another attempt.")
        return False
    log(f"Retrying in {delay:g} s.")
    await asyncio.sleep(delay)
    return True
