"""What the server's final answer means: the result (the first choice's message, the structured
output parsed), or the documented error of a failed or unusable answer."""

from __future__ import annotations

import math
import re
from typing import Any

from spiff.connector.ai.v1 import ai_pb2

from server import errors, json_values

from ._exchange import Answer
from ._outgoing import Outgoing

__all__ = ["result"]

_CONTEXT_LENGTH = re.compile(r"context[ _]length|context window", re.IGNORECASE)
_FENCE = re.compile(r"\A```[a-zA-Z]*\s*\n(.*)\n\s*```\Z", re.DOTALL)
_MAX_QUOTED = 500  # characters of a server's error message repeated in ours


def result(answer: Answer, outgoing: Outgoing) -> ai_pb2.LlmRequestResponse:
    """The result of a 2xx chat completion, or the error the answer is."""
    if not 200 <= answer.status < 300:
        raise _failure(answer, outgoing)
    message, choice = _first_choice(answer.reply)
    if message is None:
        kind = "JSON without choices" if answer.reply is not None else "not JSON"
        message_text = (
            f"{outgoing.target} answered HTTP {answer.status}, {kind}: not a chat completion; "
            "is api_base right?"
        )
        raise errors.FailedPrecondition(message_text, error_code="AiInvalidResponse")
    reply: dict[str, Any] = answer.reply
    response = ai_pb2.LlmRequestResponse(
        role=_text(message.get("role")) or "assistant",
        finish_reason=_text(choice.get("finish_reason")),
        model=_text(reply.get("model")) or outgoing.model,
        id=_text(reply.get("id")),
        message=json_values.dump(message),
    )
    content = _content(message.get("content"))
    if content is not None:
        response.content = content
    if message.get("tool_calls"):
        response.tool_calls.CopyFrom(json_values.dump(message["tool_calls"]))
    if isinstance(reply.get("usage"), dict):
        response.usage.CopyFrom(json_values.dump(reply["usage"]))
    if outgoing.structured:
        _parse_into(response, message, outgoing)
    return response


def _first_choice(reply: Any) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The first choice's message and the choice; (None, {}) when the reply has none."""
    choices = reply.get("choices") if isinstance(reply, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else None
    if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
        return choice["message"], choice
    return None, {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _content(value: Any) -> str | None:
    """The message's text: a string, or the text parts of a list of content parts joined."""
    if isinstance(value, list):
        parts = [part.get("text") for part in value if isinstance(part, dict)]
        return "".join(part for part in parts if isinstance(part, str))
    return value if isinstance(value, str) else None


def _parse_into(response: ai_pb2.LlmRequestResponse, message: dict[str, Any], outgoing: Outgoing) -> None:
    """Sets ``parsed`` from the content (a code fence around it is taken off), or raises
    AiInvalidStructuredOutput with the result so far. An answer of tool calls alone has none to parse."""
    if not response.HasField("content"):
        if response.HasField("tool_calls"):
            return
        refusal = message.get("refusal")
        problem = f"the model refused: {refusal}" if isinstance(refusal, str) else "the answer has no content"
    else:
        text = response.content.strip()
        fenced = _FENCE.fullmatch(text)
        try:
            response.parsed.CopyFrom(json_values.dump(json_values.loads(fenced.group(1) if fenced else text)))
            return
        except (ValueError, RecursionError):
            problem = "the content is not JSON"
        if response.finish_reason == "length":
            problem += " (cut short at max_tokens: finish_reason length)"
    message_text = f"No structured output from {outgoing.model}: {problem.removesuffix('.')}."
    raise errors.FailedPrecondition(message_text, error_code="AiInvalidStructuredOutput", result=response)


def _failure(answer: Answer, outgoing: Outgoing) -> errors.CommandError:
    """The documented error of an answer other than 2xx (after the retries)."""
    status, error = answer.status, answer.error
    said = _said(error, outgoing.key)
    if status in (401, 403):  # the server's words may quote the key (OpenAI's do, in part)
        code = error.get("code") or error.get("type")
        named = f", {code}" if isinstance(code, str) and code.isidentifier() else ""
        key = "the API key" if outgoing.key else "a call without an API key"
        message_text = f"{outgoing.target} refused {key} (HTTP {status}{named})."
        error_class = errors.Unauthenticated if status == 401 else errors.PermissionDenied
        return error_class(message_text, error_code="AiAuthenticationFailed")
    message_text = f"{outgoing.target} answered HTTP {status}{said}"
    if status == 429 and answer.quota_exhausted:
        return errors.ResourceExhausted(message_text, error_code="AiQuotaExceeded")
    if status == 429:
        wait = answer.retry_after
        after = f"retry after {math.ceil(wait)} s" if wait is not None else "no Retry-After given"
        return errors.ResourceExhausted(
            f"{message_text} ({after})", error_code="AiRateLimited", retry_after=wait
        )
    if status >= 500:
        return errors.Unavailable(
            message_text, error_code="AiUpstreamUnavailable", retry_after=answer.retry_after
        )
    if status == 404:
        return errors.NotFound(message_text, error_code="AiModelNotFound")
    if status < 400:
        message_text += " (a redirect, not followed); is api_base right?"
        return errors.FailedPrecondition(message_text, error_code="AiInvalidResponse")
    if error.get("code") == "context_length_exceeded" or _CONTEXT_LENGTH.search(said):
        return errors.InvalidArgument(message_text, error_code="AiContextLengthExceeded")
    return errors.InvalidArgument(message_text, error_code="AiInvalidRequest")


def _said(error: dict[str, Any], key: str) -> str:
    """``: <message> (code x, param y)`` from OpenAI's error object, without the key; "" if none."""
    text = error.get("message")
    said = f": {text[:_MAX_QUOTED]}" if isinstance(text, str) and text.strip() else ""
    details = [f"{name} {error[name]}" for name in ("code", "param") if isinstance(error.get(name), str)]
    said += f" ({', '.join(details)})" if details else ""
    return said.replace(key, "***") if key else said
