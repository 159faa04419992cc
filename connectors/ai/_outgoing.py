"""An LlmRequest validated (every bad parameter reported at once) into the call to send: the
chat completions URL, the bearer key (and whose it is), the JSON payload, attempts and timeout."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from spiff.connector.ai.v1 import ai_pb2
from yarl import URL

from connectors._egress import is_host_name
from server import errors, json_values, log

__all__ = ["DEFAULT_API_BASE", "DEFAULT_TIMEOUT", "KEY", "Outgoing", "base_url", "prepare"]

DEFAULT_API_BASE = "https://api.openai.com/v1"
DEFAULT_TIMEOUT = 120.0
DEFAULT_MAX_RETRIES = 2
MAX_TEMPERATURE = 2.0
ENDPOINT = "chat/completions"
KEY = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: anything else breaks the header
_BEARER = re.compile(r"\Abearer\s+", re.IGNORECASE)
_BASE_PROBLEM = (
    "must be an absolute http:// or https:// URL with a valid host name, "
    "without credentials, query or fragment"
)
_TOOL_CHOICES = ("auto", "none", "required")
_FORMAT_TYPES = ("json_schema", "json_object", "text")


@dataclass(frozen=True)
class Outgoing:
    """A validated call, ready to send (possibly several times)."""

    url: URL
    headers: dict[str, str]
    payload: bytes
    model: str
    key: str  # the key sent, "" for none: scrubbed from anything the server's answers put in messages
    structured: bool  # the content is JSON to parse into ``parsed``
    attempts: int
    timeout: float
    about: str  # what the log lines say the call is: model and counts, never content or key

    @property
    def target(self) -> str:
        return f"POST {self.url}"


def base_url(text: str) -> URL | None:
    """``<base>/chat/completions`` for an absolute http(s) base URL without credentials, query or
    fragment; None for anything else."""
    try:
        url = URL(text.strip())
    except (TypeError, ValueError):
        return None
    if url.scheme not in ("http", "https") or not url.host or url.user or url.password:
        return None
    if not is_host_name(url.raw_host or ""):  # an empty or over-long label, say
        return None
    if url.query_string or url.fragment:
        return None
    return url.with_path(url.path.rstrip("/") + "/" + ENDPOINT)


def prepare(request: ai_pb2.LlmRequestRequest, configured: URL, configured_key: str) -> Outgoing:
    """Validates the parameters, reporting every bad one at once.

    Args:
        configured: the chat completions URL of the configured API base, used unless the call
            names an ``api_base``.
        configured_key: the configured key, sent when the call gives none and goes to ``configured``.
    """
    bad: list[errors.Violation] = []
    url = configured
    if request.api_base.strip():
        given = base_url(request.api_base)
        if given is None:
            bad.append(errors.Violation("api_base", _BASE_PROBLEM))
        else:
            url = given
    key = _BEARER.sub("", request.api_key.strip(), count=1)
    if key and not KEY.fullmatch(key):
        bad.append(errors.Violation("api_key", "must be printable ASCII without spaces"))
    messages = _messages(json_values.load_parameter(request.messages, "messages", bad), bad)
    payload: dict[str, Any] = _extra_body(
        json_values.load_parameter(request.extra_body, "extra_body", bad), bad
    )
    tools = json_values.load_parameter(request.tools, "tools", bad)
    if not _list_of_objects(tools):
        bad.append(errors.Violation("tools", "must be a list of tool objects"))
    tool_choice = json_values.load_parameter(request.tool_choice, "tool_choice", bad)
    if tool_choice is not None and not isinstance(tool_choice, str | dict):
        bad.append(errors.Violation("tool_choice", f"must be one of {', '.join(_TOOL_CHOICES)} or an object"))
    response_format = _response_format(
        json_values.load_parameter(request.response_format, "response_format", bad), bad
    )
    # The schema states the minimum; a number field cannot declare a maximum (its text form "1.5"
    # is matched by a pattern, which tells only the sign), so the connector checks it.
    if request.HasField("temperature") and not request.temperature <= MAX_TEMPERATURE:
        bad.append(errors.Violation("temperature", f"must be at most {MAX_TEMPERATURE:g}"))
    timeout = request.timeout if request.HasField("timeout") else DEFAULT_TIMEOUT
    if not (math.isfinite(timeout) and timeout > 0):
        bad.append(errors.Violation("timeout", "must be a number of seconds greater than 0"))
    if bad:
        problems = "; ".join(f"{v.field} {v.description}" for v in bad)
        message_text = f"Invalid parameters: {problems}."
        raise errors.InvalidParameters(message_text, violations=bad)
    if not key and url == configured:
        key = configured_key
    elif not key and configured_key:
        log("No API key sent: the configured key goes only to the configured API base.")
    payload |= {"model": request.model, "messages": messages}
    about = [f"model {request.model}", _count(len(messages), "message")]
    if tools:  # an empty list is left out: OpenAI refuses tools: []
        payload["tools"] = tools
        about.append(_count(len(tools), "tool"))
    if tool_choice is not None:
        payload["tool_choice"] = tool_choice
    if response_format is not None:
        payload["response_format"] = response_format
        about.append(f"response_format {response_format['type']}")
    if request.HasField("temperature"):
        payload["temperature"] = request.temperature
    if request.HasField("max_tokens"):
        payload["max_tokens"] = request.max_tokens
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    retries = request.max_retries if request.HasField("max_retries") else DEFAULT_MAX_RETRIES
    return Outgoing(
        url=url,
        headers=headers,
        payload=json_values.dumps(payload).encode(),
        model=request.model,
        key=key,
        structured=response_format is not None and response_format["type"] != "text",
        attempts=1 + retries,
        timeout=timeout,
        about=", ".join(about),
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _list_of_objects(value: Any) -> bool:
    return value is None or (isinstance(value, list) and all(isinstance(item, dict) for item in value))


def _messages(value: Any, bad: list[errors.Violation]) -> list[Any]:
    """The conversation; text is one user message."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        bad.append(errors.Violation("messages", "must be a non-empty list of messages (or a text)"))
        return []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("role"), str) or not item["role"]:
            bad.append(errors.Violation(f"messages[{index}]", "must be an object with a role"))
    return value


def _extra_body(value: Any, bad: list[errors.Violation]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        bad.append(errors.Violation("extra_body", "must be an object of request fields"))
        return {}
    if value.get("stream") not in (None, False):
        bad.append(errors.Violation("extra_body", "must not ask for stream: answers are not streamed"))
    return value


def _response_format(value: Any, bad: list[errors.Violation]) -> dict[str, Any] | None:
    """OpenAI's response_format from any of the accepted forms (see the proto)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        bad.append(errors.Violation("response_format", "must be a JSON Schema or a response_format object"))
        return None
    kind = value.get("type")
    if kind in _FORMAT_TYPES:
        if kind == "json_schema" and not isinstance(value.get("json_schema"), dict):
            bad.append(
                errors.Violation("response_format", "of type json_schema must have a json_schema object")
            )
        return value
    if isinstance(value.get("schema"), dict):  # {"name", "schema", "strict"}
        return {"type": "json_schema", "json_schema": {"name": "response", **value}}
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": value}}
