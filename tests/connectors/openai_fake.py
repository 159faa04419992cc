"""A fake OpenAI-compatible chat completions server on 127.0.0.1 for the ai connector's tests: an
aiohttp.web app on its own event loop in a background thread, so synchronous tests (the BPMN
engine's) reach it as well as asynchronous ones.

``POST <prefix>/chat/completions`` (any prefix) behaves like OpenAI's API:

    no Authorization           401 invalid_request_error "You didn't provide an API key..."
    Bearer other than KEY      401 invalid_api_key, the message quoting the key as sent (as
                               OpenAI's quotes part of it)
    a model other than MODEL   404 model_not_found
    messages over CONTEXT_CHARS characters
                               400 context_length_exceeded
    tools, tool_choice not "none"
                               one call of the first tool, arguments {"query": <last user text>},
                               finish_reason tool_calls, content null
    response_format json_schema / json_object
                               the content is JSON: a value of the schema (an enum's first value,
                               strings the last user text...), or {"answer": <text>}
    otherwise                  "You said: <last user text>", finish_reason stop
    max_tokens                 the content cut to 4 characters per token, finish_reason length

The model in answers is MODEL's dated version, as OpenAI names it. Canned answers (:meth:`queue`,
``tests.connectors.slack_fake.Canned``) are given to the next calls, in order, before that
behaviour: 429 with Retry-After, a 500, a slow answer... Every request is recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.connectors.slack_fake import Canned

__all__ = ["ANSWERED_MODEL", "CONTEXT_CHARS", "KEY", "MODEL", "Canned", "FakeOpenAI", "Recorded"]

KEY = "sk-proj-FakeK3y0123456789abcdefSECRET"
MODEL = "gpt-test"
ANSWERED_MODEL = "gpt-test-2024-08-06"
CONTEXT_CHARS = 2000


@dataclass(frozen=True)
class Recorded:
    """One request as the fake saw it."""

    path: str
    headers: dict[str, str]  # names in lower case
    payload: Any  # the JSON body


def _error(status: int, message: str, code: str | None, param: str | None = None) -> web.Response:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return web.json_response({"error": error}, status=status)


def _text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def _sample(schema: Any, text: str) -> Any:
    """A value of a JSON Schema, made from ``text``."""
    if not isinstance(schema, dict):
        return text
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {name: _sample(sub, text) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [_sample(schema.get("items"), text)]
    samples: dict[Any, Any] = {"integer": len(text), "number": 0.5, "boolean": True, "null": None}
    return samples.get(kind, text)


class FakeOpenAI:
    """Starts the fake on an OS-assigned port; use as a context manager."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._canned: deque[Canned] = deque()
        self._requests: list[Recorded] = []
        self._ids = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-openai", daemon=True)
        self.origin = ""
        self.base_url = ""  # the API base: <origin>/v1

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def queue(self, *answers: Canned) -> None:
        """Answers for the next calls, in order."""
        with self._lock:
            self._canned.extend(answers)

    def reset(self) -> None:
        with self._lock:
            self._canned.clear()
            self._requests.clear()

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.origin = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.origin}/v1"
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port: int = self._runner.addresses[0][1]
        return port

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        with self._lock:
            self._requests.append(
                Recorded(request.path, {k.lower(): v for k, v in request.headers.items()}, payload)
            )
            canned = self._canned.popleft() if self._canned else None
        if canned is not None:
            await asyncio.sleep(canned.delay)
            body = canned.body if isinstance(canned.body, str | bytes) else json.dumps(canned.body)
            return web.Response(
                status=canned.status,
                body=body,
                headers={"Content-Type": canned.content_type, **canned.headers},
            )
        if request.method != "POST" or not request.path.endswith("/chat/completions"):
            return _error(404, f"Unknown request URL: {request.method} {request.path}.", "unknown_url")
        return self._complete(request.headers.get("Authorization"), payload)

    def _complete(self, auth: str | None, payload: Any) -> web.Response:
        if auth is None:
            return _error(
                401, "You didn't provide an API key. You need to provide it in an Authorization header.", None
            )
        if auth != f"Bearer {KEY}":
            given = auth.removeprefix("Bearer ")
            return _error(
                401,
                f"Incorrect API key provided: {given}. Find your key in the dashboard.",
                "invalid_api_key",
            )
        if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
            return _error(400, "'messages' is a required property", None, "messages")
        if payload.get("model") != MODEL:
            message = f"The model `{payload.get('model')}` does not exist or you do not have access to it."
            return _error(404, message, "model_not_found")
        messages = payload["messages"]
        size = sum(len(_text(m)) for m in messages)
        if size > CONTEXT_CHARS:
            message = (
                f"This model's maximum context length is {CONTEXT_CHARS // 4} tokens. However, your messages "
                f"resulted in {size // 4} tokens. Please reduce the length of the messages."
            )
            return _error(400, message, "context_length_exceeded", "messages")
        last = next((_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
        message_out: dict[str, Any] = {"role": "assistant", "refusal": None}
        tools = payload.get("tools")
        response_format = payload.get("response_format") or {}
        if tools and payload.get("tool_choice") != "none":
            call = {"query": last}
            message_out["content"] = None
            message_out["tool_calls"] = [
                {
                    "id": f"call_{next(self._ids)}",
                    "type": "function",
                    "function": {"name": tools[0]["function"]["name"], "arguments": json.dumps(call)},
                }
            ]
            finish = "tool_calls"
        else:
            if response_format.get("type") == "json_schema":
                content = json.dumps(_sample(response_format["json_schema"].get("schema"), last))
            elif response_format.get("type") == "json_object":
                content = json.dumps({"answer": last})
            else:
                content = f"You said: {last}"
            finish = "stop"
            limit = payload.get("max_tokens")
            if isinstance(limit, int) and len(content) > 4 * limit:
                content, finish = content[: 4 * limit], "length"
            message_out["content"] = content
        prompt_tokens = size // 4 + 1
        completion_tokens = len(json.dumps(message_out)) // 4
        return web.json_response(
            {
                "id": f"chatcmpl-{next(self._ids)}",
                "object": "chat.completion",
                "created": 1754000000,
                "model": ANSWERED_MODEL,
                "choices": [{"index": 0, "message": message_out, "logprobs": None, "finish_reason": finish}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
                "system_fingerprint": "fp_fake",
            }
        )
