"""A PostMessage request validated (every bad parameter reported at once) into the call to send:
the chat.postMessage URL, the bearer token header and the JSON payload."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from spiff.connector.slack.v1 import slack_pb2
from spiff.connector.v1 import types_pb2
from yarl import URL

from server import errors, json_values

__all__ = ["API_METHOD", "Outgoing", "method_url", "prepare"]

API_METHOD = "chat.postMessage"
_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: anything else breaks the header
_BEARER = re.compile(r"\Abearer\s+", re.IGNORECASE)


@dataclass(frozen=True)
class Outgoing:
    """A validated call, ready to send (possibly twice)."""

    url: URL
    headers: dict[str, str]
    payload: bytes
    about: str  # what the log lines say the call is: no token, no text

    @property
    def target(self) -> str:
        return f"POST {self.url}"


def method_url(text: str) -> URL | None:
    """``<base>/chat.postMessage`` for an absolute http(s) base URL without credentials."""
    try:
        url = URL(text.strip())
    except (TypeError, ValueError):
        return None
    if url.scheme not in ("http", "https") or not url.host or url.user or url.password:
        return None
    path = url.path if url.path.endswith("/") else url.path + "/"
    return url.with_path(path + API_METHOD).with_query(None).with_fragment(None)


def prepare(request: slack_pb2.PostMessageRequest, url: URL) -> Outgoing:
    """Validates the parameters, reporting every bad one at once.

    Args:
        url: the configured chat.postMessage URL, used unless the request gives an ``api_url``.
    """
    bad: list[errors.Violation] = []
    token = _BEARER.sub("", request.token.strip(), count=1)
    if not _TOKEN.fullmatch(token):
        bad.append(errors.Violation("token", "must be a Slack token: printable ASCII without spaces"))
    if request.api_url.strip():
        given = method_url(request.api_url)
        if given is None:
            bad.append(
                errors.Violation("api_url", "must be an absolute http:// or https:// URL without credentials")
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
    return Outgoing(
        url=url,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json; charset=utf-8"},
        payload=json_values.dumps(payload).encode(),
        about=about,
    )


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
