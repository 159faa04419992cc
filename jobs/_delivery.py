"""Delivering a job's envelope to spiff-arena: ``PUT spiff__callback_url`` (spec §4.3 to §4.5).

One attempt is :meth:`CallbackDelivery.send`; the caller loops over attempts with
:meth:`CallbackDelivery.backoff` between them. The rules, from what spiff-arena answers:

* 2xx: delivered (``completed``, or ``retry_scheduled``: spiff will POST /v1/do again).
* 400: spiff-arena took the callback and refused it for good: ``not_waiting_for_callback``
  (already consumed, e.g. our earlier attempt whose answer was lost), ``callback_not_found``,
  ``unexpected_workflow_exception`` (our error callback failed the instance, as it should)...
  Delivered, with the answer kept in ``last_error``. Except ``invalid_callback_body`` and
  ``invalid_mimetype``, which mean this proxy sent something wrong: failed.
* 401/403: the configured credential is missing or wrong; it will not get better by retrying
  (it is read at start-up): failed.
* 408, 425, 429, 5xx (spiff's instance lock, a restart), network errors, timeouts: retried.
  (A dropped connection is re-sent once at once by aiohttp itself, as RFC 9112 allows for a
  PUT; that is part of the same attempt.)
* Anything else (3xx, 404, 405...): the URL is wrong (check ``CONNECTOR_PROXY_CALLBACK_BASE_URL``):
  failed. Redirects are never followed: they would carry the credential elsewhere.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from opentelemetry import trace

from jobs._metrics import CALLBACK_ATTEMPTS, CALLBACK_SECONDS
from server import correlation

__all__ = ["CallbackDelivery", "Outcome", "OutcomeKind"]

logger = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)  # a no-op unless connector_proxy turned tracing on

# spiff-arena's callback route: <backend>/v1.0/tasks/<process instance id>/<task guid>/callback.
_API_ROOT = "/v1.0/"
_SPIFF_CALLBACK_PATH = re.compile(r"/v1\.0/tasks/[^/]+/[^/]+/callback\Z")
_RETRIED_STATUSES = frozenset({408, 425, 429})
_OUR_MISTAKES = frozenset({"invalid_callback_body", "invalid_mimetype"})
_DETAIL_CHARS = 300
_MAX_ANSWER_BYTES = 64 * 1024


class OutcomeKind(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    """One attempt's result; ``detail`` (never a credential) goes to the job's ``last_error``."""

    kind: OutcomeKind
    detail: str | None = None


class CallbackDelivery:
    """PUTs envelopes to callback URLs with the configured credential, one aiohttp session.

    Args:
        base_url: when set, replaces the callback URL's scheme, host, port and any path before
            ``/v1.0/`` (see :meth:`target`). Required with a credential: the credential is sent
            nowhere else.
        api_key: sent as ``SpiffWorkflow-Api-Key`` (a spiff-arena service account's key).
        bearer_token: sent as ``Authorization: Bearer <token>`` (instead of an API key).
        auth_identifier: sent as ``SpiffWorkflow-Authentication-Identifier`` (the identity
            provider of a bearer token, when it is not spiff-arena's default one).
        attempts: attempts per job before it is failed (counted across restarts).
        backoff_base: the first retry waits up to this many seconds...
        backoff_cap: ...doubling each time, up to this (full jitter: a uniform draw below).
        timeout: seconds one attempt may take, connection to answer.
    """

    def __init__(
        self,
        *,
        base_url: str = "",
        api_key: str | None = None,
        bearer_token: str | None = None,
        auth_identifier: str | None = None,
        attempts: int = 10,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        timeout: float = 30.0,
    ) -> None:
        if api_key is not None and bearer_token is not None:
            msg = "give an API key or a bearer token, not both"
            raise ValueError(msg)
        self.credential = api_key is not None or bearer_token is not None
        if self.credential and not base_url:
            msg = "a callback credential needs a base URL: it is sent to no other host"
            raise ValueError(msg)
        if attempts < 1:
            msg = "attempts must be at least 1"
            raise ValueError(msg)
        self.base_url = base_url.rstrip("/")
        self.attempts = attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.timeout = timeout
        self._headers = {"Content-Type": "application/json"}
        if api_key is not None:
            self._headers["SpiffWorkflow-Api-Key"] = api_key
        if bearer_token is not None:
            self._headers["Authorization"] = f"Bearer {bearer_token}"
        if auth_identifier:
            self._headers["SpiffWorkflow-Authentication-Identifier"] = auth_identifier
        self._session: aiohttp.ClientSession | None = None
        # Jitter spreads retries of many jobs apart; it needs no cryptographic randomness.
        self._random = random.Random()  # noqa: S311

    def __repr__(self) -> str:
        return f"CallbackDelivery(base_url={self.base_url!r}, credential={self.credential})"

    async def start(self) -> None:
        """Opens the session (inside the running loop, which aiohttp objects belong to)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout), trust_env=False
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def problem(self, url: str) -> str | None:
        """Why ``url`` cannot be a callback URL (checked when the job is accepted), or None."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "spiff__callback_url must be an absolute http(s) URL."
        if self.credential and not _SPIFF_CALLBACK_PATH.search(parts.path):
            return (
                "spiff__callback_url must be a spiff-arena task callback "
                "(.../v1.0/tasks/<instance>/<task>/callback): this proxy sends its callback credential "
                "nowhere else."
            )
        return None

    def target(self, url: str) -> str:
        """Where the callback for ``url`` goes.

        Without a base URL: ``url`` itself. With one: the base URL, then the callback URL's path
        from ``/v1.0/`` on (or its whole path when it has no ``/v1.0/``), then its query. So
        ``http://localhost:7000/v1.0/tasks/42/<guid>/callback`` with the base URL
        ``http://backend:7000`` goes to ``http://backend:7000/v1.0/tasks/42/<guid>/callback``, and
        with ``https://proxy.example/spiff`` to ``https://proxy.example/spiff/v1.0/tasks/...``.
        """
        if not self.base_url:
            return url
        parts = urlsplit(url)
        base = urlsplit(self.base_url)
        start = parts.path.find(_API_ROOT)
        tail = parts.path[start:] if start >= 0 else parts.path
        return urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + tail, parts.query, ""))

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based): exponential with
        full jitter, uniform in [0, min(cap, base * 2**(attempt-1))]."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** min(attempt - 1, 60))
        return self._random.uniform(0, ceiling)

    async def send(self, url: str, body: bytes) -> Outcome:
        """One ``PUT`` of ``body`` to the target of ``url``, classified (see the module doc)."""
        started = time.perf_counter()
        outcome = await self._send(url, body)
        CALLBACK_SECONDS.observe(time.perf_counter() - started)
        CALLBACK_ATTEMPTS.labels(outcome.kind.value).inc()
        return outcome

    async def _send(self, url: str, body: bytes) -> Outcome:
        if self._session is None:
            msg = "CallbackDelivery.start() was not called"
            raise RuntimeError(msg)
        target = self.target(url)
        headers = self._headers
        request_id = correlation.request_id()  # the call the job came from
        if request_id is not None:
            headers = {**headers, correlation.REQUEST_ID_HEADER: request_id}
        try:
            async with self._session.put(
                target, data=body, headers=headers, allow_redirects=False
            ) as response:
                # The answer is read for its error_code only; a huge page is cut.
                text = (await response.content.read(_MAX_ANSWER_BYTES)).decode(errors="replace")
                status = response.status
                location = response.headers.get("Location", "")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = str(exc) or "no detail"
            return Outcome(OutcomeKind.RETRY, f"PUT {target} failed: {type(exc).__name__}: {reason}")
        answer = _answer(status, text)
        if 200 <= status < 300:
            return Outcome(OutcomeKind.DELIVERED, None)
        if status == 400:
            code = _error_code(text)
            if code in _OUR_MISTAKES:
                return Outcome(OutcomeKind.FAILED, f"spiff-arena refused the callback body: {answer}")
            return Outcome(OutcomeKind.DELIVERED, f"spiff-arena answered {answer}")
        if status in (401, 403):
            return Outcome(
                OutcomeKind.FAILED,
                f"spiff-arena refused the callback credential: {answer}. Check "
                "CONNECTOR_PROXY_CALLBACK_API_KEY or CONNECTOR_PROXY_CALLBACK_BEARER_TOKEN and the "
                "account's permission on /tasks/*.",
            )
        if status >= 500 or status in _RETRIED_STATUSES:
            return Outcome(OutcomeKind.RETRY, f"PUT {target} answered {answer}")
        where = f" to {location}" if 300 <= status < 400 and location else ""
        return Outcome(
            OutcomeKind.FAILED,
            f"PUT {target} answered {answer}{where}; check CONNECTOR_PROXY_CALLBACK_BASE_URL.",
        )

    async def _attempt(self, url: str, body: bytes, attempt: int) -> Outcome:
        """:meth:`send` in a span of its own, ``job callback``, with its number and outcome (never the
        URL, the credential or the body); the PUT's own span and ``traceparent`` come from aiohttp's
        instrumentation when tracing is on."""
        with _tracer.start_as_current_span(
            "job callback",
            attributes={"spiff.callback.attempt": attempt},
            record_exception=False,  # nor a status from one: an exception's text may quote the URL
            set_status_on_exception=False,
        ) as span:
            outcome = await self.send(url, body)
            span.set_attribute("spiff.callback.outcome", outcome.kind.value)
            if outcome.kind is not OutcomeKind.DELIVERED:
                span.set_status(trace.Status(trace.StatusCode.ERROR, outcome.kind.value))
        return outcome

    async def deliver(
        self,
        url: str,
        body: bytes,
        *,
        done: int = 0,
        on_retry: Callable[[int, Outcome], Awaitable[None]] | None = None,
    ) -> tuple[Outcome, int]:
        """Attempts until delivered, failed for good, or out of attempts. ``done`` attempts were
        already made (before a restart); ``on_retry(attempt, outcome)`` runs after each attempt
        that will be retried (to record it). Returns the final outcome and the attempts in all.

        A plain loop rather than a retry library: the rules above decide per answer, the count
        persists across restarts, and none of the project's dependencies offers this.
        """
        attempt = done
        while True:
            attempt += 1
            outcome = await self._attempt(url, body, attempt)
            if outcome.kind is not OutcomeKind.RETRY:
                return outcome, attempt
            if attempt >= self.attempts:
                detail = f"gave up after {attempt} attempts; the last: {outcome.detail}"
                return Outcome(OutcomeKind.FAILED, detail), attempt
            if on_retry is not None:
                await on_retry(attempt, outcome)
            delay = self.backoff(attempt)
            logger.info("callback attempt %d failed (%s); retrying in %.2f s", attempt, outcome.detail, delay)
            await asyncio.sleep(delay)


def _error_code(text: str) -> str | None:
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    code = parsed.get("error_code") if isinstance(parsed, dict) else None
    return code if isinstance(code, str) else None


def _answer(status: int, text: str) -> str:
    """``400 not_waiting_for_callback: This process instance is not waiting...``, shortened."""
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error_code"), str):
        message = parsed.get("message") or parsed.get("detail") or ""
        detail = f"{parsed['error_code']}: {message}" if message else parsed["error_code"]
    else:
        detail = " ".join(text.split())
    detail = detail[:_DETAIL_CHARS] + ("..." if len(detail) > _DETAIL_CHARS else "")
    return f"{status} {detail}".rstrip()
